"""A causal beat grid from onset strength, for the live structure analysis when no beat events
reach it (the whole-file analysis takes the offline beat decoder's beats instead).

Sections do not need exact beats, only a grid that follows the music's pulse so that
beat-synchronous features line up with bars. :func:`estimate_tempo` picks the strongest
onset-autocorrelation lag in 60-200 BPM (weighted toward 120 BPM); :class:`OnlineGrid` extends
a grid causally, re-estimating tempo and phase from the last few seconds.
"""
from __future__ import annotations

import numpy as np

__all__ = ["estimate_tempo", "OnlineGrid"]

MIN_BPM, MAX_BPM = 60.0, 200.0


def _normalise(onset: np.ndarray) -> np.ndarray:
    o = np.asarray(onset, dtype=float)
    o = o - np.convolve(o, np.ones(25) / 25, mode="same")      # remove the slow trend (0.5 s at 50 fps)
    o = np.maximum(o, 0.0)
    sd = o.std()
    return o / sd if sd > 0 else o


def estimate_tempo(onset: np.ndarray, fps: float, *, prior_bpm: float = 120.0, width: float = 0.9) -> float:
    """Tempo (BPM) of an onset-strength envelope; ``prior_bpm`` when it has no periodicity.

    Candidates are weighted by a log-normal prior around ``prior_bpm`` (``width`` octaves).
    """
    o = _normalise(onset)
    if o.size < fps * 2 or not o.any():
        return prior_bpm
    ac = np.correlate(o, o, mode="full")[o.size - 1:]
    lags = np.arange(ac.size)
    lo, hi = int(np.floor(60 * fps / MAX_BPM)), int(np.ceil(60 * fps / MIN_BPM))
    lags = lags[lo:min(hi + 1, ac.size)]
    if lags.size == 0:
        return prior_bpm
    bpm = 60.0 * fps / np.maximum(lags, 1)
    weight = np.exp(-0.5 * (np.log2(bpm / prior_bpm) / width) ** 2)
    score = ac[lags] / (o.size - lags) * weight
    best = int(lags[np.argmax(score)])
    # refine to a fractional lag by a parabola through the neighbours
    if 1 <= best < ac.size - 1:
        y0, y1, y2 = ac[best - 1], ac[best], ac[best + 1]
        den = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
        return float(60.0 * fps / (best + np.clip(frac, -0.5, 0.5)))
    return float(60.0 * fps / best)


class OnlineGrid:
    """Causal beat grid: every ``update_s`` seconds re-estimate tempo and phase from the last
    ``window_s`` seconds of onset strength, and emit grid beats up to the present (the first
    estimate, after 3 s, also emits the grid back to the stream's start).

    Parameters
    ----------
    fps : float
        Frames per second of the onset envelope.
    """

    def __init__(self, *, fps: float, window_s: float = 8.0, update_s: float = 2.0):
        self.fps, self.window = float(fps), int(window_s * fps)
        self.update = int(update_s * fps)
        self.onset: list[float] = []
        self.n = 0
        self.period: float | None = None     # seconds
        self.next_beat: float | None = None  # seconds
        self._since = 0

    def push(self, onset: np.ndarray) -> list[float]:
        """Feed onset values (one per frame); return grid beat times (s) now in the past."""
        out: list[float] = []
        for v in np.asarray(onset, dtype=float):
            self.onset.append(float(v))
            self.n += 1
            self._since += 1
            if len(self.onset) > self.window:
                del self.onset[:len(self.onset) - self.window]
            now = self.n / self.fps
            if self.period is None and self.n >= self.fps * 3:
                self._reestimate(now)
                # the first estimate also covers the seconds it was made from
                back = self.next_beat - self.period
                while back - self.period > 0:
                    back -= self.period
                while back < self.next_beat - 1e-9:
                    out.append(back)
                    back += self.period
            elif self._since >= self.update and self.period:
                self._reestimate(now)
            while self.next_beat is not None and self.next_beat <= now:
                out.append(self.next_beat)
                self.next_beat += self.period
        return out

    def _reestimate(self, now: float) -> None:
        self._since = 0
        o = np.array(self.onset)
        # after the first estimate, prefer the current tempo's octave (no flipping between
        # a tempo and its double from one window to the next)
        prior = 120.0 if self.period is None else 60.0 / self.period
        bpm = estimate_tempo(o, self.fps, prior_bpm=prior, width=0.9 if self.period is None else 0.3)
        period = 60.0 / bpm
        # phase: the comb of beat positions (ending now) that collects the most onset strength
        k = int(round(period * self.fps))
        if k < 2:
            return
        on = _normalise(o)
        phases = [on[len(on) - 1 - p::-k].sum() for p in range(k)]
        p = int(np.argmax(phases))
        last = now - p / self.fps                 # the latest grid beat at or before now
        if self.next_beat is None:
            self.next_beat = last + period
        else:
            # glide toward the new phase instead of jumping (never emits a beat twice)
            target = last + period
            while target < self.next_beat - period / 2:
                target += period
            self.next_beat = max(self.next_beat - period / 4, min(target, self.next_beat + period / 4))
        self.period = period
