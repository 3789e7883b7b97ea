"""Self-similarity, novelty, boundary picking and repetition groups over beat-synchronous features.

The similarity of two beats is a weighted mean of three kernels: chroma cosine (harmony),
a Gaussian on standardised MFCC distance (timbre) and a Laplacian on the energy difference
(loudness, 6 dB scale). Foote's checkerboard novelty over it peaks where the music before and
after a beat is self-similar but different from each other: a section boundary. The offline
analysis uses a symmetric kernel; the online analysis the same kernel with only as many
future beats as have been heard.
"""
from __future__ import annotations

import numpy as np

from .features import N_CHROMA, N_MFCC

__all__ = ["similarity", "novelty", "novelty_at", "pick_peaks", "segment_similarity", "group_segments",
           "WEIGHTS", "KERNEL_BEATS", "GROUP_THRESHOLD"]

WEIGHTS = (0.5, 1.0, 1.0)      # chroma, mfcc, energy
KERNEL_BEATS = 8               # half-width of the novelty kernel (beats)
GROUP_THRESHOLD = 0.75         # segments at least this similar repeat each other
ENERGY_SCALE_DB = 6.0
MFCC_SD_FLOOR = 0.5            # MFCC units (log10 mel power)
MFCC_DIST_FLOOR = 4.0          # squared standardised distance


def _chroma(B: np.ndarray) -> np.ndarray:
    c = np.sqrt(np.maximum(B[:, :N_CHROMA], 0.0))
    return c / (np.linalg.norm(c, axis=1, keepdims=True) + 1e-9)


def similarity(B: np.ndarray, *, weights=WEIGHTS, mfcc_stats: tuple | None = None) -> np.ndarray:
    """Beat-to-beat similarity in [0, 1].

    Parameters
    ----------
    B : np.ndarray [shape=(n, DIM)]
        Beat-synchronous features (chroma, MFCC, energy).
    mfcc_stats : (mean, std), optional
        MFCC standardisation (default: this matrix's own statistics).

    Returns
    -------
    np.ndarray [shape=(n, n)]
    """
    n = len(B)
    if n == 0:
        return np.zeros((0, 0))
    c = _chroma(B)
    s_c = np.clip(c @ c.T, 0.0, 1.0)
    m = B[:, N_CHROMA:N_CHROMA + N_MFCC].astype(np.float64)
    mu, sd = mfcc_stats if mfcc_stats is not None else (m.mean(axis=0), m.std(axis=0))
    # floors keep a static sound static: tiny MFCC wobbles are not scaled up into contrast
    m = (m - mu) / np.maximum(sd, MFCC_SD_FLOOR)
    sq = np.sum(m * m, axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2 * m @ m.T, 0.0)
    off = d[~np.eye(n, dtype=bool)] if n > 1 else d.ravel()
    scale = float(np.median(off)) if off.size else 1.0
    s_m = np.exp(-d / max(scale, MFCC_DIST_FLOOR))
    e = B[:, -1].astype(np.float64)
    s_e = np.exp(-np.abs(e[:, None] - e[None, :]) / ENERGY_SCALE_DB)
    wc, wm, we = weights
    return (wc * s_c + wm * s_m + we * s_e) / (wc + wm + we)


def novelty_at(S: np.ndarray, i: int, past: int, future: int) -> float:
    """Checkerboard novelty of a boundary before beat ``i`` with ``past`` / ``future`` beats each side."""
    a, b = max(0, i - past), min(len(S), i + future)
    if i - a < 2 or b - i < 2:
        return 0.0
    return float(S[a:i, a:i].mean() + S[i:b, i:b].mean() - 2.0 * S[a:i, i:b].mean())


def novelty(S: np.ndarray, half: int = KERNEL_BEATS) -> np.ndarray:
    """Symmetric novelty curve (offline): ``novelty_at(S, i, half, half)`` for every beat."""
    return np.array([novelty_at(S, i, half, half) for i in range(len(S))])


def pick_peaks(nov: np.ndarray, times: np.ndarray, *, min_gap_s: float, k: float = 1.0,
               edge: int = 4, floor: float = 0.02) -> list[int]:
    """Greedy peak picking: strongest first, ``min_gap_s`` apart, above median + k * MAD (and ``floor``).

    The first and last ``edge`` beats are ignored (their kernels see too little).
    """
    nov = np.asarray(nov, dtype=float).copy()
    if nov.size <= 2 * edge:
        return []
    nov[:edge] = 0.0
    nov[-edge:] = 0.0
    med = float(np.median(nov))
    thr = max(med + k * float(np.median(np.abs(nov - med))), floor)
    chosen: list[int] = []
    for i in np.argsort(-nov):
        if nov[i] < thr:
            break
        if all(abs(times[i] - times[j]) >= min_gap_s for j in chosen):
            chosen.append(int(i))
    return sorted(chosen)


def segment_similarity(S: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> float:
    """How well segment ``b`` repeats segment ``a`` (beat ranges ``[start, end)``), in [0, 1].

    The best mean similarity along a diagonal of the cross block (a repeat of the same
    sequence), averaged with the block's overall mean (the same material in another order).
    """
    block = S[a[0]:a[1], b[0]:b[1]]
    if block.size == 0:
        return 0.0
    n, m = block.shape
    best = 0.0
    span = min(n, m)
    for off in range(-(n - 1), m):
        d = np.diagonal(block, offset=off)
        if d.size >= max(2, span // 2):
            best = max(best, float(d.mean()))
    return 0.5 * (best + float(block.mean()))


def group_segments(S: np.ndarray, segs: list[tuple[int, int]], *, threshold: float = GROUP_THRESHOLD) -> list[int]:
    """Repetition groups: average-linkage clustering of segments whose similarity >= ``threshold``.

    Returns
    -------
    list of int
        Group id per segment, numbered in order of first appearance (0, 1, 2, ...).
    """
    n = len(segs)
    if n == 0:
        return []
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            sim[i, j] = sim[j, i] = segment_similarity(S, segs[i], segs[j])
    clusters = [[i] for i in range(n)]
    while len(clusters) > 1:
        best, pair = -1.0, None
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                v = float(np.mean([sim[i, j] for i in clusters[x] for j in clusters[y]]))
                if v > best:
                    best, pair = v, (x, y)
        if best < threshold:
            break
        x, y = pair
        clusters[x] += clusters.pop(y)
    label = np.empty(n, dtype=int)
    for c in clusters:
        label[c] = c[0]
    order = {}
    return [order.setdefault(int(g), len(order)) for g in label]
