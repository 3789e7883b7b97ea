"""Audio in and out of the generation stage: decode uploads, loudness, WAV files.

- :func:`decode_audio` checks an upload *by decoding it* (libsndfile: WAV, FLAC, OGG/Vorbis,
  Opus, MP3, AIFF ...), never by its name or declared type; limits are enforced from the
  header before the samples are read.
- :func:`integrated_loudness` is ITU-R BS.1770-4 (K-weighting, 400 ms blocks, absolute
  -70 LUFS and relative -10 LU gates) for mono audio at any sample rate;
  :func:`normalize_loudness` scales to a target with a sample-peak ceiling.
"""
from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from beatbus.audio import to_mono
from beatbus.kweight import k_weighting

from .errors import InvalidRequest, TooLarge, UnsupportedAudio

__all__ = ["decode_audio", "integrated_loudness", "normalize_loudness", "wav_bytes", "AUDIO_FORMATS"]

AUDIO_FORMATS = ("WAV", "FLAC", "OGG", "MP3", "AIFF", "W64", "RF64", "CAF")


def decode_audio(data: bytes, *, max_seconds: float, min_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """Decode uploaded bytes to float32 mono and the sample rate.

    Raises
    ------
    UnsupportedAudio
        The bytes are not a supported audio format (HTTP 415).
    InvalidRequest
        Decodable audio that is unusable: shorter than ``min_seconds``, or not finite (HTTP 422).
    TooLarge
        The audio is longer than ``max_seconds``.
    """
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in AUDIO_FORMATS:
                raise UnsupportedAudio(f"audio format {f.format} is not accepted; use one of {', '.join(AUDIO_FORMATS)}")
            sr = int(f.samplerate)
            if f.frames > 0 and f.frames / sr > max_seconds:
                raise TooLarge(f"audio is {f.frames / sr:.1f} s long; the limit is {max_seconds:g} s")
            # frames may be unknown (<= 0) for some streams: read at most the limit plus one block.
            x = f.read(frames=int(max_seconds * sr) + sr, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if isinstance(exc, (UnsupportedAudio, TooLarge)):
            raise
        raise UnsupportedAudio(f"upload is not decodable audio ({str(exc).split(':')[-1].strip() or exc})") from None
    x = to_mono(x)
    if len(x) / sr > max_seconds:
        raise TooLarge(f"audio is longer than the limit of {max_seconds:g} s")
    if len(x) == 0 or len(x) / sr < min_seconds:
        raise InvalidRequest(f"audio is {len(x) / sr:.2f} s long; at least {min_seconds:g} s is needed")
    if not np.all(np.isfinite(x)):
        raise InvalidRequest("audio contains NaN or infinite samples")
    return x, sr


def integrated_loudness(x: np.ndarray, sr: int) -> float:
    """Integrated loudness (LUFS) of mono audio; ``-inf`` for silence.

    A full-scale 997 Hz sine measures -3.01 LUFS, as BS.1770 specifies.
    """
    x = np.asarray(x, dtype=np.float64)
    (b1, a1), (b2, a2) = k_weighting(sr)
    y = lfilter(b2, a2, lfilter(b1, a1, x))
    block, step = int(0.4 * sr), int(0.1 * sr)
    if len(y) < block:
        z = np.array([np.mean(y ** 2)]) if len(y) else np.zeros(1)
    else:
        starts = np.arange(0, len(y) - block + 1, step)
        csum = np.concatenate([[0.0], np.cumsum(y ** 2)])
        z = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        lj = -0.691 + 10 * np.log10(z)
    z = z[lj > -70.0]
    if len(z) == 0:
        return float("-inf")
    gate = -0.691 + 10 * np.log10(np.mean(z)) - 10.0
    with np.errstate(divide="ignore"):
        z = z[-0.691 + 10 * np.log10(z) > gate]
    return float(-0.691 + 10 * np.log10(np.mean(z)))


def normalize_loudness(x: np.ndarray, sr: int, target_lufs: float, *,
                       peak_dbfs: float = -1.0) -> tuple[np.ndarray, dict]:
    """Scale ``x`` to ``target_lufs``, lowering the gain if the peak would pass ``peak_dbfs``.

    Returns the scaled audio and ``{"loudness_in", "loudness_out", "gain_db", "peak_limited"}``.
    """
    x = np.asarray(x, dtype=np.float32)
    measured = integrated_loudness(x, sr)
    if not math.isfinite(measured):
        return x, {"loudness_in": None, "loudness_out": None, "gain_db": 0.0, "peak_limited": False}
    gain_db = target_lufs - measured
    peak = float(np.max(np.abs(x))) or 1e-9
    ceiling_db = peak_dbfs - 20 * math.log10(peak)
    limited = gain_db > ceiling_db
    gain_db = min(gain_db, ceiling_db)
    y = (x * 10 ** (gain_db / 20)).astype(np.float32)
    return y, {"loudness_in": round(measured, 2), "loudness_out": round(integrated_loudness(y, sr), 2),
               "gain_db": round(gain_db, 2), "peak_limited": bool(limited)}


def wav_bytes(x: np.ndarray, sr: int) -> bytes:
    """16-bit PCM WAV of float audio in [-1, 1]."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()
