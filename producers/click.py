"""Metronome source: clicks at known beat times, for tests and demos."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .frames import DEFAULT_HOP, DEFAULT_SR, Chunk, Pacer, Source

__all__ = ["ClickSource", "click_times", "CLICK_S"]

CLICK_S = 0.020      # length of one click burst (s)
_DECAY_S = 0.004     # exponential decay constant: ~-43 dB at the end of the burst
_BEAT = (1000.0, 0.5)    # (Hz, peak amplitude) of an ordinary beat
_ACCENT = (1500.0, 0.9)  # downbeat: higher and louder


def _check(bpm: float, meter: int, duration: float | None) -> None:
    if isinstance(bpm, bool) or not isinstance(bpm, (int, float)) or not 0 < bpm <= 400:
        raise ValueError(f"bpm={bpm!r} must be in (0, 400]")
    if isinstance(meter, bool) or not isinstance(meter, int) or meter < 1:
        raise ValueError(f"meter={meter!r} must be a positive integer")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration={duration!r} must be a positive number of seconds")


def click_times(bpm: float, duration: float, meter: int = 4) -> list[tuple[float, int]]:
    """The ground truth of a :class:`ClickSource`.

    Returns
    -------
    list of (time, beat_in_bar)
        Beat onset times in seconds (``k * 60 / bpm``, every ``t < duration``) and the
        1-based position in the bar (1 = downbeat). A rendered click starts at sample
        ``round(time * sr)``.
    """
    _check(bpm, meter, duration)
    period = 60.0 / bpm
    count = math.ceil(duration / period - 1e-9)
    return [(k * period, k % meter + 1) for k in range(count)]


def _burst(freq: float, amp: float, sr: int) -> np.ndarray:
    t = np.arange(max(1, round(CLICK_S * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t / _DECAY_S)).astype(np.float32)


class ClickSource(Source):
    """A metronome: a decaying 1 kHz burst per beat, 1.5 kHz and louder on downbeats.

    Parameters
    ----------
    bpm : float
        Tempo, in (0, 400].
    sr, hop : int
        Target rate (Hz) and samples per chunk (1 to 20 ms worth).
    realtime : bool
        Pace chunks in real time like :class:`producers.file.FileSource`.
    meter : int
        Beats per bar; beat 1 of each bar is accented.
    duration : float, optional
        Seconds of audio; None runs until closed. The last chunk may be shorter.
    start_wall_ns : int, optional
        Wall-clock time of sample 0; default ``time.time_ns()`` at the first ``next()``.

    See Also
    --------
    click_times : the beats this source renders.
    """

    def __init__(self, bpm: float = 120, *, sr: int = DEFAULT_SR, hop: int = DEFAULT_HOP,
                 realtime: bool = True, meter: int = 4, duration: float | None = None,
                 start_wall_ns: int | None = None):
        super().__init__(sr, hop)
        _check(bpm, meter, duration)
        self.bpm, self.meter, self.duration = float(bpm), meter, duration
        self.realtime = bool(realtime)
        self.stats["late_chunks"] = 0
        self._period = 60.0 * self.sr / self.bpm  # samples per beat (not an integer)
        self._beat = _burst(*_BEAT, self.sr)
        self._accent = _burst(*_ACCENT, self.sr)
        self._pacer = Pacer(self.sr, self.realtime, start_wall_ns, self._stop)

    @property
    def start_wall_ns(self) -> int | None:
        """Wall-clock time of sample 0 (known once iteration has started)."""
        return self._pacer.start_wall_ns

    def render(self, start: int, n: int) -> np.ndarray:
        """Samples ``[start, start + n)`` of the click track (float32)."""
        out = np.zeros(n, np.float32)
        width = len(self._beat)
        first = max(0, math.floor((start - width) / self._period))
        last = math.floor((start + n) / self._period)  # the lo < hi test trims extras
        for k in range(first, last + 1):
            if self.duration is not None and k * 60.0 / self.bpm >= self.duration:
                break  # click_times' rule: beats strictly before the end
            onset = round(k * self._period)
            lo, hi = max(start, onset), min(start + n, onset + width)
            if lo < hi:
                burst = self._accent if k % self.meter == 0 else self._beat
                out[lo - start:hi - start] += burst[lo - onset:hi - onset]
        return out

    def _chunks(self) -> Iterator[Chunk]:
        total = None if self.duration is None else round(self.duration * self.sr)
        index = 0
        while not self.closed and (total is None or index < total):
            n = self.hop if total is None else min(self.hop, total - index)
            samples = self.render(index, n)
            wall = self._pacer.stamp(index, n)
            self.stats["late_chunks"] = self._pacer.late
            if self.closed:
                return
            yield Chunk(samples, index, wall)
            index += n
