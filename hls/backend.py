"""Beat-processor backend ``hls``: the C-simulated FPGA kernel computes the per-frame activations.

The compiled hls4ml C-simulation library is the bit-accurate model of the FPGA kernel; each
stream loads its own copy (:class:`hls.project.CsimLibrary`), whose static GRU state is that
stream's state. Features, silence gate, spectral-flux mix and downbeat cue are shared with the
``beatnet`` / ``small`` backends (:class:`processors.beat.bda.BeatNetActivation`).

``fpga=True`` (driving a real board through PYNQ / XRT) is not implemented: no board here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError, DependencyError
from processors.beat.bda import BeatNetActivation

from .model import DEFAULT_WEIGHTS, softmax
from .project import DEFAULT_CONFIG, DEFAULT_PROJECT, CsimLibrary, compile_project, find_library, write_project

__all__ = ["CsimStep", "HlsActivation", "ensure_library"]


def ensure_library(project: str | Path = DEFAULT_PROJECT, *, weights: str | Path = DEFAULT_WEIGHTS,
                   config: str | Path = DEFAULT_CONFIG, build: bool = True) -> Path:
    """The project's compiled C-simulation library; converted and compiled first (~10-40 s) when
    missing and ``build``."""
    try:
        return find_library(project)
    except ConfigError:
        if not build:
            raise
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


class HlsActivation(BeatNetActivation):
    """Streaming ``hls`` activation for one stream (the ``BeatNetActivation`` interface).

    Parameters
    ----------
    project : path
        hls4ml project directory (``beatbus hls convert --out``); built from ``weights`` if it has
        no compiled library yet.
    weights : path
        QKeras model prefix (``<prefix>.json`` holds the feature mean / std).
    onset_weight : float
        Spectral-flux share, as for the other network backends.
    fpga : bool
        Drive a real board (PYNQ / XRT): not available in this build.
    """

    def __init__(self, *, project: str | Path = DEFAULT_PROJECT, weights: str | Path = DEFAULT_WEIGHTS,
                 silence_db: float = BeatNetActivation.SILENCE_DB,
                 onset_weight: float = BeatNetActivation.ONSET_WEIGHT, fpga: bool = False) -> None:
        from processors.beat.downbeat import DownbeatCue
        from processors.beat.dsp import OnsetNormaliser
        from processors.beat.features import HOP_LENGTH, SR, StreamingSpectrogram

        if fpga:
            raise DependencyError("--fpga needs a PYNQ / XRT board and its runtime: not available here "
                                  "(the C-simulation library is the kernel's bit-accurate model)")
        if not 0.0 <= onset_weight <= 1.0:
            raise ValueError(f"onset_weight={onset_weight!r} must be in [0, 1]")
        meta_file = Path(str(weights) + ".json")
        if not meta_file.is_file():
            raise ConfigError(f"no QKeras model at {str(weights)!r}: run 'beatbus hls train'")
        meta = json.loads(meta_file.read_text())
        self.onset_weight = float(onset_weight)
        self.frontend = StreamingSpectrogram(sr=SR)
        self.net = None
        self._np = CsimStep(ensure_library(project, weights=weights), meta["mean"], meta["std"])
        self.silence_db = float(silence_db)
        self._norm = OnsetNormaliser(fps=SR / HOP_LENGTH)
        self._cue = DownbeatCue(fps=SR / HOP_LENGTH)
        self.reset()

    @property
    def batch_key(self) -> tuple:
        """Never batched with other streams: each stream owns a library copy (its kernel state)."""
        return ("hls", id(self))

    @staticmethod
    def _infer_many(acts: list["HlsActivation"], feats: list[np.ndarray]) -> list[np.ndarray]:
        """Kernel probabilities per stream (one C call per frame and stream)."""
        out = []
        for a, f in zip(acts, feats):
            probs, a.state = a._np(f, a.state)
            out.append(probs)
        return out

    def _frames(self, feats: np.ndarray, rms: np.ndarray | None = None, probs: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        if probs is None and feats.shape[0]:
            probs = HlsActivation._infer_many([self], [feats])[0]
        return super()._frames(feats, rms, probs)
