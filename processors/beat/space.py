"""The bar-pointer state space both beat decoders share (Krebs, Böck & Widmer 2015; madmom's
``BarStateSpace`` / ``BarTransitionModel``).

For every meter ``m`` (beats per bar) and integer beat interval ``T`` (frames per beat) there is a
ring of ``m * T`` states, one per frame position in the bar. The position advances one state per
frame; only the first state of each beat is entered from elsewhere: from the last state of the
previous beat, at any tempo, with weight ``exp(-lambda * |T'/T - 1|)`` times an optional
log-normal tempo prior. The online :class:`~processors.beat.tracker.BarTracker` (forward
algorithm) and the offline :class:`~processors.beat.offline.OfflineDecoder` (Viterbi) each finish
these weights and observation classes in their own arithmetic (probabilities or logs).
"""
from __future__ import annotations

import numpy as np

__all__ = ["BarSpace"]


class BarSpace:
    """States, beat-boundary transitions, tempo weights and beat regions of the bar-pointer space.

    Parameters
    ----------
    fps : float
        Frame rate (for the tempo prior's BPM).
    intervals : tuple of int
        Beat intervals in frames, one tempo each.
    meters : tuple of int
        Beats per bar, each its own sub-space.
    transition_lambda : float
        Tempo-change steepness at beat boundaries.
    observation_lambda : int
        The beat region is the first ``1/observation_lambda`` of a beat ...
    beat_frames : int
        ... but at most this many frames.
    tempo_prior : tuple of (float, float) or None
        ``(centre_bpm, sigma_octaves)`` log-normal prior on tempo; None for a flat one.

    Attributes
    ----------
    meter, tempo, beat, pos, interval : np.ndarray [shape=(n_states,)]
        Per state: meter index, tempo index, beat in the bar (0-based), frame in the beat, beat interval.
    dst, src : np.ndarray [shape=(K, n_tempi)]
        The first state of every beat (``K`` = the sum of the meters, rows by meter then beat) and,
        per tempo, the last state of the previous beat it is entered from.
    down_rows : np.ndarray
        The rows of ``dst`` that are downbeats.
    tempo_weights : np.ndarray [shape=(n_tempi, n_tempi)]
        Unnormalised beat-boundary transition weights ``(from, to)``, the prior included.
    prior : np.ndarray [shape=(n_tempi,)]
        Tempo prior weights (ones without a prior).
    start : np.ndarray [shape=(n_states,)]
        Initial distribution: the prior over tempo, uniform over the positions of a tempo.
    beat_region : np.ndarray [shape=(n_states,), dtype=bool]
        States that see the beat (first beat of the bar: downbeat) activation.
    """

    def __init__(
        self,
        fps: float,
        intervals: tuple[int, ...],
        meters: tuple[int, ...],
        transition_lambda: float,
        observation_lambda: int,
        beat_frames: int,
        tempo_prior: tuple[float, float] | None,
    ) -> None:
        iv = np.asarray(intervals)
        n_t = len(iv)
        self.n_tempi = n_t
        self.meters = meters
        meter_of, tempo_of, beat_of, pos_of = [], [], [], []
        dst, src, down_rows = [], [], []
        offset = 0
        for mi, m in enumerate(meters):
            first = np.zeros((m, n_t), dtype=np.int64)  # first state of each beat, per tempo
            for ti, t in enumerate(iv):  # construction only: one block per (meter, tempo)
                q = np.arange(m * t)
                meter_of.append(np.full(m * t, mi))
                tempo_of.append(np.full(m * t, ti))
                beat_of.append(q // t)
                pos_of.append(q % t)
                first[:, ti] = offset + np.arange(m) * t
                offset += m * t
            for b in range(m):
                if b == 0:
                    down_rows.append(len(dst))
                dst.append(first[b])
                src.append(first[(b - 1) % m] + iv - 1)  # the last state of the previous beat
        self.n_states = offset
        self.meter = np.concatenate(meter_of)
        self.tempo = np.concatenate(tempo_of)
        self.beat = np.concatenate(beat_of)
        self.pos = np.concatenate(pos_of)
        self.interval = iv[self.tempo]
        self.n_rows = len(dst)
        self.dst = np.stack(dst)
        self.src = np.stack(src)
        self.down_rows = np.array(down_rows)
        # tempo transition at beat boundaries (madmom exponential_transition), times the prior
        ratio = iv[None, :] / iv[:, None]
        trans = np.exp(-transition_lambda * np.abs(ratio - 1.0))
        if tempo_prior is not None:
            centre, sigma = tempo_prior
            self.prior = np.exp(-0.5 * ((np.log2(60.0 * fps / iv) - np.log2(centre)) / sigma) ** 2)
            trans = trans * self.prior[None, :]
        else:
            self.prior = np.ones(n_t)
        self.tempo_weights = trans
        w = self.prior[self.tempo] / self.interval
        self.start = w / w.sum()
        # the first 1/observation_lambda of the beat, at most beat_frames frames (a wider region lets
        # the phase slide inside it and biases beats early)
        region = np.clip(self.interval // observation_lambda, 1, beat_frames)
        self.region = region
        self.beat_region = self.pos < region
