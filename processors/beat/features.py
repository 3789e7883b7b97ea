"""Streaming log-filtered spectrogram front end (BeatNet's input features, without madmom).

The conventions reproduce madmom's ``FramedSignalProcessor`` -> ``ShortTimeFourierTransform`` ->
``FilteredSpectrogram`` (``LogarithmicFilterbank``) -> ``LogarithmicSpectrogram`` ->
``SpectrogramDifference(positive_diffs=True)`` chain as BeatNet configures it:

* 22050 Hz mono, ``frame_size=1411`` (64 ms), ``hop_length=441`` (20 ms, ``fps=50``);
* frames are *centred*: frame ``k`` covers samples ``k*441-705 .. k*441+705``; samples before 0 and
  after the end of the stream are zeros;
* symmetric Hann window (``np.hanning``), FFT of ``frame_size`` points, the first ``frame_size // 2``
  magnitude bins, with bin frequencies spaced ``sr / (2 * (frame_size // 2))`` as madmom does;
* 24 bands per octave triangular filters between 30 Hz and 17 kHz, each normalised to unit area,
  duplicate filters removed (``unique_filters=True``), giving 136 bands;
* ``log10(1 + x)``, then the positive difference to the previous frame (``diff_frames=1`` for
  ``diff_ratio=0.5``), stacked: 272 values per frame.

Causality: in streaming mode frame ``k`` is emitted only once sample ``k*hop_length + frame_size//2``
has arrived (a look-ahead of half a window, 32 ms).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "FRAME_SIZE",
    "HOP_LENGTH",
    "SR",
    "log_frequencies",
    "frequencies_to_bins",
    "log_filterbank",
    "StreamingSpectrogram",
    "beatnet_features",
]

SR = 22050
FRAME_SIZE = 1411  # int(0.064 * 22050), as BeatNet
HOP_LENGTH = 441  # int(0.02 * 22050): 50 frames/s


def log_frequencies(*, bands_per_octave: int, fmin: float, fmax: float, fref: float = 440.0) -> np.ndarray:
    """Logarithmically spaced frequencies aligned to ``fref`` (madmom ``log_frequencies``).

    Returns
    -------
    np.ndarray [shape=(n,)]
        Frequencies in Hz within ``[fmin, fmax]``.
    """
    left = np.floor(np.log2(float(fmin) / fref) * bands_per_octave)
    right = np.ceil(np.log2(float(fmax) / fref) * bands_per_octave)
    freqs = fref * 2.0 ** (np.arange(left, right) / float(bands_per_octave))
    freqs = freqs[np.searchsorted(freqs, fmin):]
    freqs = freqs[: np.searchsorted(freqs, fmax, "right")]
    return freqs


def frequencies_to_bins(frequencies: np.ndarray, bin_frequencies: np.ndarray, *, unique: bool = True) -> np.ndarray:
    """Map frequencies (Hz) to the nearest FFT bin index (madmom ``frequencies2bins``)."""
    frequencies = np.asarray(frequencies)
    bin_frequencies = np.asarray(bin_frequencies)
    idx = bin_frequencies.searchsorted(frequencies)
    idx = np.clip(idx, 1, len(bin_frequencies) - 1)
    left = bin_frequencies[idx - 1]
    right = bin_frequencies[idx]
    idx -= frequencies - left < right - frequencies
    if unique:
        idx = np.unique(idx)
    return idx


@lru_cache(maxsize=8)
def log_filterbank(
    *, sr: int = SR, frame_size: int = FRAME_SIZE, bands_per_octave: int = 24, fmin: float = 30.0, fmax: float = 17000.0
) -> np.ndarray:
    """Normalised triangular log-spaced filterbank (madmom ``LogarithmicFilterbank``), built once per
    layout and shared read-only: it was most of the cost of a new stream (2 ms), which adaptive
    quality pays for every source it moves between levels.

    Returns
    -------
    np.ndarray [shape=(frame_size // 2, n_bands), dtype=float32]
        Weights applied to the magnitude spectrum: ``bands = mag @ fb`` (read-only).
    """
    n_bins = frame_size >> 1
    # madmom derives bin frequencies from 2 * n_bins points, not frame_size (1410 vs 1411 here)
    bin_freqs = np.fft.fftfreq(n_bins * 2, 1.0 / sr)[:n_bins]
    # not clipped to Nyquist: madmom keeps the top bin
    freqs = log_frequencies(bands_per_octave=bands_per_octave, fmin=fmin, fmax=fmax)
    bins = frequencies_to_bins(freqs, bin_freqs, unique=True)
    n_bands = len(bins) - 2
    fb = np.zeros((n_bins, n_bands), dtype=np.float32)
    for band in range(n_bands):  # built once at construction, not in the per-frame path
        start, center, stop = (int(b) for b in bins[band : band + 3])
        if stop - start < 2:
            # too narrow: a one-bin filter
            center, stop = start, start + 1
        height = 2.0 / (stop - start)  # unit area
        data = np.zeros(stop - start)
        data[: center - start] = np.linspace(0, height, center - start, endpoint=False)
        data[center - start :] = np.linspace(height, 0, stop - center, endpoint=False)
        fb[start:stop, band] = data
    fb.flags.writeable = False
    return fb


class StreamingSpectrogram:
    """Causal, chunk-by-chunk log-filtered spectrogram with positive first difference.

    Parameters
    ----------
    sr : int
        Sample rate in Hz of the samples fed to :meth:`process`.
    frame_size : int
        Analysis window in samples (centred on ``k * hop_length``).
    hop_length : int
        Hop in samples; frames per second ``fps = sr / hop_length``.
    bands_per_octave, fmin, fmax
        Filterbank layout (see :func:`log_filterbank`).
    diff : bool
        Stack the positive first difference after the bands (BeatNet layout, 2 * n_bands values).

    Notes
    -----
    ``process`` returns every frame whose last sample has arrived, as ``float32`` array
    ``[shape=(n_new_frames, n_features)]``; ``flush`` completes the stream with zeros, giving
    ``ceil(n_samples / hop_length)`` frames in total like madmom.
    """

    def __init__(
        self,
        *,
        sr: int = SR,
        frame_size: int = FRAME_SIZE,
        hop_length: int = HOP_LENGTH,
        bands_per_octave: int = 24,
        fmin: float = 30.0,
        fmax: float = 17000.0,
        diff: bool = True,
    ) -> None:
        if int(sr) != sr or sr <= 0:
            raise ValueError(f"sr={sr!r} must be a positive integer")
        if frame_size < 2 * hop_length // 2 or frame_size <= 0:
            raise ValueError(f"frame_size={frame_size!r} must be a positive number of samples >= hop_length")
        if hop_length <= 0:
            raise ValueError(f"hop_length={hop_length!r} must be a positive integer")
        self.sr = int(sr)
        self.frame_size = int(frame_size)
        self.hop_length = int(hop_length)
        self.fps = self.sr / self.hop_length
        self.diff = bool(diff)
        self._window = np.hanning(self.frame_size).astype(np.float32)
        self._fb = log_filterbank(
            sr=self.sr, frame_size=self.frame_size, bands_per_octave=bands_per_octave, fmin=fmin, fmax=fmax
        )
        self.n_bands = self._fb.shape[1]
        self.n_features = self.n_bands * (2 if self.diff else 1)
        self.reset()

    @property
    def latency(self) -> float:
        """Look-ahead in seconds: half an analysis window."""
        return (self.frame_size // 2) / self.sr

    def reset(self) -> None:
        """Start a new stream."""
        half = self.frame_size // 2
        # buffer of the zero-padded signal: padded index i <-> stream sample i - half
        self._buf = np.zeros(half, dtype=np.float32)
        self._buf_start = 0  # padded index of self._buf[0]
        self._n_samples = 0  # stream samples received
        self._n_frames = 0  # frames emitted
        self._prev = None  # last log-band row, for the difference
        self.last_rms = np.zeros(0, dtype=np.float32)  # RMS of the frames returned by the last call

    @property
    def n_frames(self) -> int:
        """Frames emitted so far."""
        return self._n_frames

    @property
    def n_samples(self) -> int:
        """Samples received so far."""
        return self._n_samples

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed samples, return the newly complete frames.

        Parameters
        ----------
        samples : np.ndarray [shape=(n,), dtype=float32]
            Next mono samples (already sanitised).

        Returns
        -------
        np.ndarray [shape=(m, n_features), dtype=float32]
        """
        return self.finish(self.bands(self.take(samples)))

    def flush(self) -> np.ndarray:
        """Zero-pad the end of the stream and return the remaining frames (``ceil(n/hop)`` in all)."""
        return self.finish(self.bands(self.take_flush()))

    # The three stages of process(), separate so that many streams can share one FFT call:
    # take (per stream: buffering) -> bands (stateless: FFT + filterbank) -> finish (per stream: diff).
    def take(self, samples: np.ndarray) -> np.ndarray:
        """Buffer samples; return the newly complete raw frames ``[shape=(m, frame_size)]`` and set
        :attr:`last_rms`."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._n_samples += samples.size
        self._buf = np.concatenate([self._buf, samples])
        return self._take(limit=None)

    def take_flush(self) -> np.ndarray:
        """Zero-pad the end of the stream; the remaining raw frames (see :meth:`take`)."""
        total = -(-self._n_samples // self.hop_length)
        if total <= self._n_frames:
            self.last_rms = np.zeros(0, dtype=np.float32)
            return np.zeros((0, self.frame_size), dtype=np.float32)
        need_end = (total - 1) * self.hop_length + self.frame_size  # padded index
        have_end = self._buf_start + self._buf.size
        if need_end > have_end:
            self._buf = np.concatenate([self._buf, np.zeros(need_end - have_end, dtype=np.float32)])
        return self._take(limit=total)

    def bands(self, frames: np.ndarray) -> np.ndarray:
        """Log-filtered magnitude spectrum ``[shape=(m, n_bands), dtype=float32]`` of raw frames
        (any number of frames, from any streams with this configuration)."""
        if frames.shape[0] == 0:
            return np.zeros((0, self.n_bands), dtype=np.float32)
        spec = np.abs(np.fft.rfft(frames * self._window, n=self.frame_size, axis=1))[:, : self._fb.shape[0]]
        return np.log10(1.0 + spec.astype(np.float32) @ self._fb)

    def finish(self, bands: np.ndarray) -> np.ndarray:
        """This stream's features from its :meth:`bands`: stacked with the positive difference."""
        if bands.shape[0] == 0:
            return np.zeros((0, self.n_features), dtype=np.float32)
        out = bands
        if self.diff:
            prev = np.empty_like(bands)
            prev[0] = bands[0] if self._prev is None else self._prev  # first frame: zero diff
            prev[1:] = bands[:-1]
            out = np.concatenate([bands, np.maximum(bands - prev, 0.0)], axis=1)
        self._prev = bands[-1].copy()
        return out.astype(np.float32, copy=False)

    def _take(self, *, limit: int | None) -> np.ndarray:
        have_end = self._buf_start + self._buf.size
        # frame k is complete when padded index k*hop + frame_size - 1 exists
        n_avail = (have_end - self.frame_size) // self.hop_length + 1 if have_end >= self.frame_size else 0
        if limit is not None:
            n_avail = min(n_avail, limit)
        n_new = n_avail - self._n_frames
        if n_new <= 0:
            self.last_rms = np.zeros(0, dtype=np.float32)
            return np.zeros((0, self.frame_size), dtype=np.float32)
        off = self._n_frames * self.hop_length - self._buf_start
        seg = self._buf[off : off + (n_new - 1) * self.hop_length + self.frame_size]
        if n_new == 1:  # the live case (20 ms chunks): no strided view needed
            frames = seg[None, : self.frame_size]
        else:
            frames = np.lib.stride_tricks.as_strided(
                seg, shape=(n_new, self.frame_size), strides=(seg.strides[0] * self.hop_length, seg.strides[0]), writeable=False
            )
        # frame RMS (unwindowed), used downstream to gate silence
        self.last_rms = np.sqrt(np.einsum("ij,ij->i", frames, frames) / self.frame_size).astype(np.float32)
        self._n_frames += n_new
        # keep only what the next frame needs (frames stays valid: the buffer is replaced, not changed)
        keep_from = self._n_frames * self.hop_length
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return frames


def beatnet_features(y: np.ndarray, *, sr: int = SR) -> np.ndarray:
    """Whole-signal BeatNet features (same result as streaming then flushing).

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono audio at ``sr`` (22050 Hz for BeatNet).

    Returns
    -------
    np.ndarray [shape=(ceil(n / 441), 272), dtype=float32]
    """
    if sr != SR:
        raise ValueError(f"sr={sr} must be {SR} for BeatNet features")
    fe = StreamingSpectrogram(sr=sr)
    return np.concatenate([fe.process(y), fe.flush()])
