"""The ``hls`` backend: the compiled C simulation of the shipped QKeras model tracks a click track
and a real song."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hls4ml")
pytest.importorskip("qkeras")
pytest.importorskip("torch")

from beatbus.errors import DependencyError  # noqa: E402
from beatbus.hls.backend import HlsActivation  # noqa: E402
from beatbus.hls.model import DEFAULT_WEIGHTS  # noqa: E402
from beatbus.processors.beat.processor import BeatProcessor  # noqa: E402
from beatbus.producers import ClickSource  # noqa: E402

from support.hls import BEATS, shipped_project  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return shipped_project(tmp_path_factory)


@pytest.fixture
def hls_env(project, monkeypatch):
    """``BeatProcessor(backend="hls")`` (which takes no project option) runs the session's project."""
    monkeypatch.setenv("BEATBUS_HLS_PROJECT", str(project))
    return project


def test_shipped_qkeras_weights_exist() -> None:
    for suffix in (".json", ".weights.h5"):
        assert DEFAULT_WEIGHTS.with_name(DEFAULT_WEIGHTS.name + suffix).is_file()


def test_hls_backend_tracks_a_click_track(hls_env) -> None:
    proc = BeatProcessor(backend="hls")
    beats = []
    for chunk in ClickSource(120, realtime=False, duration=16.0, meter=4):
        beats.extend(proc.process(chunk.samples))
    beats.extend(proc.flush())
    late = np.array([b.time for b in beats if b.time > 6.0])
    assert len(late) >= 15
    assert np.median([b.bpm for b in beats if b.time > 6.0]) == pytest.approx(120, abs=2)
    err = np.abs(late / 0.5 - np.round(late / 0.5)) * 0.5
    assert np.percentile(err, 90) < 0.04


def test_hls_backend_scores_on_a_real_song(hls_env) -> None:
    pytest.importorskip("mir_eval")
    from beatbus.lab.eval.beats import evaluate_file

    # onset_weight=0: the kernel's own activations; with the spectral flux mixed in (the default) a
    # broken kernel still tracks this song (F 1.0 from the flux alone), so it would prove nothing.
    # Measured F = 1.0 (the `small` backend too); a random-weights kernel scores 0.0 here and a
    # constant-output kernel 0.0: 0.8 tells real tracking from a broken model
    res = evaluate_file(BEATS / "gtzan_pop_00000.flac", backend="hls", onset_weight=0.0)
    assert res["F"] >= 0.8, res


def test_streams_are_independent(project) -> None:
    a, b = HlsActivation(project=project), HlsActivation(project=project)
    noise = np.random.default_rng(0).normal(0, 0.1, 22050).astype(np.float32)
    a.process(noise)  # stream a has heard 1 s of noise, b nothing
    x = np.random.default_rng(1).normal(0, 0.1, 4410).astype(np.float32)
    pa, pb, pc = a.process(x)[3], b.process(x)[3], HlsActivation(project=project).process(x)[3]
    np.testing.assert_array_equal(pb, pc)
    assert not np.array_equal(pa, pb)


def test_fpga_option_is_a_clear_error(project) -> None:
    with pytest.raises(DependencyError, match="PYNQ / XRT"):
        HlsActivation(project=project, fpga=True)
