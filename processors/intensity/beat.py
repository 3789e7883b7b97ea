"""Per-beat intensity for BeatEvent's ``intensity`` field, from the full feature set.

A drop-in for ``processors.service.BeatIntensity`` (same ``push`` / ``at_beat`` methods):
the beat processor feeds it each audio chunk and asks, at each beat, for the mean normalised
intensity of the frames since the previous beat.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from .features import IntensityFeatures

__all__ = ["PerBeatIntensity"]


class PerBeatIntensity:
    """Mean :class:`~processors.intensity.features.IntensityFeatures` intensity over the last beat.

    Parameters
    ----------
    sr : int
        Sample rate (Hz) of the chunks given to :meth:`push`.
    hop_length : int
        Feature hop (441 = 20 ms at 22050 Hz).
    """

    def __init__(self, *, sr: int = 22050, hop_length: int = 441):
        self.features = IntensityFeatures(sr=sr, hop_length=hop_length)
        self.recent: deque[float] = deque(maxlen=int(self.features.fps))    # the last second of frames

    def push(self, x: np.ndarray) -> None:
        """Feed an audio chunk (mono float)."""
        self.recent.extend(f.intensity for f in self.features.process(x))

    def at_beat(self, period_s: float) -> float:
        """Mean intensity (0..1) over the last ``period_s`` seconds (one beat period, 0.1-1 s)."""
        if not self.recent:
            return 0.0
        n = int(np.clip(round(period_s * self.features.fps), 1, len(self.recent)))
        vals = list(self.recent)[-n:]
        return float(np.clip(np.mean(vals), 0.0, 1.0))
