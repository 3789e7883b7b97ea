"""Chroma for harmony, hop by hop, and its beat-synchronous means.

Per 20 ms hop, from a Hann-windowed ``n_fft``-sample frame (4096 = 186 ms at 22050 Hz) ending at
the hop's last sample (causal): the frame's power spectrum folded onto the 12 pitch classes by
librosa's chroma filterbank (:func:`librosa.filters.chroma`, A440, C first), which is what
``librosa.feature.chroma_stft(..., center=False, norm=None, tuning=0)`` computes frame by frame,
and the frame's energy (dB). :func:`beat_sync` averages the frames between two beat times.

Why ``chroma_stft``'s filterbank and not ``chroma_cqt``: a CQT needs windows of up to a second for
its lowest octaves, centred on the frame, so live it would be recomputed over a buffer at every
beat (about ten times the cost per stream) and would reach half a second into the future or lag by
it; the STFT chroma is one rfft and one small matrix product per hop, strictly causal, and its
filterbank weights the octaves around 880 Hz (the chords' register: comping, pads, guitars) over
the bass, whose semitones a 4096-point frame cannot separate below ~90 Hz anyway.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import get_window

from beatbus.framing import HopFrames

__all__ = ["ChromaFrames", "beat_sync", "chroma_filterbank"]


def chroma_filterbank(sr: int, n_fft: int) -> np.ndarray:
    """librosa's STFT chroma filterbank at A440, shape (12, n_fft // 2 + 1), C first.

    Raises
    ------
    DependencyError
        librosa (the ``audio`` extra) is not installed.
    """
    from beatbus.errors import require

    filters = require("librosa.filters", "harmony analysis")
    return np.asarray(filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=12), dtype=np.float32)


class ChromaFrames:
    """Per-hop chroma and energy of one stream.

    Parameters
    ----------
    sr : int
        Sample rate (Hz).
    hop_length : int
        Samples per frame (441 = 20 ms at 22050 Hz).
    n_fft : int
        Analysis window (samples).

    Examples
    --------
    >>> cf = ChromaFrames(sr=22050)
    >>> times, chroma, energy = cf.process(np.zeros(4410, dtype=np.float32))   # 10 frames
    """

    def __init__(self, *, sr: int = 22050, hop_length: int = 441, n_fft: int = 4096):
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 8000:
            raise ValueError(f"sr={sr!r} must be an integer sample rate >= 8000 Hz")
        if (isinstance(hop_length, bool) or not isinstance(hop_length, (int, np.integer))
                or not 16 <= hop_length <= n_fft):
            raise ValueError(f"hop_length={hop_length!r} must be an integer in [16, n_fft]")
        self.sr, self.hop_length, self.n_fft = int(sr), int(hop_length), int(n_fft)
        self.fps = self.sr / self.hop_length
        # the periodic Hann window librosa's STFT uses, so the frames are chroma_stft's
        self.window = get_window("hann", self.n_fft, fftbins=True).astype(np.float32)
        # transposed and contiguous: (frames, bins) @ (bins, 12) is the fast path
        self.fb_t = np.ascontiguousarray(chroma_filterbank(self.sr, self.n_fft).T)
        self.frames = HopFrames(self.n_fft, self.hop_length)

    @property
    def centre_offset(self) -> float:
        """Seconds from a frame's window centre to its end (the frame's time is its end)."""
        return self.n_fft / 2 / self.sr

    def reset(self) -> None:
        """Forget the stream (time restarts at 0)."""
        self.frames.reset()

    def process(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feed samples (mono float, any length); return ``(times [n], chroma [n, 12], energy_db [n])``
        of the frames completed. ``times`` are the frames' ends (stream s since the state's start).
        """
        first = self.frames.n_frames
        frames = self.frames.push(samples)
        n = frames.shape[0]
        if not n:
            return np.zeros(0), np.zeros((0, 12), np.float32), np.zeros(0, np.float32)
        spec = np.fft.rfft(frames * self.window, axis=1)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        chroma = power @ self.fb_t
        energy = 10.0 * np.log10(power.mean(axis=1) + 1e-12)
        times = (first + 1 + np.arange(n)) * self.hop_length / self.sr
        return times, chroma.astype(np.float32), energy.astype(np.float32)

    def process_offline(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole signal at once (the same numbers as streaming it)."""
        self.reset()
        return self.process(y)


def beat_sync(times: np.ndarray, chroma: np.ndarray, start: float, end: float) -> tuple[np.ndarray, int]:
    """Mean chroma of the frames whose time lies in ``[start, end)``, and how many there were.

    ``times`` are the frames' window centres (frame end minus :attr:`ChromaFrames.centre_offset`).
    """
    sel = (times >= start) & (times < end)
    k = int(np.count_nonzero(sel))
    return (chroma[sel].mean(axis=0) if k else np.zeros(chroma.shape[1], np.float32)), k
