"""ITU-R BS.1770 K-weighting at any sample rate, and LUFS-like loudness from mean squares.

The two K-filter stages (a high shelf modelling the head, then a ~38 Hz high pass) are the
standard's analogue prototypes mapped by the bilinear transform at the target rate (the same
parametrisation libebur128 and pyloudnorm use); at 48 kHz they reproduce the coefficient table
of BS.1770-4. For a mono signal, loudness = -0.691 + 10 log10(mean square of the K-weighted
signal), so a full-scale 1 kHz sine reads -3.01 LUFS and a -20 dBFS one -23.01 LUFS.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["k_weighting", "k_weighting_ba", "lufs", "SILENCE_LUFS"]

SILENCE_LUFS = -120.0       # what lufs() returns for digital silence
_SHELF = (1681.974450955533, 3.999843853973347, 0.7071752369554196)   # f0 (Hz), gain (dB), Q
_HIGHPASS = (38.13547087602444, 0.5003270373238773)                   # f0 (Hz), Q


def k_weighting(sr: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two K-filter biquads ``((b1, a1), (b2, a2))`` for sample rate ``sr`` (Hz)."""
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 2 * _SHELF[0]:
        raise ValueError(f"sr={sr!r} must be an integer sample rate above {2 * _SHELF[0]:.0f} Hz")
    f0, gain_db, q = _SHELF
    k = math.tan(math.pi * f0 / sr)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = (np.array([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]),
             np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]))
    f0, q = _HIGHPASS
    k = math.tan(math.pi * f0 / sr)
    a0 = 1 + k / q + k * k
    highpass = (np.array([1.0, -2.0, 1.0]),
                np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]))
    return shelf, highpass


def k_weighting_ba(sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Both K stages as one 4th-order ``(b, a)`` (one ``lfilter`` call per block, float64)."""
    (b1, a1), (b2, a2) = k_weighting(sr)
    return np.convolve(b1, b2), np.convolve(a1, a2)


def lufs(mean_square: float | np.ndarray) -> float | np.ndarray:
    """Loudness (LUFS, one channel) of a K-weighted mean square; silence -> SILENCE_LUFS."""
    if isinstance(mean_square, float):
        return -0.691 + 10 * math.log10(mean_square) if mean_square > 1e-12 else SILENCE_LUFS
    ms = np.asarray(mean_square, dtype=float)
    out = np.where(ms > 1e-12, -0.691 + 10 * np.log10(np.maximum(ms, 1e-30)), SILENCE_LUFS)
    return float(out) if out.ndim == 0 else out
