"""Chords as audio for the harmony tests: additive tones with partials, no soundfont needed."""
from __future__ import annotations

import numpy as np

__all__ = ["synth_chords", "beat_rows", "progression", "MAJOR", "MINOR"]

MAJOR = (0, 4, 7)
MINOR = (0, 3, 7)


def progression(key: int, minor: bool) -> list[tuple[int, bool]]:
    """I-V-vi-IV in major, i-VI-iv-v (natural minor) in minor: ``(root, minor)`` per bar."""
    if minor:
        return [(key, True), (key + 8, False), (key + 5, True), (key + 7, True)]
    return [(key, False), (key + 7, False), (key + 9, True), (key + 5, False)]


def synth_chords(chords: list[tuple[int, bool]], seconds_per_chord: float, *, sr: int = 22050,
                 seed: int = 0) -> np.ndarray:
    """Each chord ``(root pitch class, minor)`` for ``seconds_per_chord``: its triad from MIDI 60 and its
    root from MIDI 48, four partials each, a plucked envelope, and a little noise (mono float32)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds_per_chord * sr))
    t = np.arange(n) / sr
    env = np.minimum(1.0, t / 0.01) * np.exp(-t / (2 * seconds_per_chord))
    out = []
    for root, minor in chords:
        notes = [48 + root % 12] + [60 + root % 12 + s for s in (MINOR if minor else MAJOR)]
        x = np.zeros(n)
        for m in notes:
            f = 440.0 * 2 ** ((m - 69) / 12)
            for h, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2)):
                x += a * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi))
        out.append(0.05 * x * env)
    y = np.concatenate(out) + 0.001 * rng.standard_normal(n * len(chords))
    return y.astype(np.float32)


def beat_rows(n: int, period: float, *, meter: int = 4, start: float = 0.0, first: int = 0) -> list[dict]:
    """``n`` beats every ``period`` s from ``start``, numbered from ``first``, as ``OnlineHarmony.add_beat`` takes them."""
    return [{"time": start + k * period, "beat": first + k, "bar": (first + k) // meter,
             "beat_in_bar": (first + k) % meter + 1, "meter": meter, "bpm": 60.0 / period} for k in range(n)]
