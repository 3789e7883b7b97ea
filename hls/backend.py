"""Beat-processor backend ``hls``: the C-simulated FPGA kernel computes the per-frame activations.

The compiled hls4ml C-simulation library is the bit-accurate model of the FPGA kernel; each
stream loads its own copy (:class:`hls.project.CsimLibrary`), whose static GRU state is that
stream's state. Features, silence gate, spectral-flux mix and downbeat cue are shared with the
``beatnet`` / ``small`` backends (:class:`processors.beat.network.NetworkActivation`).

A plug-in of the beat processor: pyproject.toml names :func:`factory` in the entry point group
``beatbus.beat_backends``; importing this module stays cheap (TensorFlow, QKeras and hls4ml are
imported only to build a missing project).

The kernel project is ``project``, else ``$BEATBUS_HLS_PROJECT``, else ``~/.cache/beatbus/hls/beat_small``
(:class:`~processors.beat.processor.BeatProcessor` and ``beatbus eval beats --backend hls`` take no
project option: the variable points them at another one).

``fpga=True`` (driving a real board through PYNQ / XRT) is not implemented: no board here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError, DependencyError, require
from beatbus.processors.beat.network import NetworkActivation, check_sr

from .model import DEFAULT_WEIGHTS, softmax
from .project import (
    DEFAULT_CONFIG,
    DEFAULT_PROJECT,
    CsimLibrary,
    build_key,
    compile_project,
    find_library,
    read_stamp,
    write_project,
)

__all__ = ["CsimStep", "HlsActivation", "ensure_library", "factory"]


def ensure_library(project: str | Path = DEFAULT_PROJECT, *, weights: str | Path = DEFAULT_WEIGHTS,
                   config: str | Path | None = None, build: bool = True) -> Path:
    """The project's compiled C-simulation library; (re)converted and compiled first (~15-60 s of
    g++) when missing or stale (its stamp holds another :func:`~hls.project.build_key`) and ``build``.

    ``config`` None: the config the project was converted with (its stamp), else the default one.
    """
    project = Path(project)
    stamp = read_stamp(project)
    config = config or stamp.get("config") or DEFAULT_CONFIG
    try:
        lib = find_library(project)
    except ConfigError:
        if not build:
            raise
        lib = None
    if lib is not None and stamp.get("key") == build_key(weights, config):
        return lib
    if not build:
        raise ConfigError(f"the C-simulation library in {str(project)!r} was built from another config, weights or "
                          f"converter: run 'beatbus hls convert --out {project}'")
    return compile_project(write_project(weights=weights, config=config, out_dir=project))


class CsimStep:
    """``(feats, state) -> (probs, state)`` over the C-simulation library (the ``NumpyBDA`` shape).

    The "state" is a private library copy, so :meth:`initial_state` loads a fresh one.
    """

    def __init__(self, lib: str | Path, mean: np.ndarray, std: np.ndarray) -> None:
        self.lib, self.mean, self.std = Path(lib), np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def initial_state(self) -> CsimLibrary:
        return CsimLibrary(self.lib)

    def __call__(self, feats: np.ndarray, state: CsimLibrary) -> tuple[np.ndarray, CsimLibrary]:
        logits = state((np.asarray(feats, np.float32) - self.mean) / self.std)
        return softmax(logits.astype(np.float64)), state


class HlsActivation(NetworkActivation):
    """Streaming ``hls`` activation for one stream.

    Parameters
    ----------
    project : path or None
        hls4ml project directory (``beatbus hls convert --out``); built from ``weights`` if it has
        no up-to-date compiled library. None: ``$BEATBUS_HLS_PROJECT``, else the default project.
    weights : path
        QKeras model prefix (``<prefix>.json`` holds the feature mean / std).
    onset_weight : float or None
        Spectral-flux share, as for the other network backends (None: their default).
    fpga : bool
        Drive a real board (PYNQ / XRT): not available in this build.
    """

    name = "hls"  # the tracker settings are small's (the generic ones): the same model, quantized

    def __init__(self, *, project: str | Path | None = None, weights: str | Path = DEFAULT_WEIGHTS,
                 silence_db: float = NetworkActivation.SILENCE_DB,
                 onset_weight: float | None = None, fpga: bool = False) -> None:
        if fpga:
            raise DependencyError("--fpga needs a PYNQ / XRT board and its runtime: not available here "
                                  "(the C-simulation library is the kernel's bit-accurate model)")
        super().__init__(silence_db=silence_db, onset_weight=onset_weight)
        meta_file = Path(str(weights) + ".json")
        if not meta_file.is_file():
            raise ConfigError(f"no QKeras model at {str(weights)!r}: run 'beatbus hls train'")
        meta = json.loads(meta_file.read_text())
        self.net = None
        project = project or os.environ.get("BEATBUS_HLS_PROJECT") or DEFAULT_PROJECT
        self._np = CsimStep(ensure_library(project, weights=weights), meta["mean"], meta["std"])
        self.reset()

    @property
    def batch_key(self) -> tuple:
        """Never batched with other streams: each stream owns a library copy (its kernel state)."""
        return ("hls", id(self))

    @staticmethod
    def infer_many(acts: list[HlsActivation], feats: list[np.ndarray]) -> list[np.ndarray]:
        """Kernel probabilities per stream (one C call per frame and stream)."""
        out = []
        for a, f in zip(acts, feats):
            probs, a.state = a._np(f, a.state)
            out.append(probs)
        return out


def factory(*, sr: int, device: str, model: int, onset_weight: float | None) -> HlsActivation:
    """The ``hls`` beat backend (entry point ``beatbus.beat_backends``): the C simulation of the
    project ``$BEATBUS_HLS_PROJECT``, else the default one, on the CPU (``device`` and ``model`` do
    not apply)."""
    check_sr("hls", sr)
    require("hls4ml", "backend 'hls'")
    return HlsActivation(onset_weight=onset_weight)
