"""Offline (non-causal) beat / downbeat decoding of a whole file's activations.

The online :class:`~processors.beat.tracker.BarTracker` must commit to every beat a few frames
after it, from the past alone; a file can instead be decoded at once. :func:`decode` finds the
single most probable path (Viterbi) through a bar-pointer state space, the "efficient state
space" of Krebs, Böck & Widmer (2015) as used by madmom's offline downbeat tracker:

* for every meter ``m`` (beats per bar) and integer beat interval ``T`` (frames per beat, 55-215
  BPM at 50 fps) a ring of ``m * T`` states, one per frame position in the bar; each meter is its
  own sub-space (no transition between meters: the best path picks one meter for the file);
* the position advances one state per frame; only at a beat boundary may the tempo change, with
  weight ``exp(-lambda * |T'/T - 1|)`` (row-normalised), so the transitions are sparse: every
  state has one predecessor except the first state of each beat, which has one per tempo;
* observations as in the online tracker: the first ``T / observation_lambda`` frames of a beat
  (at most ``beat_frames``) see the beat activation (the first beat of the bar: the downbeat
  activation), every other state ``(1 - beat - downbeat) / (observation_lambda - 1)``.

A frame costs a shift of the score vector, one ``(K, n_tempi, n_tempi)`` max-plus product for the
beat boundaries (``K`` = the sum of the meters) and one gather of the observation log-likelihoods,
all numpy; back-pointers are kept only for the beat-boundary states. Frames before the first and
after the last activation above ``threshold`` are not decoded (madmom does the same), so a quiet
intro gets no beats and the first beat is the first one played.

The path is found on any input, noise included, so a beat is kept only where the ``onset``
strength around it (a window of ``onset_window`` s) averages at least ``min_onset``: the
backends' onset counts only flux that rises coherently across bands (music-like), so stationary
noise and steady tones have none, as for the online tracker's rhythm confidence.

Every backend's activation has the ``[beat, downbeat]`` format; the ``dsp`` backend's downbeat
column is a loudness-accent share (weak evidence), which this decoder uses as the online tracker does.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .space import BarSpace
from .tracker import Beat

__all__ = ["OfflineDecoder", "decode"]


class _Space(BarSpace):
    """The shared :class:`~.space.BarSpace` in log probabilities, with the observation classes and
    the back-pointer rows of the beat-boundary states (shared between decoders)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        # row (index into dst.ravel()) of each beat-boundary state, -1 for every other state
        self.row_of = np.full(self.n_states, -1, dtype=np.int64)
        self.row_of[self.dst.ravel()] = np.arange(self.dst.size)
        trans = self.tempo_weights / self.tempo_weights.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):
            self.log_trans = np.where(trans > 1e-12, np.log(trans), -np.inf)  # (from, to)
        self.log_init = np.log(self.start)
        # observation class per state: 0 non-beat, 1 beat, 2 downbeat
        cls = np.zeros(self.n_states, dtype=np.int64)
        cls[self.beat_region] = 1
        cls[self.beat_region & (self.beat == 0)] = 2
        self.cls = cls


@lru_cache(maxsize=4)
def _space(*args) -> _Space:
    return _Space(*args)


@dataclass(frozen=True)
class OfflineDecoder:
    """Viterbi decoding of ``[beat, downbeat]`` activations over a bar-pointer state space.

    Parameters
    ----------
    fps : float
        Activation frame rate (50 for every backend).
    min_bpm, max_bpm : float
        Tempo range; beat intervals are the integers ``round(60*fps/max_bpm) .. round(60*fps/min_bpm)``.
    meters : tuple of int
        Beats per bar, each its own sub-space.
    transition_lambda : float
        Tempo-change steepness at beat boundaries (larger = steadier tempo).
    observation_lambda : int
        Non-beat states see ``(1 - beat - downbeat) / (observation_lambda - 1)``; the beat region
        is the first ``1/observation_lambda`` of a beat ...
    beat_frames : int
        ... but at most this many frames.
    act_floor : float
        Activations are clipped to at least this (a missing onset is strong, not infinite, evidence).
    threshold : float
        Only frames from the first to the last with ``beat + downbeat`` above this are decoded.
    tempo_prior : tuple of (float, float) or None
        ``(centre_bpm, sigma_octaves)`` log-normal tempo prior on the start and on tempo changes.
    time_offset : float
        Seconds added to every beat time (the activation's own bias).
    onset_window : float
        Seconds, centred on each beat (shifted inside the file at its ends), over which ...
    min_onset : float
        ... the mean ``onset`` must reach this for the beat to be kept.
    """

    fps: float = 50.0
    min_bpm: float = 55.0
    max_bpm: float = 215.0
    # Nested leave-one-group-out over shared/data/beats + beats_more kept these (README "Beats:
    # accuracy"): re-tuning scored lower on held-out groups, and meter 2 only raised downbeat F by
    # halving 4/4 bars (meter right on 0.58 of the files instead of 0.81)
    meters: tuple[int, ...] = (3, 4)
    transition_lambda: float = 30.0
    observation_lambda: int = 8
    beat_frames: int = 1
    act_floor: float = 0.01
    threshold: float = 0.05
    tempo_prior: tuple[float, float] | None = None
    time_offset: float = 0.0
    onset_window: float = 4.0
    # 4 s mean onset at decoded beats: noise (3 colours, -40..-2 dBFS) <= 0.0012, music's 1st percentile
    # 0.005-0.02. Not the online periodicity: the path imposes the period; rubato music scores as noise.
    min_onset: float = 0.003

    def __post_init__(self) -> None:
        if not 0 < self.min_bpm < self.max_bpm:
            raise ValueError(f"min_bpm={self.min_bpm!r}, max_bpm={self.max_bpm!r}: need 0 < min_bpm < max_bpm")
        if not self.meters or any(int(m) < 1 for m in self.meters) or len(set(self.meters)) != len(self.meters):
            raise ValueError(f"meters={self.meters!r} must be distinct positive beats-per-bar counts")
        if int(self.observation_lambda) < 2:
            raise ValueError(f"observation_lambda={self.observation_lambda!r} must be an integer >= 2")
        if not 0 < self.act_floor < 0.5:
            raise ValueError(f"act_floor={self.act_floor!r} must be in (0, 0.5)")
        if round(60.0 * self.fps / self.max_bpm) < 2:
            raise ValueError(f"max_bpm={self.max_bpm!r} is too fast for fps={self.fps!r}")
        if self.onset_window <= 0 or self.min_onset < 0:
            raise ValueError(f"onset_window={self.onset_window!r} must be > 0, min_onset={self.min_onset!r} >= 0")

    def _space(self) -> _Space:
        lo = int(round(60.0 * self.fps / self.max_bpm))
        hi = int(round(60.0 * self.fps / self.min_bpm))
        prior = None if self.tempo_prior is None else (float(self.tempo_prior[0]), float(self.tempo_prior[1]))
        return _space(float(self.fps), tuple(range(lo, hi + 1)), tuple(int(m) for m in self.meters),
                      float(self.transition_lambda), int(self.observation_lambda), int(self.beat_frames), prior)

    def path(self, activations: np.ndarray) -> tuple[np.ndarray, float]:
        """The most probable state sequence for ``activations [shape=(n, 2)]`` and its log-probability."""
        sp = self._space()
        act = np.nan_to_num(np.asarray(activations, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        beat = np.clip(act[:, 0], self.act_floor, 1.0)
        down = np.clip(act[:, 1], self.act_floor, 1.0)
        non = np.clip(1.0 - act[:, 0] - act[:, 1], self.act_floor, 1.0) / (self.observation_lambda - 1)
        log_obs = np.log(np.stack([non, beat, down], axis=1))  # (n, 3): per class
        n = act.shape[0]
        k, n_t = sp.n_rows, sp.n_tempi
        dst, src = sp.dst.ravel(), sp.src
        back = np.empty((n, k, n_t), dtype=np.int16)  # best previous tempo of each beat-boundary state
        delta = sp.log_init + log_obs[0, sp.cls]
        new = np.empty_like(delta)
        for i in range(1, n):  # frame loop only: everything per state is vectorised
            cand = delta[src][:, :, None] + sp.log_trans[None]  # (K, from, to)
            best = cand.argmax(axis=1)
            back[i] = best
            new[1:] = delta[:-1]  # within-beat advance (the beat-boundary states are overwritten)
            new[dst] = np.take_along_axis(cand, best[:, None, :], axis=1).ravel()
            new += log_obs[i, sp.cls]
            delta, new = new, delta
        states = np.empty(n, dtype=np.int64)
        s = int(delta.argmax())
        score = float(delta[s])
        rows = np.arange(k)[:, None].repeat(n_t, 1).ravel()
        for i in range(n - 1, -1, -1):
            states[i] = s
            if i == 0:
                break
            r = sp.row_of[s]
            if r < 0:
                s -= 1
            else:
                s = int(src[rows[r], back[i].ravel()[r]])
        return states, score

    def decode(self, activations: np.ndarray, *, gate: np.ndarray | None = None,
               onset: np.ndarray | None = None) -> list[Beat]:
        """Beats and downbeats of a whole file.

        Parameters
        ----------
        activations : np.ndarray [shape=(n, 2)]
            ``[beat, downbeat]`` per frame at ``fps`` (frame k centred on ``k / fps`` s).
        gate : np.ndarray [shape=(n,), dtype=bool] or None
            False on silent frames: no beat is placed on silence.
        onset : np.ndarray [shape=(n,)] or None
            Music-like onset strength per frame (0..1); beats where its windowed mean is below
            ``min_onset`` are dropped. None uses ``beat + downbeat``.

        Returns
        -------
        list of Beat
            In time order; ``decided_at`` is the end of the file (nothing is decided before it),
            ``confidence`` the mean activation at the file's beats.
        """
        act = np.asarray(activations, dtype=np.float64)
        if act.ndim != 2 or act.shape[1] != 2:
            raise ValueError(f"activations shape={act.shape} must be (n_frames, 2)")
        total = np.nan_to_num(act.sum(axis=1))
        if gate is not None:
            gate = np.asarray(gate, dtype=bool).reshape(-1)
            if gate.shape[0] != act.shape[0]:
                raise ValueError(f"gate length={gate.shape[0]} must match activations frames={act.shape[0]}")
            total = np.where(gate, total, 0.0)
        onset = total if onset is None else np.nan_to_num(np.asarray(onset, dtype=np.float64).reshape(-1))
        if onset.shape[0] != act.shape[0]:
            raise ValueError(f"onset length={onset.shape[0]} must match activations frames={act.shape[0]}")
        active = np.flatnonzero(total > self.threshold)
        if active.size < 2:
            return []
        lo, hi = int(active[0]), int(active[-1]) + 1
        sp = self._space()
        states, _ = self.path(act[lo:hi])
        starts = np.flatnonzero(sp.pos[states] == 0)  # frames where the path begins a beat
        evident = _window_mean(onset, lo + starts, int(round(self.onset_window * self.fps))) >= self.min_onset
        end = act.shape[0] / self.fps
        meter = int(self.meters[sp.meter[states[-1]]])
        beats: list[Beat] = []
        for j, f in enumerate(starts):
            s = states[f]
            c = lo + int(f)
            if gate is not None and not gate[max(c - 1, 0) : c + 2].any():
                continue  # never a beat on silence
            if not evident[j]:
                continue  # no music-like onsets around it: the path ran through noise
            period = float(sp.interval[s])
            time = (c + _subframe(total, c)) / self.fps + self.time_offset
            bib = int(sp.beat[s]) + 1
            bpm = 60.0 * self.fps / period
            nxt = (lo + starts[j + 1]) / self.fps + self.time_offset if j + 1 < starts.size else time + 60.0 / bpm
            beats.append(Beat(time=time, is_downbeat=bib == 1, beat_in_bar=bib, meter=meter, bpm=bpm,
                              confidence=float(np.clip(total[c], 0.0, 1.0)), next_beat_time=float(nxt),
                              decided_at=end))
        return beats


def _window_mean(x: np.ndarray, centres: np.ndarray, width: int) -> np.ndarray:
    """Mean of ``x`` over ``width`` frames centred on each of ``centres``, the window shifted to lie
    inside ``x`` (so a beat near either end of the file is judged on as much signal as any other)."""
    n = x.size
    width = max(1, min(width, n))
    lo = np.clip(centres - width // 2, 0, n - width)
    cum = np.concatenate([[0.0], np.cumsum(x)])
    return (cum[lo + width] - cum[lo]) / width


def _subframe(total: np.ndarray, c: int) -> float:
    """Sub-frame offset (-1.5..1.5 frames) of the activation peak nearest frame ``c``: the largest of
    frames ``c - 1 .. c + 1`` refined by a parabola through it and its neighbours."""
    if c - 2 < 0 or c + 3 > total.size:
        return 0.0
    a = total[c - 2 : c + 3]
    j = int(np.argmax(a[1:4])) + 1
    if a[j] <= a[2]:
        j = 2  # no larger neighbour (a beat the tempo fills in has no peak): stay on the frame
    den = a[j - 1] - 2 * a[j] + a[j + 1]
    frac = float(np.clip(0.5 * (a[j - 1] - a[j + 1]) / den, -0.5, 0.5)) if den < 0 else 0.0
    return float(np.clip(j - 2 + frac, -1.5, 1.5))


def decode(activations: np.ndarray, *, gate: np.ndarray | None = None, onset: np.ndarray | None = None,
           **settings) -> list[Beat]:
    """``OfflineDecoder(**settings).decode(activations, gate=gate, onset=onset)``."""
    return OfflineDecoder(**settings).decode(activations, gate=gate, onset=onset)
