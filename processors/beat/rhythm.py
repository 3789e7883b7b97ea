"""Whole-file rhythm summaries of tracked beats: the tempo curve bar by bar, and tempo and meter per span.

What ``beatbus analyze`` reports beside the beats: a song's tempo drifts (rubato, a live band)
and its meter can change between sections, so one number per file hides both.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from .tracker import Beat

__all__ = ["tempo_curve", "span_rhythm"]


def tempo_curve(beats: Sequence[Beat]) -> list[tuple[float, float]]:
    """``[(bar start s, BPM), ...]``: the tempo of each bar from its mean beat interval.

    A bar runs from one downbeat to the next (the last bar to the last beat); beats before the
    first downbeat form a bar of their own. Fewer than two beats: empty.
    """
    if len(beats) < 2:
        return []
    times = np.array([b.time for b in beats])
    starts = [0] + [i for i, b in enumerate(beats) if b.is_downbeat and i > 0]
    out = []
    for a, b in zip(starts, starts[1:] + [len(beats) - 1], strict=True):
        end = b if b > a else min(a + 1, len(beats) - 1)
        if end > a:
            out.append((round(float(times[a]), 3), round(60.0 * (end - a) / float(times[end] - times[a]), 2)))
    return out


def span_rhythm(beats: Sequence[Beat], start: float, end: float) -> dict:
    """Tempo (BPM, from the median interval) and meter (the most common) of the beats in ``[start, end)``.

    ``{"tempo": None, "meter": None}`` when fewer than three beats fall in the span.
    """
    inside = [b for b in beats if start <= b.time < end]
    if len(inside) < 3:
        return {"tempo": None, "meter": None}
    ibi = float(np.median(np.diff([b.time for b in inside])))
    return {"tempo": round(60.0 / ibi, 2), "meter": Counter(b.meter for b in inside).most_common(1)[0][0]}
