"""The beat backend registry: cheap names, plug-ins through entry points, one-line errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from beatbus.errors import ConfigError
from beatbus.processors.beat import BeatProcessor
from beatbus.processors.beat.backends import DEFAULT, Activation, create, names


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (import state and registry of its own); its stdout."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_names_lists_built_ins_then_the_hls_plug_in_without_importing_any_model() -> None:
    out = run_python("""
        import sys
        from beatbus.processors.beat.backends import names
        print(names(), [m for m in ("torch", "tensorflow", "beatbus.hls.backend") if m in sys.modules])
    """)
    assert out == "('dsp', 'beatnet', 'small', 'hls') []"


def test_the_default_is_the_daemons_setting() -> None:
    from beatbus.config import Settings

    assert DEFAULT == Settings().backend and DEFAULT in names()


def test_unknown_backend_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown beat backend 'nope' \(known: dsp, beatnet, small, hls\)"):
        create("nope")
    with pytest.raises(ConfigError, match="unknown beat backend"):
        BeatProcessor(backend="nope")


def test_a_backend_provides_its_name_device_and_tracker_settings() -> None:
    act = create("dsp", sr=16000)
    assert isinstance(act, Activation) and (act.name, act.device) == ("dsp", "cpu")
    proc = BeatProcessor(backend="dsp", sr=16000, time_offset=0.0)
    assert proc.tracker.time_offset == 0.0 and act.tracker_settings["time_offset"] != 0.0  # explicit wins


def test_missing_extra_is_a_one_line_dependency_error() -> None:
    out = run_python("""
        import sys
        sys.modules["torch"] = None  # as if the ml extra were not installed
        sys.modules["hls4ml"] = None
        from beatbus.errors import DependencyError
        from beatbus.processors.beat.backends import create
        for name in ("beatnet", "small", "hls"):
            try:
                create(name)
            except DependencyError as exc:
                print(name, str(exc).count(chr(10)), "pip install" in str(exc))
    """)
    assert out.splitlines() == ["beatnet 0 True", "small 0 True", "hls 0 True"]


def test_registered_backend_runs_in_the_processor_and_names_are_unique() -> None:
    out = run_python("""
        import numpy as np
        from beatbus.errors import ConfigError
        from beatbus.processors.beat import BeatProcessor
        from beatbus.processors.beat.backends import create, names, register
        from beatbus.processors.beat.dsp import DspActivation

        class Loud(DspActivation):
            name = "loud"

        register("loud", lambda *, sr, device, model, onset_weight: Loud(sr=sr))
        proc = BeatProcessor(backend="loud")
        proc.process(np.zeros(441, np.float32))
        try:
            register("dsp", lambda **kw: create("loud"))
        except ConfigError as exc:
            print(exc)
        print(names(), proc.backend)
    """)
    assert out.splitlines() == ["beat backend 'dsp' is registered twice",
                                "('dsp', 'beatnet', 'small', 'loud', 'hls') loud"]
