"""Whole audio files in and out of numpy, for every stage and tool that needs one.

:func:`load_audio` is the one way to read a whole file for analysis: the file producer's own
decoders (:mod:`beatbus.decode`: libsndfile, then ffmpeg for what it cannot read), mixed to mono and
resampled with soxr HQ (like ``librosa.load``). The producer streams the same decoders block-wise.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["load_audio", "read_audio", "resample", "to_mono"]


def to_mono(x: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> float32 (n,)."""
    x = np.asarray(x, dtype=np.float32)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr HQ); a no-op when the rates match."""
    if sr_in == sr_out or len(x) == 0:
        return np.asarray(x, dtype=np.float32)
    import soxr  # here: `import beatbus.audio` stays light for the daemons

    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A file's samples, mixed to mono float32, and its own sample rate (Hz).

    Raises
    ------
    AudioSourceError
        Missing, empty, corrupt or undecodable file (one line naming the path and the cause).
    """
    from .decode import open_decoder

    dec = open_decoder(path)
    try:
        blocks = [to_mono(b) for b in dec.blocks()]
    finally:
        dec.close()
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), int(dec.rate)


def load_audio(path: str | os.PathLike, *, sr: int = 22050) -> np.ndarray:
    """A file as mono float32 at ``sr`` (default: the pipeline's rate).

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float32]
    """
    y, rate = read_audio(path)
    return np.ascontiguousarray(resample(y, rate, sr))
