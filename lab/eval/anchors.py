"""Anchors run in the same benchmark as our trackers (``beatbus eval beats ... --anchor librosa``).

A number is only a result next to an anchor measured on the same files with the same conventions.
``librosa``: ``librosa.beat.beat_track`` (Ellis' dynamic programming over the onset envelope,
offline, no downbeats) with its defaults at 22050 Hz, hop 512, as a user calls it.
"""
from __future__ import annotations

import numpy as np

from beatbus.processors.beat.tracker import Beat

__all__ = ["ANCHORS", "anchor_beats"]

ANCHORS = ("librosa",)


def anchor_beats(name: str, y: np.ndarray, sr: int) -> list[Beat]:
    """Beats of a whole recording by an anchor, as :class:`Beat` rows (scored like ours).

    Offline anchors decide everything at the end (``decided_at`` = the duration) and predict
    nothing, so their live F is 0 by construction; they have no bars (``beat_in_bar`` 1, not a
    downbeat claim: their downbeat F is not reported).
    """
    if name != "librosa":
        raise ValueError(f"anchor={name!r} must be one of {list(ANCHORS)}")
    import librosa

    tempo, frames = librosa.beat.beat_track(y=y, sr=sr, units="frames")
    times = librosa.frames_to_time(frames, sr=sr)
    bpm = float(np.atleast_1d(tempo)[0])
    end = y.size / sr
    return [Beat(time=float(t), is_downbeat=False, beat_in_bar=1, meter=1, bpm=bpm, confidence=1.0,
                 next_beat_time=float(t), decided_at=end) for t in times]
