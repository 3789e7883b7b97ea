"""Whole-song structure: boundaries from symmetric novelty, groups, labels.

``analyze_sections(path_or_samples, beats=None)`` is the entry point behind
``beatbus analyze PATH --sections``. Steps: frame features (:mod:`.features`) -> beat grid (the
given beats, else the whole file's beat times from the offline beat decoder,
:func:`processors.beat.track_offline`) -> beat-synchronous features -> self-similarity ->
Foote novelty with a kernel of whole bars covering >= 2 bars and >= 4 s on both sides -> peaks
at least two bars and 3.5 s apart (median + MAD threshold) -> boundaries at silences (and
downbeat snapping when bar positions are given) -> repetition groups ->
:func:`.labels.label_segments`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from beatbus.audio import load_audio
from beatbus.processors.beat import backends, track_offline

from .features import FrameFeatures, beat_sync
from .labels import Segment, label_segments
from .segment import group_segments, novelty, pick_peaks, similarity

__all__ = ["analyze_sections", "analyze_structure", "section_at", "Structure",
           "MIN_MUSIC_S", "silent_runs", "kernel_beats"]

SR = 22050
HOP = 882                  # 40 ms: sections need no finer frames
MIN_MUSIC_S = 8.0          # shorter audio is one section (there is nothing to compare)
SILENCE_REL_DB = 40.0      # frames this far below the song's loudest frames are silence,
SILENCE_ABS_DB = -60.0     # ... and any frame below this (feature energy scale)
MIN_SILENCE_S = 1.0        # a silent run is a section of its own from this length ...
MIN_GAP_BARS = 1.9         # boundaries at least (about) two bars ...
MIN_GAP_S = 3.5            # ... and 3.5 s apart
MIN_LEAD_SILENCE_S = 0.2   # ... and from this length at the very start
KERNEL_S = 4.0             # novelty kernel: at least this long on each side
EDGE_S = 2.5               # no novelty boundary this close to the start or end (fades, tails)


def kernel_beats(beats_per_bar: int | None, ibi: float) -> int:
    """Novelty kernel half-width in beats: whole bars covering >= 2 bars and >= KERNEL_S seconds.

    Long enough to average over a few chord changes, short enough for 2-bar sections at slow
    tempos. Unknown meter: 4 beats per bar.
    """
    bpb = beats_per_bar or 4
    bars = max(2, int(np.ceil(KERNEL_S / max(bpb * ibi, 1e-3))))
    return max(4, bars * bpb)


@dataclass
class Structure:
    """Result of :func:`analyze_structure`."""

    sections: list[dict]
    beats: np.ndarray
    novelty: np.ndarray = field(default_factory=lambda: np.zeros(0))
    duration: float = 0.0

    def section_at(self, t: float) -> dict | None:
        return section_at(self.sections, t)


def section_at(sections: list[dict], t: float) -> dict | None:
    """The section containing stream time ``t`` (``start <= t < end``), or None."""
    for s in sections:
        if s["start"] <= t < s["end"]:
            return s
    if sections and t == sections[-1]["end"]:
        return sections[-1]
    return None


def silent_runs(times: np.ndarray, energy: np.ndarray, *, hop_s: float, min_s: float = MIN_SILENCE_S,
                min_lead_s: float = MIN_LEAD_SILENCE_S) -> list[tuple[float, float]]:
    """``(start, end)`` of every run of silent frames at least ``min_s`` long (``min_lead_s`` at the start)."""
    if energy.size == 0:
        return []
    gate = max(float(np.percentile(energy, 99)) - SILENCE_REL_DB, SILENCE_ABS_DB)
    silent = energy < gate
    runs, i, n = [], 0, len(silent)
    while i < n:
        if silent[i]:
            j = i
            while j < n and silent[j]:
                j += 1
            a, b = times[i] - hop_s, times[j - 1]
            if b - a >= (min_lead_s if i == 0 else min_s):
                runs.append((max(0.0, float(a)), float(b)))
            i = j
        else:
            i += 1
    return runs


def _as_beats(beats) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    """Beat times, beats per bar (None if unknown) and bar positions.

    Accepts times, ``(time, beat_in_bar)`` rows, dicts with ``time`` / ``beat_in_bar`` (the
    ``beatbus analyze --json`` beats) or objects with those attributes (``processors.beat.Beat``).
    """
    items = list(beats) if not isinstance(beats, np.ndarray) else beats
    if len(items) and isinstance(items[0], dict):
        items = [(d["time"], d.get("beat_in_bar", 0)) for d in items]
    elif len(items) and hasattr(items[0], "time"):
        items = [(b.time, getattr(b, "beat_in_bar", 0)) for b in items]
    try:
        b = np.asarray(items, dtype=float)
    except (TypeError, ValueError, KeyError):
        raise ValueError("beats must be times, (time, beat_in_bar) rows, or dicts with 'time'") from None
    if b.ndim == 2 and b.shape[1] >= 2 and not (b[:, 1] >= 1).all():
        b = b[:, 0]                     # no bar positions given
    if b.ndim == 2 and b.shape[1] >= 2:
        pos = b[:, 1].astype(int)
        return b[:, 0], int(pos.max()) if pos.size else None, pos
    return b.ravel(), None, None


def _as_mono(audio) -> np.ndarray:
    """Samples -> mono float32: 1-D as is, 2-D averaged over the shorter (channel) axis."""
    try:
        y = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"audio must be a path or an array of samples, not {type(audio).__name__}") from None
    if y.ndim == 2:
        y = y.mean(axis=int(np.argmin(y.shape)))
    if y.ndim != 1:
        raise ValueError(f"audio samples shape={y.shape} must be (n,) or (n, channels)")
    return y


def _whole(duration: float, label: str, conf: float) -> list[dict]:
    return [{"start": 0.0, "end": round(duration, 3), "label": label, "confidence": conf, "group": 0}]


def analyze_structure(audio, beats=None, *, sr: int = SR, backend: str = backends.DEFAULT,
                      device: str = "cpu") -> Structure:
    """Whole-song structure of a file path or mono samples (at ``sr``).

    Parameters
    ----------
    audio : str, PathLike or np.ndarray [shape=(n,)]
    beats : array-like, optional
        Beat times (s), rows ``(time, beat_in_bar)``, or dicts / objects with ``time`` and
        ``beat_in_bar``; default: the beat times of the offline beat decoder
        (:func:`processors.beat.track_offline`) over the whole file. Given bar positions snap
        boundaries to downbeats.
    backend, device : str
        The beat backend and its torch device for the default beats.
    """
    y = load_audio(audio, sr=sr) if isinstance(audio, (str, os.PathLike)) else _as_mono(audio)
    if not np.isfinite(y).all():
        y = np.where(np.isfinite(y), y, np.float32(0.0))
    duration = y.size / sr
    ff = FrameFeatures(sr=sr, hop_length=HOP if sr == SR else int(round(sr * HOP / SR)))
    times, F, onset = ff.process_offline(y)
    if duration < MIN_MUSIC_S or times.size < 8:
        return Structure(_whole(duration, "unknown", 0.2), np.zeros(0), duration=duration)
    runs = silent_runs(times, F[:, -1], hop_s=ff.hop_length / sr)
    if runs and runs[0][0] <= 1e-6 and runs[0][1] >= duration - 0.05:
        return Structure(_whole(duration, "unknown", 0.1), np.zeros(0), duration=duration)   # all silence
    if beats is None:
        # Times only: on 2/4 and slow 3/4 songs the decoder's downbeats land a beat off and snapping
        # would move boundaries with them (synthetic x20: F@0.5 s 0.87 with its bar positions, 0.98
        # without); the novelty peaks then fall on the beats themselves.
        beats = [b.time for b in track_offline(y, backend=backend, sr=sr, device=device)]
    bt, bpb, pos = _as_beats(beats)
    inside = (bt > 0.05) & (bt < duration - 0.05)
    bt = bt[inside]
    pos = pos[inside] if pos is not None else None
    grid = np.concatenate([[0.0], bt, [duration]])
    B = beat_sync(times, F, grid, centre_offset=ff.centre_offset)
    if len(B) < 4 * 2 + 2:
        return Structure(_whole(duration, "unknown", 0.2), bt, duration=duration)
    S = similarity(B)
    ibi = float(np.median(np.diff(bt))) if bt.size > 2 else 0.5
    bar_s = (bpb or 4) * ibi
    nov = novelty(S, kernel_beats(bpb, ibi))
    cut = pick_peaks(nov, grid[:-1], min_gap_s=max(MIN_GAP_BARS * bar_s, MIN_GAP_S), edge=max(4, bpb or 4))
    edge = max(bar_s, EDGE_S)
    cut = [k for k in cut if edge <= grid[k] <= grid[-1] - edge]
    bounds = _with_silences(sorted(set(cut)), grid, runs)
    if pos is not None:
        bounds = _snap_to_downbeats(bounds, grid, bt, pos)
    segs_idx = list(zip([0, *bounds], [*bounds, len(B)]))
    energy_beats = B[:, -1]
    silent_seg = [_is_silent(grid[a], grid[b], runs) for a, b in segs_idx]
    music = [k for k, s in enumerate(silent_seg) if not s]
    groups = group_segments(S, [segs_idx[k] for k in music]) if music else []
    group_of = {k: g for k, g in zip(music, groups)}
    nxt = max(groups) + 1 if groups else 0
    segs = []
    for k, (a, b) in enumerate(segs_idx):
        g = group_of.get(k)
        if g is None:
            g, nxt = nxt, nxt + 1
        segs.append(Segment(start=float(grid[a]), end=float(grid[b]), group=int(g),
                            energy=float(np.mean(energy_beats[a:b])), silent=silent_seg[k]))
    labels = label_segments(segs, final=True)
    sections = [{"start": round(s.start, 3), "end": round(s.end, 3), "label": lab, "confidence": round(conf, 3),
                 "group": s.group} for s, (lab, conf) in zip(segs, labels)]
    return Structure(sections, bt, nov, duration)


def _is_silent(a: float, b: float, runs: list[tuple[float, float]]) -> bool:
    covered = sum(max(0.0, min(b, e) - max(a, s)) for s, e in runs)
    return b - a > 0 and covered >= 0.8 * (b - a)


def _with_silences(bounds: list[int], grid: np.ndarray, runs: list[tuple[float, float]]) -> list[int]:
    """Add beat indices at the edges of silent runs; drop novelty boundaries inside or next to them."""
    near = lambda t: int(np.argmin(np.abs(grid[:-1] - t)))  # noqa: E731
    edges = set()
    for s, e in runs:
        for t in (s, e):
            k = near(t)
            if 0 < k < len(grid) - 1:
                edges.add(k)
    keep = [k for k in bounds if not any(s - 1.0 <= grid[k] <= e + 1.0 for s, e in runs)]
    return sorted(set(keep) | edges)


def _snap_to_downbeats(bounds: list[int], grid: np.ndarray, bt: np.ndarray, pos: np.ndarray) -> list[int]:
    """Move each boundary to a downbeat within one beat, when there is one (sections start on bars)."""
    down = set(np.flatnonzero(pos == 1) + 1)          # grid index = beat index + 1 (grid[0] is 0.0)
    out = []
    for k in bounds:
        cand = [j for j in (k, k - 1, k + 1) if j in down]
        out.append(cand[0] if cand else k)
    return sorted(set(out))


def analyze_sections(audio, beats=None, *, sr: int = SR, backend: str = backends.DEFAULT,
                     device: str = "cpu") -> list[dict]:
    """``[{"start", "end", "label", "confidence"}, ...]`` covering the whole file (offline).

    Parameters
    ----------
    audio : str, PathLike or np.ndarray
        A file, or mono samples at ``sr``.
    beats : array-like, optional
        Beat times (s), ``(time, beat_in_bar)`` rows, or the beat analysis's beats (dicts or
        ``Beat`` objects with ``time`` and ``beat_in_bar``); default: the offline beat decoder's.
    backend, device : str
        The beat backend and its torch device for the default beats.

    Returns
    -------
    list of dict
        In time order, contiguous, from 0 to the file's end. ``label`` is one of intro, verse,
        chorus, bridge, outro, unknown (silence, or a song whose structure cannot be read).
    """
    return [{k: s[k] for k in ("start", "end", "label", "confidence")}
            for s in analyze_structure(audio, beats, sr=sr, backend=backend, device=device).sections]
