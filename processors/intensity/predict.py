"""Energy-transition and tempo-change detection over live intensity features.

Kinds (the same words as the synthetic songs' ground truth, :mod:`lab.synth.plan`):

``build-up``
    Energy rising steadily for about a bar or more (crescendo, snare roll, rising brightness).
    When bar times are known (beat events) it also predicts the drop: builds start on a
    downbeat and last 1, 2, 4 or 8 bars, so the drop is expected at the start plus the next
    such length still ahead; the prediction is re-issued when that moment passes.
``drop``
    Energy jumping up (>= ``rise_db``) to near the song's loud level.
``breakdown``
    Energy falling (>= ``fall_db``) to well below the song's loud level.
``tempo-change``
    The tempo of the beat events settling >= 4 % away from where it was (from ``add_beat``);
    tempos an octave apart count as the same (a tracker's octave flips are not reported, nor is
    a true doubling).

All decisions are causal: ``Transition.time`` estimates when the change happened or will
happen; ``detected_at`` is the stream time of the audio that triggered the decision, so
``detected_at - time`` is the detection delay (negative: a lead time).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .features import GATE_LUFS, IntensityFrame

__all__ = ["Transition", "TransitionDetector", "TempoChangeDetector", "TRANSITION_KINDS"]

TRANSITION_KINDS = ("build-up", "drop", "breakdown", "tempo-change")


@dataclass(frozen=True)
class Transition:
    """One detected (or foreseen) transition.

    Attributes
    ----------
    kind : str
        One of :data:`TRANSITION_KINDS`.
    time : float
        Stream time (s) when it happened (build-up: when it started).
    detected_at : float
        Stream time (s) of the audio that decided it.
    confidence : float
        0..1.
    predicted_time : float or None
        Build-up: when the drop is expected (stream time).
    bpm_from, bpm_to : float or None
        Tempo change: before and after.
    level_from, level_to : float or None
        Energy transitions: momentary loudness (LUFS) before and after.
    """

    kind: str
    time: float
    detected_at: float
    confidence: float
    predicted_time: float | None = None
    bpm_from: float | None = None
    bpm_to: float | None = None
    level_from: float | None = None
    level_to: float | None = None


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept (closed form: cheaper than np.polyfit)."""
    xm, ym = float(x.mean()), float(y.mean())
    dx = x - xm
    slope = float(dx @ (y - ym)) / max(float(dx @ dx), 1e-12)
    return slope, ym - slope * xm


class _Ring:
    """Fixed-length history of floats, oldest first on :meth:`view`."""

    def __init__(self, n: int):
        self.buf = np.full(2 * n, np.nan)
        self.n, self.i = n, 0

    def push(self, v: float) -> None:
        # written twice so the last n values are always one contiguous slice
        k = self.i % self.n
        self.buf[k] = self.buf[k + self.n] = v
        self.i += 1

    def view(self, count: int | None = None) -> np.ndarray:
        count = min(self.n if count is None else count, self.i, self.n)
        k = self.i % self.n
        return self.buf[k + self.n - count:k + self.n]


class TempoChangeDetector:
    """A settled tempo change in a beat stream (bpm per beat).

    Parameters
    ----------
    threshold : float
        Relative change that counts (0.04 = 4 %).
    settle : int
        Beats the new tempo must hold (interquartile range within ``threshold / 2``).
    reference : int
        Beats before those that define the old tempo (steady: interquartile range within
        ``threshold / 2``).
    """

    def __init__(self, *, threshold: float = 0.04, settle: int = 6, reference: int = 8):
        self.threshold, self.settle, self.reference = threshold, settle, reference
        self.beats: deque[tuple[float, float]] = deque(maxlen=settle + reference)

    def reset(self) -> None:
        self.beats.clear()

    def add_beat(self, time: float, bpm: float, *, now: float | None = None) -> Transition | None:
        """Feed one beat (stream time, tempo in BPM); return a Transition when the tempo has moved."""
        if not (math.isfinite(bpm) and bpm > 0 and math.isfinite(time)):
            return None
        self.beats.append((float(time), float(bpm)))
        if len(self.beats) < self.beats.maxlen:
            return None
        raw = np.array([b for _, b in self.beats])
        # a tracker flipping between tempo octaves is not a tempo change: fold every value into
        # the octave of the old tempo (so a real x2 change is not reported either)
        anchor = float(np.median(raw[:self.reference]))
        bpms = raw * 2.0 ** np.round(np.log2(anchor / raw))
        ref = bpms[:self.reference]
        old = float(np.median(ref))
        # the old tempo must have been steady too (not a tracker still locking in)
        if float(np.percentile(ref, 75) - np.percentile(ref, 25)) / old > self.threshold / 2:
            return None
        new_part = bpms[self.reference:]
        new = float(np.median(new_part))
        ratio = new / old
        spread = float((np.percentile(new_part, 75) - np.percentile(new_part, 25)) / new)
        if abs(ratio - 1) < self.threshold or spread > self.threshold / 2:
            return None
        # the change happened at the first beat of the settled run
        first = self.beats[self.reference][0]
        conf = float(np.clip(abs(ratio - 1) / (2 * self.threshold), 0, 1) * (1 - spread / self.threshold))
        detected = float(now if now is not None else self.beats[-1][0])
        self.beats.clear()
        self.beats.append((float(time), float(bpm)))
        return Transition("tempo-change", first, detected, round(conf, 3), bpm_from=old, bpm_to=new)


class TransitionDetector:
    """Causal build-up / drop / breakdown detector over :class:`IntensityFrame` s.

    Parameters
    ----------
    fps : float
        Frames per second of the features (50 for 20 ms hops).
    rise_db, fall_db : float
        Momentary-loudness change (dB, "before" median vs the last 0.3 s) that makes a drop /
        breakdown.
    near_top_db : float
        A drop must land within this many dB of the song's loud level (a slow peak follower
        that starts at :attr:`PRIOR_TOP_LUFS`, so a quiet intro's first groove is no drop).
    below_top_db : float
        A breakdown must land at least this many dB below the loud level, from within
        ``near_top_db`` of it, with the onset strength falling to <= ``flux_fall`` of before.
    build_slope_db_s : float
        Loudness slope (dB/s) of a build-up over the last ``build_window_s`` (or half a bar).
    build_busier : float
        ... with the onset strength at least this many times that of the 3 s before.
    refractory_s : float
        Minimum time between two events of the same kind.
    """

    BEFORE = (4.0, 1.2)        # the "before" level: median over [t - 4.0 s, t - 1.2 s]
    AFTER_S = 0.3              # the "after" level: median over the last 0.3 s
    PEAK_RELEASE_DB_S = 0.3    # loud-level follower release
    PRIOR_TOP_LUFS = -16.0     # a typical mastered loud level, until the song shows its own
    EVERY = 3                  # frames between decisions

    def __init__(self, *, fps: float = 50.0, rise_db: float = 6.0, fall_db: float = 6.0,
                 near_top_db: float = 4.0, below_top_db: float = 9.0, flux_fall: float = 0.75,
                 build_slope_db_s: float = 3.0, build_window_s: float = 1.0, build_busier: float = 1.2,
                 refractory_s: float = 3.0):
        self.fps = float(fps)
        self.rise_db, self.fall_db = rise_db, fall_db
        self.near_top_db, self.below_top_db, self.flux_fall = near_top_db, below_top_db, flux_fall
        self.build_slope, self.build_window = build_slope_db_s, build_window_s
        self.build_busier = build_busier
        self.refractory = refractory_s
        self.n_hist = int(round(8.0 * self.fps))
        self.tempo = TempoChangeDetector()
        self.reset()

    def reset(self) -> None:
        self.m = _Ring(self.n_hist)           # momentary loudness (LUFS)
        self.lvl = _Ring(self.n_hist)         # per-frame K-weighted level (dB), for timing
        self.flux = _Ring(self.n_hist)
        self.top = self.PRIOR_TOP_LUFS
        self.last: dict[str, float] = {}
        self.build: dict | None = None        # the build-up in progress
        self.downbeats: deque[float] = deque(maxlen=16)
        self.bar_s: float | None = None
        self.now = 0.0
        self.tempo.reset()

    # -- inputs ---------------------------------------------------------------------
    def add_beat(self, time: float, bpm: float, beat_in_bar: int | None = None,
                 meter: int | None = None) -> list[Transition]:
        """Feed a beat event (stream time, BPM, position in bar): bar times and tempo changes."""
        if beat_in_bar == 1:
            self.downbeats.append(float(time))
        if bpm and bpm > 0 and meter:
            self.bar_s = 60.0 / bpm * meter
        tc = self.tempo.add_beat(time, bpm, now=max(self.now, time))
        return [tc] if tc is not None else []

    def push(self, frame: IntensityFrame) -> list[Transition]:
        """Feed one feature frame; return the transitions decided at this frame."""
        self.now = frame.time
        m = max(frame.momentary, GATE_LUFS)
        self.m.push(m)
        self.lvl.push(20 * math.log10(frame.rms) if frame.rms > 1e-5 else -100.0)
        self.flux.push(frame.flux)
        self.top = max(m, self.top - self.PEAK_RELEASE_DB_S / self.fps)
        if self.m.i < int(self.BEFORE[0] * self.fps):
            return []
        # decide every ``EVERY`` frames (60 ms): the times come from the history, not from when we look
        if self.m.i % self.EVERY:
            return []
        out = [ev for ev in (self._jumps(), self._build_up()) if ev is not None]
        return out

    # -- helpers --------------------------------------------------------------------
    def _ready(self, kind: str, gap: float | None = None) -> bool:
        return self.now - self.last.get(kind, -1e9) >= (self.refractory if gap is None else gap)

    def _n(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.fps)))

    def _step_time(self, within_s: float = 2.5) -> float:
        """When the per-frame level changed: the split of the last ``within_s`` that best fits two flat levels."""
        lv = self.lvl.view(self._n(within_s))
        n = len(lv)
        c1 = np.cumsum(lv)
        c2 = np.cumsum(lv * lv)
        k = np.arange(5, n - 5)            # at least 0.1 s on each side
        sse_l = c2[k - 1] - c1[k - 1] ** 2 / k
        sse_r = (c2[-1] - c2[k - 1]) - (c1[-1] - c1[k - 1]) ** 2 / (n - k)
        split = int(k[np.argmin(sse_l + sse_r)])
        # frame i ends at now - (n - 1 - i) hops; the change starts with frame ``split``
        return self.now - (n - split) / self.fps

    def _jump_time(self, rising: bool, within_s: float = 1.0) -> float:
        """When the per-frame level jumped most sharply (0.16 s after vs 0.3 s before) in the last ``within_s``.

        Sharper than :meth:`_step_time` after a build-up, whose slow rise would otherwise pull
        the change toward the build's start.
        """
        pre, post = self._n(0.3), self._n(0.16)
        lv = self.lvl.view(self._n(within_s) + pre)
        c = np.concatenate([[0.0], np.cumsum(lv)])
        k = np.arange(pre, len(lv) - post + 1)
        jump = (c[k + post] - c[k]) / post - (c[k] - c[k - pre]) / pre
        best = int(k[np.argmax(jump if rising else -jump)])
        return self.now - (len(lv) - best) / self.fps

    def _step_beats_line(self, n: int) -> bool:
        """Over the last ``n`` frames of the 0.1 s-smoothed level: does one step fit better than a line?"""
        k = self._n(0.1)
        lv = np.convolve(self.lvl.view(n + k - 1), np.ones(k) / k, mode="valid")
        x = np.arange(lv.size, dtype=float)
        slope, icpt = _line(x, lv)
        sse_line = float(np.sum((lv - (slope * x + icpt)) ** 2))
        c1, c2 = np.cumsum(lv), np.cumsum(lv * lv)
        j = np.arange(2, lv.size - 2)
        sse_step = (c2[j - 1] - c1[j - 1] ** 2 / j) + ((c2[-1] - c2[j - 1]) - (c1[-1] - c1[j - 1]) ** 2 / (lv.size - j))
        return bool(sse_step.size) and float(sse_step.min()) < 0.6 * sse_line

    # -- detectors ------------------------------------------------------------------
    def _jumps(self) -> Transition | None:
        m = self.m.view()
        a, b = self._n(self.BEFORE[0]), self._n(self.BEFORE[1])
        before = float(np.median(m[-a:-b]))
        after = float(np.median(m[-self._n(self.AFTER_S):]))
        # a drop is abrupt: most of the rise happened within the last second (a build-up rises slowly)
        recent = float(np.median(m[-self._n(1.1):-self._n(0.7)]))
        if (after - before >= self.rise_db and after - recent >= 0.6 * self.rise_db
                and after >= self.top - self.near_top_db and self._ready("drop")):
            self.last["drop"] = self.now
            self.build = None
            conf = float(np.clip((after - before) / (2 * self.rise_db), 0.3, 1.0))
            return Transition("drop", self._jump_time(rising=True), self.now, round(conf, 3),
                              level_from=before, level_to=after)
        if (before - after >= self.fall_db and after <= self.top - self.below_top_db
                and before >= self.top - self.below_top_db + 2 and self._ready("breakdown")):
            f = self.flux.view()
            ratio = float(np.mean(f[-self._n(0.6):])) / max(float(np.mean(f[-a:-b])), 1e-9)
            if ratio > self.flux_fall:
                return None
            self.last["breakdown"] = self.now
            self.build = None
            conf = float(np.clip((before - after) / (2 * self.fall_db), 0.3, 1.0) * np.clip(2 * (1 - ratio), 0.3, 1.0))
            return Transition("breakdown", self._step_time(), self.now, round(conf, 3), level_from=before,
                              level_to=after)
        return None

    def _build_up(self) -> Transition | None:
        if self.build is not None:
            return self._update_build()
        if not (self._ready("build-up") and self._ready("drop", 1.5)):
            return None
        w = self.build_window if not self.bar_s else float(np.clip(self.bar_s / 2, 0.6, 1.5))
        n = self._n(w)
        m = self.m.view(n)
        if m[0] >= self.top - 2.0:
            # it starts as loud as the song gets: nothing to build to (where it ends says nothing: a
            # build-up about to drop is near the loud level by then)
            return None
        x = np.arange(n) / self.fps
        slope, icpt = _line(x, m)
        if slope < self.build_slope:
            return None
        # a ramp, not a step: the line explains most of the variance ...
        resid = m - (slope * x + icpt)
        r2 = 1.0 - float(resid @ resid) / max(float(np.sum((m - m.mean()) ** 2)), 1e-9)
        if r2 < 0.8:
            return None
        # ... also of the (less smoothed) frame level, where a step (a new section) fits two flat levels better
        if self._step_beats_line(self._n(w)):
            return None
        # getting busier too (rolls, risers), unlike a swelling pad: onset strength up on the seconds before
        f = self.flux.view(n + self._n(3.0))
        busy = float(np.mean(f[-n:])) / max(float(np.mean(f[:-n])), 1e-9)
        if busy < self.build_busier:
            return None
        start = self.now - w
        if self.downbeats and self.bar_s:
            # builds start on a downbeat: the latest one not after the rise began (+ a quarter bar)
            cands = [d for d in self.downbeats if d <= start + 0.25 * self.bar_s]
            if cands:
                start = cands[-1]
        conf = float(np.clip(slope / (2 * self.build_slope), 0.3, 1.0) * r2)
        self.build = {"start": start, "conf": conf, "predicted": None}
        self.last["build-up"] = self.now
        return Transition("build-up", start, self.now, round(conf, 3), predicted_time=self._predict_drop())

    def _predict_drop(self) -> float | None:
        """Start + 1, 2, 4 or 8 bars: the first still ahead (needs bar times from beats)."""
        if self.build is None or not self.bar_s:
            return None
        for bars in (1, 2, 4, 8):
            t = self.build["start"] + bars * self.bar_s
            # no margin: a build-up is seen late in it (its ramp must rise half a bar first), and a bar
            # line a few frames ahead is the drop more often than the one after (bench: intensity eval)
            if t > self.now:
                self.build["predicted"] = t
                return round(t, 4)
        return None

    def _update_build(self) -> Transition | None:
        """Re-predict a build-up whose drop did not come when expected, while it keeps rising."""
        b = self.build
        if b["predicted"] is None:
            if self.now - b["start"] > 8.0:
                self.build = None
            return None
        if self.now <= b["predicted"] + 0.25 * self.bar_s:
            return None
        m = self.m.view(self._n(1.0))
        if float(m[-1]) > float(np.median(m)) and float(m[-1]) < self.top - 1.0:
            nxt = self._predict_drop()
            if nxt is not None:
                return Transition("build-up", b["start"], self.now, round(b["conf"] * 0.8, 3), predicted_time=nxt)
        self.build = None
        return None
