"""Chunks, and the machinery every audio source shares.

A source is an iterator of :class:`Chunk`: float32 mono audio at the target rate ``sr``,
``hop`` samples at a time, stamped with the index of its first sample since stream start
and the wall-clock time (ns) of that sample (ARCHITECTURE.md, "Time").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Chunk", "Source", "Rechunker", "Pacer", "StreamResampler", "check_rate_hop",
           "scrub_nonfinite", "DEFAULT_SR", "DEFAULT_HOP", "MAX_HOP_S", "NS"]

DEFAULT_SR = 22050
DEFAULT_HOP = 441  # 20 ms at 22050 Hz
MAX_HOP_S = 0.020  # the spine promises frames of at most 20 ms
NS = 1_000_000_000


@dataclass(slots=True)
class Chunk:
    """One hop of audio.

    Attributes
    ----------
    samples : np.ndarray [shape=(n,), dtype=float32]
        Mono audio at the source's ``sr``; ``n == hop`` except possibly for the last
        chunk of a file.
    sample_index : int
        Index of the first sample since stream start, at ``sr``. Stream time in
        seconds is ``sample_index / sr``. A jump larger than the previous chunk's length
        means samples were dropped (counted in the source's ``stats``).
    wall_ns : int
        Wall-clock time (``time.time_ns()`` scale) of the first sample.
    """

    samples: np.ndarray
    sample_index: int
    wall_ns: int


def check_rate_hop(sr: int, hop: int) -> tuple[int, int]:
    """Validate a target rate and hop; return them as ints.

    Raises
    ------
    ValueError
        If ``sr`` is not a positive integer or ``hop`` is outside ``[1, 20 ms * sr]``.
    """
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr={sr!r} must be a positive integer (Hz)")
    if isinstance(hop, bool) or not isinstance(hop, (int, np.integer)):
        raise ValueError(f"hop={hop!r} must be an integer number of samples")
    max_hop = int(sr * MAX_HOP_S + 1e-9)
    if not 1 <= hop <= max(max_hop, 1):
        raise ValueError(f"hop={hop} must be between 1 and {max_hop} samples "
                         f"(20 ms at sr={sr})")
    return int(sr), int(hop)


def scrub_nonfinite(x: np.ndarray) -> int:
    """Replace NaN/inf in ``x`` by 0 in place; return how many values were replaced."""
    bad = ~np.isfinite(x)
    n = int(np.count_nonzero(bad))
    if n:
        x[bad] = 0.0
    return n


class Rechunker:
    """Cut a stream of arbitrary-sized blocks into ``hop``-sized pieces."""

    def __init__(self, hop: int):
        self.hop = hop
        self._parts: list[np.ndarray] = []
        self._held = 0

    def __len__(self) -> int:
        return self._held

    def push(self, x: np.ndarray) -> Iterator[np.ndarray]:
        """Add samples; yield every complete hop now available."""
        if len(x):
            self._parts.append(x)
            self._held += len(x)
        while self._held >= self.hop:
            buf = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
            # Copy each piece so a consumer may keep it without pinning the whole buffer.
            yield np.array(buf[:self.hop], dtype=np.float32, copy=True)
            rest = buf[self.hop:]
            self._parts = [rest] if len(rest) else []
            self._held = len(rest)

    def flush(self) -> np.ndarray:
        """Return (and forget) the remaining partial hop, possibly empty."""
        out = (np.concatenate(self._parts) if self._parts else np.zeros(0)).astype(np.float32)
        self._parts, self._held = [], 0
        return out

    def clear(self) -> int:
        """Drop the partial hop; return how many samples were dropped."""
        n = self._held
        self._parts, self._held = [], 0
        return n


class Pacer:
    """Release chunks in real time and stamp their wall-clock time.

    The clock starts at the first :meth:`stamp` call (not at construction: a source may
    be built long before it is read). A chunk is released once its *last* sample is due,
    ``start + (sample_index + len) / sr`` on the monotonic clock, as a microphone would
    deliver it, so downstream latency figures stay honest. Due times are computed from
    the start, never from the previous chunk, so pacing does not drift; a consumer that
    falls behind gets chunks immediately (nothing is dropped).
    """

    def __init__(self, sr: int, realtime: bool, start_wall_ns: int | None,
                 stop: threading.Event):
        self.sr = sr
        self.realtime = realtime
        self.start_wall_ns = start_wall_ns
        self._stop = stop
        self._t0: int | None = None
        self.late = 0  # chunks released more than one chunk after their due time

    def stamp(self, sample_index: int, n: int) -> int:
        """Wait (if real time) until the chunk is due; return its ``wall_ns``."""
        if self._t0 is None:
            self._t0 = time.monotonic_ns()
            if self.start_wall_ns is None:
                self.start_wall_ns = time.time_ns()
        if self.realtime:
            due = self._t0 + (sample_index + n) * NS // self.sr
            delay = due - time.monotonic_ns()
            if delay > 0:
                self._stop.wait(delay / NS)  # interruptible by close()
            elif -delay > n * NS // self.sr:
                self.late += 1
        return self.start_wall_ns + sample_index * NS // self.sr


class Source:
    """Base class: iterator protocol, ``stats``, ``close()`` and context manager.

    Subclasses implement ``_chunks()``, a generator of :class:`Chunk`, and may override
    ``_release()`` to free files, processes or devices.
    """

    def __init__(self, sr: int = DEFAULT_SR, hop: int = DEFAULT_HOP):
        self.sr, self.hop = check_rate_hop(sr, hop)
        self.stats: dict[str, int] = {"chunks": 0, "samples": 0, "overflows": 0,
                                      "dropped_samples": 0, "nonfinite_samples": 0}
        self._stop = threading.Event()
        self._gen: Iterator[Chunk] | None = None
        self._released = False
        self._release_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def _chunks(self) -> Iterator[Chunk]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _release(self) -> None:
        """Free resources; called once by :meth:`close`."""

    def __iter__(self) -> Source:
        return self

    def __next__(self) -> Chunk:
        if self._stop.is_set():
            self._release_once()
            raise StopIteration
        if self._gen is None:
            self._gen = self._chunks()
        try:
            chunk = next(self._gen)
        except StopIteration:
            if self._stop.is_set():  # closed from another thread while we were reading
                self._release_once()
            raise
        self.stats["chunks"] += 1
        self.stats["samples"] += len(chunk.samples)
        return chunk

    def close(self) -> None:
        """Stop the source and free its resources.

        Safe to call twice, and from another thread: a ``next()`` blocked in that thread
        then ends with ``StopIteration`` and frees the resources itself, so a file or
        device is never closed under a running read.
        """
        if self._stop.is_set() and self._released:
            return
        self._stop.set()
        if self._gen is not None:
            try:
                self._gen.close()
            except ValueError:  # running in another thread: it sees _stop and ends
                return
        self._release_once()

    def _release_once(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self._release()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a finalizer must not raise, and may run at interpreter exit
            pass


class StreamResampler:
    """Causal, chunked resampling with soxr (quality 'HQ'); identity when rates match.

    soxr's stream keeps its filter state between calls and compensates its own delay,
    so output sample ``j`` corresponds to input time ``j / out_rate``; it simply holds
    back the last few milliseconds until :meth:`flush`.
    """

    def __init__(self, in_rate: float, out_rate: int):
        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = None
        self.reset()

    def reset(self) -> None:
        """Forget the filter state (after a gap in the input)."""
        if self.in_rate != self.out_rate:
            import soxr  # imported here so `import producers` stays light
            self._rs = soxr.ResampleStream(self.in_rate, self.out_rate, 1,
                                           dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x if self._rs is None else self._rs.resample_chunk(x)

    def flush(self) -> np.ndarray:
        """Return the held-back tail at the end of the input."""
        if self._rs is None:
            return np.zeros(0, np.float32)
        return self._rs.resample_chunk(np.zeros(0, np.float32), last=True)
