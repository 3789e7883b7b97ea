"""Named color palettes and the default palette for each song section.

A palette is a cyclic list of RGB stops; :func:`sample` interpolates it at positions in
``[0, 1)`` (1 wraps to 0), :func:`stop` returns its i-th stop.
"""
from __future__ import annotations

import numpy as np

from beatbus.errors import ConfigError

__all__ = ["PALETTES", "SECTION_PALETTES", "sample", "stop", "check_palette", "FOLLOW", "harmony_hue", "rotate_hue"]

FOLLOW = ("off", "key", "chord")

_RAW: dict[str, list[tuple[int, int, int]]] = {
    "rainbow": [(255, 0, 0), (255, 150, 0), (255, 255, 0), (0, 255, 0), (0, 150, 255), (140, 0, 255)],
    "fire": [(255, 30, 0), (255, 110, 0), (255, 190, 30), (255, 70, 0)],
    "ocean": [(0, 40, 255), (0, 150, 255), (0, 255, 200), (0, 90, 220)],
    "forest": [(20, 200, 40), (120, 255, 0), (0, 140, 60), (200, 255, 80)],
    "sunset": [(255, 60, 20), (255, 0, 90), (140, 0, 200), (255, 140, 0)],
    "neon": [(255, 0, 200), (0, 255, 255), (180, 255, 0), (120, 0, 255)],
    "ice": [(180, 230, 255), (255, 255, 255), (90, 160, 255)],
    "warm_white": [(255, 190, 120)],
    "white": [(255, 255, 255)],
    "party": [(255, 0, 60), (0, 80, 255), (255, 220, 0), (0, 255, 120), (200, 0, 255)],
}
PALETTES: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float32) / 255.0 for k, v in _RAW.items()}

# A section's mood -> palette; effects expose these as their own keys so users can change them.
SECTION_PALETTES: dict[str, str] = {
    "intro": "ocean", "verse": "forest", "chorus": "fire", "bridge": "neon", "outro": "sunset",
    "unknown": "rainbow",
}


def check_palette(name: str) -> np.ndarray:
    """The palette called ``name``, or ConfigError listing the known names."""
    try:
        return PALETTES[name]
    except KeyError:
        raise ConfigError(f"unknown palette {name!r} (known: {', '.join(PALETTES)})") from None


def stop(name: str, i: int) -> np.ndarray:
    """The ``i``-th stop of a palette (cyclic), shape (3,), float32 in 0..1."""
    pal = check_palette(name)
    return pal[int(i) % len(pal)]


def sample(name: str, x) -> np.ndarray:
    """Interpolate a palette at positions ``x`` (cyclic, 1.0 == 0.0).

    Returns
    -------
    np.ndarray [shape=(*x.shape, 3), dtype=float32]
    """
    pal = check_palette(name)
    n = len(pal)
    pos = (np.asarray(x, dtype=np.float32) % 1.0) * n
    i0 = np.floor(pos).astype(np.int64) % n
    frac = (pos - np.floor(pos))[..., None]
    return pal[i0] * (1.0 - frac) + pal[(i0 + 1) % n] * frac


def harmony_hue(pitch_class: int, minor: bool) -> float:
    """Hue rotation (degrees) for a key or chord: its place on the circle of fifths, 30 degrees a step.

    C major leaves a palette as it is; G and F, a fifth apart, are neighbours; a minor key or chord
    takes its relative major's place (A minor = C major: the same notes), so only the tonality's
    notes, not its name, set the colour.
    """
    tonic = (pitch_class + 3) % 12 if minor else pitch_class % 12
    return float((tonic * 7) % 12) * 30.0


def rotate_hue(rgb: np.ndarray, degrees: float, *, dim: float = 1.0) -> np.ndarray:
    """Rotate the hue of float RGB ``[..., 3]`` about the grey axis (greys stay grey), times ``dim``.

    A 3x3 matrix per call: cheap enough for every frame (a 300-pixel strip costs microseconds).
    """
    if degrees % 360.0 == 0.0 and dim == 1.0:
        return rgb
    a = np.deg2rad(degrees)
    c, s3 = np.cos(a), np.sin(a) / np.sqrt(3.0)
    k = (1.0 - c) / 3.0
    m = np.array([[c + k, k - s3, k + s3], [k + s3, c + k, k - s3], [k - s3, k + s3, c + k]], dtype=np.float32)
    return np.clip((rgb @ m.T) * np.float32(dim), 0.0, 1.0).astype(np.float32, copy=False)
