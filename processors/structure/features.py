"""Frame features for structure analysis, streaming and whole-file, and their beat-synchronous means.

Per 20 ms hop, from a Hann-windowed 2048-sample frame (93 ms at 22050 Hz) ending at the hop's
last sample (causal):

- chroma (12): spectral power of 55 Hz - 5 kHz folded onto pitch classes (each bin split
  between its two nearest semitones);
- MFCC (13): log power of 40 mel bands (30 Hz - 8 kHz), DCT-II, coefficients 1-13;
- energy (1): 10 log10 of the frame's mean power (dB);
- onset strength (1): mean positive change of the log mel bands (for the fallback beat grid).

:class:`FrameFeatures` computes them hop by hop (``process``) or for a whole signal at once
(``process_offline``); both give the same numbers. :func:`beat_sync` averages frames between
beat times (a frame counts at its window's centre).
"""
from __future__ import annotations

import numpy as np

from beatbus.framing import HopFrames

__all__ = ["FrameFeatures", "beat_sync", "N_CHROMA", "N_MFCC", "DIM", "mel_filterbank",
           "chroma_filterbank"]

N_CHROMA, N_MFCC, N_MELS = 12, 13, 40
DIM = N_CHROMA + N_MFCC + 1     # chroma, mfcc, energy


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=float) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m, dtype=float) / 2595.0) - 1.0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int = N_MELS, fmin: float = 30.0, fmax: float = 8000.0) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), area-normalised; shape (n_mels, n_fft // 2 + 1)."""
    fmax = min(fmax, sr / 2)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, mid, hi = edges[i:i + 3]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / max(hi - lo, 1e-9))
    return fb


def chroma_filterbank(sr: int, n_fft: int, fmin: float = 55.0, fmax: float = 5000.0) -> np.ndarray:
    """Bins of ``fmin..fmax`` split linearly between their two nearest pitch classes; shape (12, bins)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((N_CHROMA, freqs.size))
    ok = (freqs >= fmin) & (freqs <= min(fmax, sr / 2))
    midi = 69.0 + 12.0 * np.log2(freqs[ok] / 440.0)
    lo = np.floor(midi)
    frac = midi - lo
    idx = np.flatnonzero(ok)
    np.add.at(fb, ((lo.astype(int)) % 12, idx), 1.0 - frac)
    np.add.at(fb, ((lo.astype(int) + 1) % 12, idx), frac)
    return fb


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II rows 1..n_out (row 0, the mean, is left out)."""
    k = np.arange(1, n_out + 1)[:, None]
    n = np.arange(n_in)[None, :]
    return np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


class FrameFeatures:
    """Per-hop chroma, MFCC, energy and onset strength of one stream.

    Parameters
    ----------
    sr : int
        Sample rate (Hz).
    hop_length : int
        Samples per frame (441 = 20 ms at 22050 Hz).
    n_fft : int
        Analysis window (samples).
    """

    def __init__(self, *, sr: int = 22050, hop_length: int = 441, n_fft: int = 2048):
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 8000:
            raise ValueError(f"sr={sr!r} must be an integer sample rate >= 8000 Hz")
        if (isinstance(hop_length, bool) or not isinstance(hop_length, (int, np.integer))
                or not 16 <= hop_length <= n_fft):
            raise ValueError(f"hop_length={hop_length!r} must be an integer in [16, n_fft]")
        self.sr, self.hop_length, self.n_fft = int(sr), int(hop_length), int(n_fft)
        self.fps = self.sr / self.hop_length
        self.window = np.hanning(self.n_fft).astype(np.float32)
        # adaptive quality: compute every stride-th hop only, the others repeat it (see process)
        self.stride = 1
        # stored transposed and contiguous: float32 (frames, bins) @ (bins, bands) is the fast path
        self.mel_t = np.ascontiguousarray(mel_filterbank(self.sr, self.n_fft).T, dtype=np.float32)
        self.chroma_t = np.ascontiguousarray(chroma_filterbank(self.sr, self.n_fft).T, dtype=np.float32)
        self.dct_t = np.ascontiguousarray(_dct_matrix(N_MELS, N_MFCC).T, dtype=np.float32)
        self.frames = HopFrames(self.n_fft, self.hop_length)
        self.reset()

    @property
    def centre_offset(self) -> float:
        """Seconds from a frame's window centre to its end (the frame's time is its end)."""
        return self.n_fft / 2 / self.sr

    def reset(self) -> None:
        self.frames.reset()
        self.prev_logmel = None
        self.fresh = np.zeros(0, dtype=bool)            # which frames of the last process() were computed
        self.last = (np.zeros(DIM, np.float32), np.float32(0.0))

    def _describe(self, power: np.ndarray, prev_logmel: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """power [frames, bins] -> (features [frames, DIM], onset [frames], last log-mel)."""
        power = power.astype(np.float32, copy=False)
        mel = power @ self.mel_t
        logmel = np.log10(mel + 1e-10)
        mfcc = logmel @ self.dct_t
        chroma = power @ self.chroma_t
        energy = 10.0 * np.log10(power.mean(axis=1) + 1e-12)[:, None]
        prev = np.vstack([logmel[:1] if prev_logmel is None else prev_logmel[None, :], logmel[:-1]])
        onset = np.maximum(logmel - prev, 0.0).mean(axis=1)
        return np.hstack([chroma, mfcc, energy]).astype(np.float32), onset.astype(np.float32), logmel[-1]

    def process(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feed samples; return ``(times [n], features [n, DIM], onset [n])`` of the frames completed.

        ``times`` are each frame's end (stream seconds since the state's start). With ``stride`` > 1
        only every stride-th frame is computed (``fresh`` marks them) and the others repeat it.
        """
        first = self.frames.n_frames
        every = self.frames.push(samples)
        n = every.shape[0]
        if not n:
            return np.zeros(0), np.zeros((0, DIM), np.float32), np.zeros(0, np.float32)
        # the frames to compute: every stride-th hop (all of them at full quality)
        index = first + np.arange(n)
        fresh = (index + 1) % self.stride == 0
        frames = every[fresh]
        k = frames.shape[0]
        times = (index + 1) * self.hop_length / self.sr
        self.fresh = fresh
        if not k:                         # nothing new: the last frame again (cheap: the point of a stride)
            return times, np.broadcast_to(self.last[0], (n, DIM)), np.full(n, self.last[1], np.float32)
        power = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2
        feats, onset, self.prev_logmel = self._describe(power, self.prev_logmel)
        if k == n:
            self.last = (feats[-1], onset[-1])
            return times, feats, onset
        # a skipped hop repeats the last frame computed (row 0: the one before this call)
        rows = np.vstack([self.last[0][None, :], feats])
        ons = np.concatenate([[self.last[1]], onset]).astype(np.float32)
        self.last = (rows[-1], ons[-1])
        source = np.cumsum(fresh)
        return times, rows[source], ons[source]

    def process_offline(self, y: np.ndarray, *, block: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A whole signal at once (same values as streaming it from a reset state); the spectrum is
        taken ``block`` frames at a time to bound its memory."""
        self.reset()
        every = self.frames.push(y)
        n = every.shape[0]
        if not n:
            return np.zeros(0), np.zeros((0, DIM), np.float32), np.zeros(0, np.float32)
        feats, onsets = [], []
        prev = None
        for a in range(0, n, block):
            power = np.abs(np.fft.rfft(every[a:a + block] * self.window, axis=1)) ** 2
            f, o, prev = self._describe(power, prev)
            feats.append(f)
            onsets.append(o)
        times = (1 + np.arange(n)) * self.hop_length / self.sr
        return times, np.vstack(feats), np.concatenate(onsets)


def beat_sync(times: np.ndarray, feats: np.ndarray, beats: np.ndarray, *, centre_offset: float) -> np.ndarray:
    """Mean of the frames whose window centre lies in each beat interval ``[beats[i], beats[i+1])``.

    Returns
    -------
    np.ndarray [shape=(len(beats) - 1, DIM)]
        An interval with no frame takes the nearest frame.
    """
    beats = np.asarray(beats, dtype=float)
    if beats.size < 2 or times.size == 0:
        return np.zeros((max(beats.size - 1, 0), feats.shape[1] if feats.ndim == 2 else DIM), np.float32)
    centres = times - centre_offset
    idx = np.searchsorted(centres, beats)
    csum = np.vstack([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0, dtype=np.float64)])
    out = np.empty((beats.size - 1, feats.shape[1]), dtype=np.float32)
    for i in range(beats.size - 1):
        a, b = idx[i], idx[i + 1]
        if b > a:
            out[i] = (csum[b] - csum[a]) / (b - a)
        else:
            out[i] = feats[min(max(a, 0), len(feats) - 1)]
    return out
