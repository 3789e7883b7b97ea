"""Causal analysis frames of a sample stream, one per hop: the streaming front end the intensity,
harmony and structure stages share (each then computes its own spectrum of the frames).

Frame ``k`` (from 0) is the ``n_fft`` samples that end at sample ``(k + 1) * hop`` of the stream,
with zeros before the stream's start, so the first frames are mostly padding, as a live stage
sees a stream that has just begun. Samples that do not complete a hop wait for the next call.
"""
from __future__ import annotations

import numpy as np

__all__ = ["HopFrames"]


class HopFrames:
    """Cut a stream fed in chunks of any length into overlapping frames, one per ``hop`` samples.

    Parameters
    ----------
    n_fft : int
        Frame length in samples (>= ``hop``).
    hop : int
        Samples between the ends of consecutive frames.

    Attributes
    ----------
    n_frames : int
        Frames returned since the last :meth:`reset`.
    n_bad_samples : int
        NaN / inf samples replaced by 0 since the last :meth:`reset`.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        if not 0 < hop <= n_fft:
            raise ValueError(f"hop={hop!r}, n_fft={n_fft!r}: need 0 < hop <= n_fft")
        self.n_fft, self.hop = int(n_fft), int(hop)
        self.reset()

    def reset(self) -> None:
        """Start a new stream (zeros before it)."""
        self.tail = np.zeros(self.n_fft - self.hop, dtype=np.float32)  # the next frame's older samples
        self.pending = np.zeros(0, dtype=np.float32)  # samples short of a whole hop
        self.n_frames = 0
        self.n_bad_samples = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed samples (mono, any length); return the frames they complete, ``[shape=(n, n_fft),
        dtype=float32]``: a read-only view of the new samples (copy what must outlive the next call
        that changes it). Frame ``i``'s last ``hop`` samples are the ``i``-th new hop."""
        x = np.asarray(samples, dtype=np.float32).ravel()
        bad = ~np.isfinite(x)
        if bad.any():
            self.n_bad_samples += int(bad.sum())
            x = np.where(bad, np.float32(0.0), x)
        if self.pending.size:
            x = np.concatenate([self.pending, x])
        hop = self.hop
        n = x.size // hop
        self.pending = x[n * hop:].copy()
        if not n:
            return np.zeros((0, self.n_fft), dtype=np.float32)
        # every frame of this block at once: a strided view over the kept tail + the new hops
        joined = np.concatenate([self.tail, x[:n * hop]])
        self.tail = joined[joined.size - self.tail.size:].copy()
        self.n_frames += n
        return np.lib.stride_tricks.sliding_window_view(joined, self.n_fft)[::hop][:n]
