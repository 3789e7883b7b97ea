"""Many streams through one processor: :class:`BeatBatch`.

Each stream keeps its own state - feature buffers, LSTM state, tracker posterior - in its own
:class:`~processors.beat.processor.BeatProcessor`; the batch advances all streams that have new
audio together (:meth:`BeatProcessor.process_many`): one FFT call, one network step per frame and
one tracker step per frame for all of them. Streams come and go (``add`` / ``remove``) as a
processor daemon gains and loses the leases of its sources.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping

import numpy as np

from .processor import BeatProcessor
from .tracker import Beat, share_rows

__all__ = ["BeatBatch"]


class BeatBatch:
    """Per-stream beat processors advanced in batches.

    Parameters
    ----------
    make_processor : callable or None
        ``make_processor() -> BeatProcessor`` for :meth:`add` without a processor; None builds
        ``BeatProcessor(**processor_kwargs)``.
    **processor_kwargs
        Passed to :class:`BeatProcessor` when ``make_processor`` is None.

    Examples
    --------
    >>> batch = BeatBatch(backend="dsp")
    >>> batch.add("a"); batch.add("b")
    >>> beats = batch.process({"a": chunk_a, "b": chunk_b})   # {"a": [...], "b": [...]}
    """

    def __init__(self, make_processor: Callable[[], BeatProcessor] | None = None, **processor_kwargs) -> None:
        if make_processor is not None and processor_kwargs:
            raise ValueError("give make_processor or processor keyword arguments, not both")
        self._make = make_processor or (lambda: BeatProcessor(**processor_kwargs))
        self._procs: dict[Hashable, BeatProcessor] = {}

    # -- membership -------------------------------------------------------------------
    def add(self, key: Hashable, processor: BeatProcessor | None = None) -> BeatProcessor:
        """Start tracking stream ``key`` (with ``processor``, or a new one); returns the processor."""
        if key in self._procs:
            raise ValueError(f"stream {key!r} is already in the batch")
        proc = processor if processor is not None else self._make()
        if not isinstance(proc, BeatProcessor):
            raise TypeError(f"make_processor must return a BeatProcessor, got {type(proc).__name__}")
        self._procs[key] = proc
        self._regroup()
        return proc

    def remove(self, key: Hashable) -> BeatProcessor | None:
        """Stop tracking stream ``key``; returns its processor (None if it was not there)."""
        proc = self._procs.pop(key, None)
        if proc is not None:
            self._regroup()
        return proc

    def __contains__(self, key: object) -> bool:
        return key in self._procs

    def __len__(self) -> int:
        return len(self._procs)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._procs)

    def __getitem__(self, key: Hashable) -> BeatProcessor:
        return self._procs[key]

    # -- processing -------------------------------------------------------------------
    def process(self, chunks: Mapping[Hashable, np.ndarray]) -> dict[Hashable, list[Beat]]:
        """Feed one chunk to each of some streams; returns the new beats per stream.

        Parameters
        ----------
        chunks : mapping of key -> np.ndarray
            Mono float32 samples per stream (any length; streams without new audio are left out).

        Returns
        -------
        dict
            ``key -> list of Beat`` for every key in ``chunks``.

        Raises
        ------
        KeyError
            For a key that was not added.
        """
        missing = [k for k in chunks if k not in self._procs]
        if missing:
            raise KeyError(f"streams not in the batch: {missing!r}")
        out: dict[Hashable, list[Beat]] = {}
        groups: dict[tuple, list[Hashable]] = {}
        for key, proc in self._procs.items():  # insertion order: the order of the shared rows
            if key in chunks:
                groups.setdefault(proc.batch_key, []).append(key)
        for keys in groups.values():
            beats = BeatProcessor.process_many([self._procs[k] for k in keys], [chunks[k] for k in keys])
            out.update(zip(keys, beats))
        return out

    def flush(self, key: Hashable) -> list[Beat]:
        """End of stream ``key``: its last beats (the stream stays in the batch; see :meth:`reset`)."""
        return self._procs[key].flush()

    def reset(self, key: Hashable) -> None:
        """Restart stream ``key`` (stream time back to 0)."""
        self._procs[key].reset()

    def _regroup(self) -> None:
        # the trackers of each group live in rows of one matrix, in insertion order, so that a
        # batch of the whole group steps without copying posteriors
        groups: dict[tuple, list[BeatProcessor]] = {}
        for proc in self._procs.values():
            groups.setdefault(proc.batch_key, []).append(proc)
        for procs in groups.values():
            share_rows([p.tracker for p in procs])
