"""What the network backends (``beatnet``, ``small``, ``hls``) share: :class:`NetworkActivation`.

Each runs a network over BeatNet's 272-value feature frames (:mod:`processors.beat.features`)
to softmax probabilities over ``[beat, downbeat, non-beat]``; the front end and the
post-processing (silence gate, spectral-flux mix, downbeat cue, music coherence) are the same for
all of them and live here. No torch: the ``hls`` plug-in builds on this too.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backends import Activation, Frames
from .downbeat import DownbeatCue
from .dsp import FluxCoherence, OnsetNormaliser
from .features import HOP_LENGTH, SR, StreamingSpectrogram

__all__ = ["NetworkActivation", "check_sr"]


def check_sr(backend: str, sr: int) -> None:
    """The network backends read 22050 Hz features: ``ValueError`` for any other rate."""
    if sr != SR:
        raise ValueError(f"sr={sr} is not supported by backend {backend!r}: resample to 22050 Hz")


class NetworkActivation(Activation):
    """One stream's network activation: features -> network -> ``[beat, downbeat]``.

    Subclasses set :attr:`net` (the model shared by many streams, or None) and ``_np`` (a per-frame
    runtime with ``initial_state()``, or None: then ``net.initial_state(1)``), call
    :meth:`reset`, and implement :meth:`~processors.beat.backends.Activation.infer_many`.

    Parameters
    ----------
    silence_db : float
        Frames whose RMS is below this level (dBFS) are gated as silence.
    onset_weight : float or None
        0..1 (None: :attr:`ONSET_WEIGHT`): weight of the normalised spectral flux (from the same features) mixed into the
        network's beat + downbeat probability; the network's downbeat share is then corrected by
        the onset's loudness accent (:class:`~processors.beat.downbeat.DownbeatCue`). 0 gives the
        raw network output (parity with BeatNet). Flux and network fail on different music: on
        shared/data/beats the mix raised BeatNet's mean beat F from 0.68 (raw) to 0.78 (0.7), and
        nested leave-one-group-out over beats/ + beats_more/ keeps 0.7 (``--tune
        onset_weight=0.4,...,1``: validation mean F 0.725 for 0.7, 0.724 for what the folds chose;
        README Accuracy).
    """

    SILENCE_DB = -60.0
    ONSET_WEIGHT = 0.7

    net: Any
    _np: Any

    def __init__(self, *, silence_db: float = SILENCE_DB, onset_weight: float | None = None) -> None:
        onset_weight = self.ONSET_WEIGHT if onset_weight is None else onset_weight
        if not 0.0 <= onset_weight <= 1.0:
            raise ValueError(f"onset_weight={onset_weight!r} must be in [0, 1]")
        self.onset_weight = float(onset_weight)
        self.silence_db = float(silence_db)
        self.frontend = StreamingSpectrogram(sr=SR)
        self._norm = OnsetNormaliser(fps=SR / HOP_LENGTH)
        self._cue = DownbeatCue(fps=SR / HOP_LENGTH)
        self._coherence = FluxCoherence(fps=SR / HOP_LENGTH)

    @property
    def batch_key(self) -> tuple:
        """Activations with equal keys share a network and a front end: one batch."""
        return (self.name, id(self.net), self.frontend.frame_size, self.frontend.hop_length)

    def reset(self) -> None:
        """Start a new stream: empty buffers, initial network state."""
        self.frontend.reset()
        self._norm.reset()
        self._cue.reset()
        self._coherence.reset()
        self.state = self._np.initial_state() if self._np is not None else self.net.initial_state(1)

    @classmethod
    def frames_many(cls, acts: Sequence[NetworkActivation], feats: np.ndarray, rms: np.ndarray,
                    probs: np.ndarray | None) -> Frames:
        """Activations for the streams' new feature frames, stacked (``probs``: the network output,
        None: computed here): ``[beat, downbeat]`` with the flux mixed in per ``onset_weight``,
        silence gate, normalised spectral flux (from the positive-difference half of the features)
        and the raw network ``beat + downbeat`` gated by music coherence."""
        if probs is None:
            probs = np.stack(cls.infer_many(list(acts), list(feats)))
        act = np.asarray(probs)[:, :, :2].astype(np.float64)
        level = 20 * np.log10(np.maximum(rms, 1e-10))
        gate = level > np.array([a.silence_db for a in acts])[:, None]
        nb = acts[0].frontend.n_bands
        flux = feats[:, :, nb:]
        # mean positive flux per band
        onset = np.where(gate, OnsetNormaliser.many([a._norm for a in acts], flux.sum(axis=2) / nb), 0.0)
        # Both the network output and the spectral flux must repeat at the beat period: the
        # recurrent network can oscillate on its own on noise, the flux of noise does not repeat.
        periodic = np.sqrt(act.sum(axis=2) * onset)
        weight = np.array([a.onset_weight for a in acts])
        mixing = np.flatnonzero(weight > 0)
        if mixing.size:
            ow = weight[mixing, None]
            total = act[mixing].sum(axis=2)
            mixed = (1.0 - ow) * total + ow * 0.9 * onset[mixing]
            share = DownbeatCue.many([acts[i]._cue for i in mixing], mixed,
                                     act[mixing, :, 1] / np.maximum(total, 1e-9), level[mixing])
            act[mixing] = np.stack([mixed * (1.0 - share), mixed * share], axis=2)
        # the onset activity the tracker's confidence scales with counts only music-like
        # (coherent across bands) flux: stationary noise gets no confidence, and frames of noise
        # leave the periodicity history empty, so music after noise is trusted again sooner
        music = FluxCoherence.many([a._coherence for a in acts], flux)
        onset = onset * music
        periodic = np.where(music > 0, periodic, 0.0)
        return act, gate, onset, periodic
