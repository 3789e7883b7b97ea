"""hls4ml project of the beat kernel: convert, C-simulate, synthesise, read reports.

The converted model is the one-frame QKeras graph (:func:`hls.model.build_frame_model`): each call
consumes one 20 ms feature frame and returns 3 logits. A live kernel keeps its GRU state between
calls; hls4ml's ``gru_stack`` zeroes the state at the start of every call (it was written for
whole sequences per call), so :func:`write_project` patches the project's copy of
``nnet_recurrent.h``: with ``Static: true`` the GRU keeps a ``static`` state and the stack no
longer resets it on entry. The state then starts at zero when the library (or bitstream) loads,
which is why :class:`CsimLibrary` loads one private copy of the C-simulation library
per stream.

hls4ml 1.3.0 also ignores the QGRU's kernel / recurrent / bias quantizers (``GRU.initialize``
never passes them on): it writes the float weights and the C++ cast to ``ap_fixed`` *truncates*
them, while QKeras *rounds*; every GRU weight was up to one LSB off, which put the C simulation
0.16 (probability) away from QKeras on gtzan_rock_00000. :func:`write_project` therefore stores the
quantized weights in the Keras model before converting (:func:`bake_quantized_weights`).
"""
from __future__ import annotations

import ctypes
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError

from .compat import import_hls4ml
from .model import DEFAULT_WEIGHTS, load_qmodel

__all__ = ["DEFAULT_CONFIG", "DEFAULT_PROJECT", "load_config", "write_project", "compile_project", "find_library",
           "CsimLibrary", "synthesis_tool", "build_project", "read_reports", "STATE_PATCH_MARK",
           "bake_quantized_weights", "BUILD_STAMP", "build_key", "read_stamp"]

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")
DEFAULT_PROJECT = Path.home() / ".cache" / "beatbus" / "hls" / "beat_small"
STATE_PATCH_MARK = "// beatbus: streaming GRU state (no reset per call)"
BUILD_STAMP = "beatbus-build.json"  # {"key": build_key(), "config": path} of a project converted from weights
_KEYS = {"project_name", "backend", "part", "clock_period", "io_type", "hls_config"}


def load_config(path: str | Path = DEFAULT_CONFIG) -> dict:
    """Read and check the reviewed YAML (one-line ``ConfigError`` on a bad file)."""
    import yaml

    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"hls config {str(path)!r}: {exc}".splitlines()[0]) from exc
    if not isinstance(cfg, dict) or not _KEYS <= set(cfg):
        raise ConfigError(f"hls config {str(path)!r} must define {sorted(_KEYS)}")
    if cfg["backend"] not in ("Vitis", "Vivado"):
        raise ConfigError(f"hls config backend={cfg['backend']!r} must be 'Vitis' or 'Vivado'")
    if cfg["io_type"] not in ("io_parallel", "io_stream"):
        raise ConfigError(f"hls config io_type={cfg['io_type']!r} must be 'io_parallel' or 'io_stream'")
    return cfg


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def _patch_state(project: Path) -> None:
    """Keep the static GRU state across calls (see the module docstring)."""
    header = project / "firmware" / "nnet_utils" / "nnet_recurrent.h"
    text = header.read_text()
    if STATE_PATCH_MARK in text:
        return
    start = text.index("void gru_stack(data_T data[CONFIG_T::n_sequence * CONFIG_T::n_in], res_T res[")
    head, body = text[:start], text[start:]
    body, n = re.subn(r"bool reset_state = true;", f"bool reset_state = !CONFIG_T::use_static; {STATE_PATCH_MARK}",
                      body, count=1)
    if n != 1:
        raise RuntimeError(f"{header}: hls4ml's gru_stack changed; cannot apply the streaming-state patch")
    header.write_text(head + body)


# QKeras attribute holding the quantizer of each weight, by the weight's Keras name
_QUANTIZER_OF = {"kernel": "kernel_quantizer_internal", "recurrent_kernel": "recurrent_quantizer_internal",
                 "bias": "bias_quantizer_internal"}


def bake_quantized_weights(model) -> None:
    """Replace each QKeras layer's float weights by their quantized values, in place.

    QKeras quantizers are idempotent, so the model's outputs do not change; hls4ml then writes
    values that are exact in the ``ap_fixed`` weight types whether or not it applies the quantizer
    itself (it does not for QGRU in 1.3.0; see the module docstring).
    """
    for layer in model.layers:
        owner = getattr(layer, "cell", layer)  # recurrent layers keep their quantizers on the cell
        if not layer.weights:
            continue
        baked = []
        for w in layer.weights:
            attr = _QUANTIZER_OF.get(w.name.split("/")[-1].split(":")[0])
            quant = getattr(owner, attr, None) if attr else None
            baked.append(quant(w).numpy() if quant is not None else w.numpy())
        layer.set_weights(baked)


def build_key(weights: str | Path = DEFAULT_WEIGHTS, config: str | Path = DEFAULT_CONFIG) -> str:
    """Hash of what a compiled library depends on: config, weights, this module (conversion and
    patches) and the hls4ml version; a project stamped with another key is stale."""
    import hashlib
    from importlib.metadata import version

    files = [Path(config), Path(str(weights) + ".json"), Path(str(weights) + ".weights.h5"), Path(__file__)]
    h = hashlib.sha256(version("hls4ml").encode())
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{str(f)!r} does not exist (hls config, or QKeras model: run 'beatbus hls train')")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def read_stamp(project: str | Path) -> dict:
    """A project's ``BUILD_STAMP`` (``key``, ``config``); empty when it has none."""
    try:
        stamp = json.loads((Path(project) / BUILD_STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def write_project(*, weights: str | Path = DEFAULT_WEIGHTS, config: str | Path = DEFAULT_CONFIG,
                  out_dir: str | Path = DEFAULT_PROJECT, model=None):
    """Convert the QKeras frame model to an hls4ml project on disk (not compiled).

    Older compiled libraries of ``out_dir`` are removed; the project is stamped with
    :func:`build_key` (``BUILD_STAMP``) when converted from ``weights``.

    Parameters
    ----------
    model : keras.Model or None
        A frame model to convert instead of the one saved at ``weights`` (tests use tiny ones);
        its weights are replaced by their quantized values (same outputs).

    Returns
    -------
    hls4ml.model.ModelGraph
    """
    hls4ml = import_hls4ml()
    cfg = load_config(config)
    key = None
    if model is None:
        key = build_key(weights, config)
        model, _, _ = load_qmodel(weights, frame=True)
    bake_quantized_weights(model)
    hls_cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=cfg["backend"])
    _merge(hls_cfg, cfg["hls_config"])
    names = {layer.name for layer in model.layers}
    for name, layer_cfg in cfg["hls_config"].get("LayerName", {}).items():
        if name in names and "Static" in layer_cfg:  # hls4ml reads the lower-case key for RNNs
            hls_cfg["LayerName"][name]["static"] = layer_cfg["Static"]
    out_dir = Path(out_dir)
    (out_dir / BUILD_STAMP).unlink(missing_ok=True)
    for lib in out_dir.glob(f"firmware/{cfg['project_name']}-*.so"):  # built from an older conversion
        lib.unlink()
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=hls_cfg, output_dir=str(out_dir), project_name=cfg["project_name"],
        backend=cfg["backend"], part=cfg["part"], clock_period=cfg["clock_period"], io_type=cfg["io_type"])
    hls_model.write()
    _patch_state(out_dir)
    if key is not None:
        stamp = {"key": key, "config": str(Path(config).resolve())}
        (out_dir / BUILD_STAMP).write_text(json.dumps(stamp) + "\n")
    return hls_model


def compile_project(hls_model) -> Path:
    """Build the C-simulation library with g++ (after the patch) and load it into ``hls_model``."""
    hls_model._compile()  # not compile(): that rewrites the sources and drops the patch
    return find_library(Path(hls_model.config.get_output_dir()), hls_model.config.get_project_name())


def find_library(project: str | Path, name: str = "beat_small") -> Path:
    """Newest compiled ``firmware/<name>-*.so`` of a project."""
    libs = sorted(Path(project).glob(f"firmware/{name}-*.so"), key=lambda p: p.stat().st_mtime)
    if not libs:
        raise ConfigError(f"no compiled C-simulation library in {str(project)!r}: run 'beatbus hls convert'")
    return libs[-1]


class CsimLibrary:
    """One private copy of a compiled C-simulation library: its own static GRU state.

    ``dlopen`` shares a library loaded twice under one path, so each instance copies the ``.so``
    to a temporary file first.

    Parameters
    ----------
    lib : path
        ``firmware/<name>-<stamp>.so`` from :func:`compile_project`.
    name : str
        Project name (the C function is ``<name>_float``).
    n_in, n_out : int
        Values per frame in / out.
    """

    def __init__(self, lib: str | Path, *, name: str = "beat_small", n_in: int = 272, n_out: int = 3) -> None:
        self.n_in, self.n_out = n_in, n_out
        self._dir = tempfile.TemporaryDirectory(prefix="beatbus-hls-")
        copy = Path(self._dir.name) / Path(lib).name
        shutil.copyfile(lib, copy)
        self._lib = ctypes.CDLL(str(copy), mode=ctypes.RTLD_LOCAL)
        self._fn = getattr(self._lib, f"{name}_float")
        self._fn.restype = None
        ptr = np.ctypeslib.ndpointer(dtype=np.float32, ndim=1, flags="C_CONTIGUOUS")
        self._fn.argtypes = [ptr, ptr]
        self._out = np.zeros(n_out, dtype=np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Run frames ``[shape=(n, n_in)]`` in order; outputs ``[shape=(n, n_out)]``."""
        x = np.ascontiguousarray(frames, dtype=np.float32).reshape(-1, self.n_in)
        out = np.empty((x.shape[0], self.n_out), dtype=np.float32)
        for i in range(x.shape[0]):
            self._fn(x[i], self._out)
            out[i] = self._out
        return out


def synthesis_tool(backend: str) -> str | None:
    """``vitis-run`` (Vitis) or ``vivado_hls`` (Vivado) when on PATH, else None."""
    return shutil.which("vitis-run" if backend == "Vitis" else "vivado_hls")


def build_project(project: str | Path = DEFAULT_PROJECT, *, config: str | Path = DEFAULT_CONFIG) -> tuple[int, str]:
    """Run C synthesis of a written project.

    Returns
    -------
    (exit code, message)
        Exit code 3 and a one-line message when the synthesis tool is not on PATH (the project is
        left ready to synthesise elsewhere).
    """
    import subprocess

    cfg = load_config(config)
    project = Path(project)
    if not (project / "build_prj.tcl").is_file():
        raise ConfigError(f"no hls4ml project in {str(project)!r}: run 'beatbus hls convert --out {project}' first")
    tool = synthesis_tool(cfg["backend"])
    if tool is None:
        want = "vitis-run" if cfg["backend"] == "Vitis" else "vivado_hls"
        return 3, (f"{want} is not on PATH: synthesis skipped; the project in {project} is ready "
                   f"(run '{want} {'--mode hls --tcl' if want == 'vitis-run' else '-f'} build_prj.tcl' there)")
    cmd = [tool, "--mode", "hls", "--tcl", "build_prj.tcl"] if cfg["backend"] == "Vitis" else [tool, "-f", "build_prj.tcl"]
    rc = subprocess.run(cmd, cwd=project).returncode
    return rc, f"{' '.join(cmd)} exited with {rc}; reports under {project}"


def read_reports(project: str | Path = DEFAULT_PROJECT) -> dict | None:
    """Parse the C-synthesis report XML (latency cycles, II, BRAM/DSP/FF/LUT); None when absent."""
    import xml.etree.ElementTree as ET

    reports = sorted(Path(project).rglob("*_csynth.xml"))
    if not reports:
        return None
    root = ET.parse(reports[-1]).getroot()

    def find(path: str):
        el = root.find(path)
        return el.text if el is not None else None

    return {
        "report": str(reports[-1]),
        "clock_ns": find("./PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod"),
        "latency_best": find("./PerformanceEstimates/SummaryOfOverallLatency/Best-caseLatency"),
        "latency_worst": find("./PerformanceEstimates/SummaryOfOverallLatency/Worst-caseLatency"),
        "interval_min": find("./PerformanceEstimates/SummaryOfOverallLatency/Interval-min"),
        "interval_max": find("./PerformanceEstimates/SummaryOfOverallLatency/Interval-max"),
        **{k.lower(): find(f"./AreaEstimates/Resources/{k}") for k in ("BRAM_18K", "DSP", "FF", "LUT")},
    }
