"""Audio file source: decode, downmix, resample and pace a file like a live input."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from beatbus.decode import open_decoder

from .errors import AudioSourceError
from .frames import DEFAULT_HOP, DEFAULT_SR, Chunk, Pacer, Rechunker, Source, StreamResampler, scrub_nonfinite

__all__ = ["FileSource"]


class FileSource(Source):
    """Stream an audio file as hop-sized chunks.

    The file is decoded block by block (streaming, not a whole-file load), so long files
    and endless loops use constant memory. WAV/FLAC/OGG go through soundfile, MP3 too when
    its libsndfile supports it, anything else through an ``ffmpeg`` subprocess.

    Parameters
    ----------
    path : str or PathLike
    sr : int
        Target sample rate (Hz); the file is resampled with soxr ('HQ').
    hop : int
        Samples per chunk at ``sr``, 1 to 20 ms worth.
    realtime : bool
        Release each chunk when its last sample is due on a monotonic clock started at the
        first ``next()``, as a microphone would. False: as fast as the consumer reads.
    loop : bool
        Restart at the end, continuing ``sample_index`` (seamless: the resampler keeps
        its state across the seam).
    start_wall_ns : int, optional
        Wall-clock time of sample 0; default ``time.time_ns()`` at the first ``next()``.
        Chunk ``k`` is stamped ``start_wall_ns + sample_index / sr``.
    decoder : {'auto', 'soundfile', 'ffmpeg'}
        Force a decoder (mainly for tests).

    Attributes
    ----------
    stats : dict
        ``chunks``, ``samples``, ``nonfinite_samples`` (NaN/inf values replaced by 0),
        ``late_chunks`` (released more than a chunk late), ``loops``, and ``overflows`` /
        ``dropped_samples`` (always 0: a file source never drops).

    Raises
    ------
    AudioSourceError
        At construction for a missing, empty, corrupt or unsupported file; while
        iterating for a file that decodes to no samples or fails mid-way.
    """

    def __init__(self, path: str | os.PathLike, *, sr: int = DEFAULT_SR,
                 hop: int = DEFAULT_HOP, realtime: bool = True, loop: bool = False,
                 start_wall_ns: int | None = None, decoder: str = "auto"):
        super().__init__(sr, hop)
        self.path = os.fspath(path)
        self.realtime, self.loop = bool(realtime), bool(loop)
        self.stats.update(late_chunks=0, loops=0)
        # Opened now, so a bad path fails before anything downstream starts.
        self._dec = open_decoder(self.path, decoder)
        self.file_rate, self.file_channels = self._dec.rate, self._dec.channels
        self._pacer = Pacer(self.sr, self.realtime, start_wall_ns, self._stop)

    @property
    def start_wall_ns(self) -> int | None:
        """Wall-clock time of sample 0 (known once iteration has started)."""
        return self._pacer.start_wall_ns

    def _chunks(self) -> Iterator[Chunk]:
        resample = StreamResampler(self.file_rate, self.sr)
        rechunk = Rechunker(self.hop)
        index = 0

        def emit(piece: np.ndarray) -> Iterator[Chunk]:
            nonlocal index
            wall = self._pacer.stamp(index, len(piece))
            self.stats["late_chunks"] = self._pacer.late
            if not self.closed:
                yield Chunk(piece, index, wall)
                index += len(piece)

        while not self.closed:
            decoded = 0
            for block in self._dec.blocks():
                self.stats["nonfinite_samples"] += scrub_nonfinite(block)
                mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
                decoded += len(mono)
                for piece in rechunk.push(resample(mono)):
                    yield from emit(piece)
                if self.closed:
                    return
            if not decoded:
                raise AudioSourceError(f"{self.path}: contains no audio samples")
            if not self.loop:
                break
            self.stats["loops"] += 1
        if self.closed:
            return
        for piece in rechunk.push(resample.flush()):
            yield from emit(piece)
        tail = rechunk.flush()
        if len(tail):
            yield from emit(tail)

    def _release(self) -> None:
        self._dec.close()
