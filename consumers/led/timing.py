"""Getting light onto the strip on the beat.

Conventions (seconds, wall clock):

- ``display = send + output_latency - offset``: a frame sent now is *seen* ``output_latency``
  later (network, controller, LED wire); ``offset`` (``--offset-ms``, positive = lights
  later) is the user's hand correction or what tap calibration learned.
- A flash for a predicted beat at display time ``b`` must be sent at
  ``send_deadline(b) = b - output_latency + offset``; the render loop wakes exactly then
  (:func:`next_wake`), between its regular frames.
- :class:`OnsetGate` lets a beat flash only if the device saw it coming; a beat learnt
  about only after its onset (the first beat, a tracker correction) does not flash late.
- :class:`TapCalibrator` learns the offset from the user tapping along: the robust
  median of (tap - nearest predicted beat).
"""
from __future__ import annotations

import collections
import statistics
import threading

from beatbus.metrics import publish_role

from .metrics import OFFSET, TAPS

__all__ = ["display_time", "send_deadline", "next_wake", "OnsetGate", "TapCalibrator", "LightTiming"]

MIN_GAP_S = 0.002     # a beat frame this close before a regular frame replaces it


def display_time(send: float, latency_s: float, offset_s: float) -> float:
    """When light sent at ``send`` is seen."""
    return send + latency_s - offset_s


def send_deadline(display: float, latency_s: float, offset_s: float) -> float:
    """When to send so that light is seen at ``display``."""
    return display - latency_s + offset_s


def next_wake(next_regular: float, beat_send: float | None, now: float) -> tuple[float, bool]:
    """The render loop's next deadline: ``(time, is_beat_frame)``.

    A beat frame is scheduled when the predicted onset's send deadline comes before
    the next regular frame and is not more than ``MIN_GAP_S`` past (then it goes out at
    once; an onset further in the past is drawn by the next regular frame, and the onset
    gate decides whether it still flashes). The caller drops a regular frame that would
    follow a beat frame by less than ``MIN_GAP_S``, so a strip never gets two frames at once.
    """
    if beat_send is not None and now - MIN_GAP_S <= beat_send < next_regular:
        return max(beat_send, now), True
    return next_regular, False


class OnsetGate:
    """Per device: which beats flash, and since when.

    A beat flashes when the device saw its onset coming (rendered it as the *next* beat
    before it happened, within ``match`` of a period) and its first frame is at most
    ``late_limit_s`` after the onset. Beats are matched by time, not by index: the
    tracker's beat numbers count the beats it emitted, which fall behind the grid when
    it skips one. The flash's start is remembered, so a later correction of the grid (the
    beat's own event arriving 50-150 ms after it) neither moves nor re-triggers it.
    """

    def __init__(self, late_limit_s: float = 0.06, match: float = 0.3):
        self.late_limit_s, self.match = late_limit_s, match
        self._expected: collections.deque[float] = collections.deque(maxlen=8)
        self._start: float | None = None

    def flash_age(self, onset: float, next_onset: float, t: float, period: float) -> float | None:
        """Seconds since the current beat's flash started at display time ``t`` (None: no flash).

        ``onset`` / ``next_onset`` are the current and next grid beats at ``t``.
        """
        tol = self.match * period
        if self._start is not None and self._start >= onset - tol:
            age: float | None = t - self._start
        elif t - onset <= self.late_limit_s and any(abs(e - onset) <= tol for e in self._expected):
            self._start, age = t, 0.0
        else:
            age = None
        if next_onset > t and (not self._expected or abs(self._expected[-1] - next_onset) > 1e-4):
            self._expected.append(next_onset)
        return age


class TapCalibrator:
    """Learn the light offset from taps against the predicted beats.

    Parameters
    ----------
    min_taps : int
        Accepted taps needed before an offset is proposed.
    window : int
        Only the latest taps count (the user may drift or the setup may change).
    max_error : float
        Taps further than this fraction of a beat period from any beat are rejected.
    max_spread_s : float
        Robust spread (1.4826 x MAD) above which the taps are too inconsistent to learn from.
    """

    def __init__(self, *, min_taps: int = 6, window: int = 16, max_error: float = 0.3,
                 max_spread_s: float = 0.05):
        self.min_taps, self.max_error, self.max_spread_s = min_taps, max_error, max_spread_s
        self.errors: collections.deque[float] = collections.deque(maxlen=window)
        self.rejected = 0
        self.offset_s: float | None = None

    def tap(self, t: float, nearest: tuple[float, float] | None) -> float | None:
        """Record a tap at wall time ``t`` given ``(nearest predicted beat, period)``.

        Returns the learned offset (s) once the taps agree, else None.
        """
        if nearest is None or abs(t - nearest[0]) > self.max_error * nearest[1]:
            self.rejected += 1
            TAPS.labels("rejected").inc()
            return None
        TAPS.labels("accepted").inc()
        self.errors.append(t - nearest[0])
        if len(self.errors) < self.min_taps:
            return None
        med = statistics.median(self.errors)
        spread = 1.4826 * statistics.median(abs(e - med) for e in self.errors)
        if spread > self.max_spread_s:
            return None
        inliers = [e for e in self.errors if abs(e - med) <= max(3 * spread, 0.01)]
        self.offset_s = statistics.median(inliers)
        return self.offset_s


class LightTiming:
    """The global offset every device reads each frame, set by hand or by calibration."""

    def __init__(self, offset_s: float = 0.0, calibrator: TapCalibrator | None = None):
        self._lock = threading.Lock()
        self.offset_s = offset_s
        self.calibrator = calibrator or TapCalibrator()
        publish_role("led")                # this process renders lights: its LED metrics are its own
        OFFSET.set(offset_s)

    def set_offset(self, offset_s: float) -> None:
        self.offset_s = offset_s
        OFFSET.set(offset_s)

    def tap(self, t: float, nearest: tuple[float, float] | None) -> float | None:
        """Feed a tap; adopt the learned offset when there is one."""
        with self._lock:
            learned = self.calibrator.tap(t, nearest)
            if learned is not None:
                self.set_offset(learned)
            return learned
