"""Per-beat intensity for BeatEvent's ``intensity`` field: cheap enough for every source of a
beat processor, so a beat carries its loudness even when no intensity processor runs (that one
publishes the full feature set, :mod:`processors.intensity`).
"""
from __future__ import annotations

import numpy as np

__all__ = ["BeatIntensity"]


class BeatIntensity:
    """Per-beat loudness in 0..1 with adaptive gain (RMS over the last beat / slow peak).

    Parameters
    ----------
    sr : int
        Sample rate (Hz) of the chunks given to :meth:`push`.
    decay_s : float
        Time constant of the peak's decay, counted in 20 ms steps of :meth:`at_beat` calls.
    """

    def __init__(self, *, sr: int, decay_s: float = 30.0):
        self.sr = sr
        self.buf = np.zeros(sr, dtype=np.float32)   # last second of audio, a ring (a roll per frame cost
        self.pos = 0                                # more than the beat tracking of the frame)
        self.peak = 1e-4
        self.decay = np.exp(-1.0 / (decay_s * 50))   # per 20 ms update

    def push(self, x: np.ndarray) -> None:
        """Feed an audio chunk (mono float)."""
        x = x[-len(self.buf):]
        head = min(len(x), len(self.buf) - self.pos)
        self.buf[self.pos:self.pos + head] = x[:head]
        self.buf[:len(x) - head] = x[head:]
        self.pos = (self.pos + len(x)) % len(self.buf)

    def at_beat(self, period_s: float) -> float:
        """Loudness (0..1) of the last ``period_s`` seconds (one beat period, clipped to 0.1-1 s)
        against the decaying peak of the previous calls."""
        n = int(np.clip(period_s, 0.1, 1.0) * self.sr)
        last = np.take(self.buf, np.arange(self.pos - n, self.pos), mode="wrap")
        rms = float(np.sqrt(np.mean(last ** 2)))
        self.peak = max(rms, self.peak * self.decay)
        return float(np.clip(rms / self.peak, 0.0, 1.0))
