"""Downbeat evidence per frame: a model's downbeat share, corrected by the onset's loudness accent.

The tracker needs, for every onset, how much of its activation says *downbeat*. Two cues:

* the model's share (BeatNet's downbeat / (beat + downbeat); the ``dsp`` backend's bass share);
* the accent: how much louder the onset is than the recent onsets (dB), which marks the bar start
  of a metronome and, more weakly, of music (AUC 0.60 on shared/data/beats, against 0.83 for
  BeatNet's share).

They are combined in the logit domain, ``z = gamma * logit(share) + k * accent``. When the model's
share hardly varies between onsets it says nothing about *which* onset starts the bar (BeatNet
calls every click of a click track a downbeat, share ~0.9): then its mean is pulled down to a
plausible share and the accent takes over (``k`` grows from ``k_level`` to ``k_level + k_accent``).
Whether the share varies is measured by its onset-weighted running standard deviation; on music it is
1.2-7.5 logit units, on click tracks 0.1-0.6.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DownbeatCue"]


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1.0 - 1e-4)
    return math.log(p / (1.0 - p))


class DownbeatCue:
    """Streaming downbeat share from a model share and the frame level.

    Parameters
    ----------
    fps : float
        Frames per second.
    gamma : float
        Temperature on the model's logit (< 1 softens an over-confident model).
    k_level : float
        Logit units per ``ref_db`` of accent, always applied.
    k_accent : float
        Extra logit units per ``ref_db`` of accent when the model's share is uninformative.
    ref_db : float
        Accent (dB above the running mean of onset levels) that counts as one unit; clipped to +/-1.
    half_life : float
        Seconds; half-life of the running onset statistics.
    sd_low, sd_high : float
        Running standard deviation of the model's logit at onsets below which the model counts as
        uninformative, and above which it counts as fully informative.
    cap, target : float
        While uninformative, a mean share above ``cap`` is pulled down to ``target``.
    onset_min : float
        Activation below which a frame is not an onset (weights ``max(0, total - onset_min) ** 2``).
    """

    GAMMA = 0.75
    K_LEVEL = 1.25
    K_ACCENT = 5.0
    REF_DB = 6.0
    HALF_LIFE = 3.0
    SD_LOW = 0.7
    SD_HIGH = 1.4
    CAP = 0.5
    TARGET = 0.3
    ONSET_MIN = 0.1

    def __init__(
        self,
        *,
        fps: float = 50.0,
        gamma: float = GAMMA,
        k_level: float = K_LEVEL,
        k_accent: float = K_ACCENT,
        ref_db: float = REF_DB,
        half_life: float = HALF_LIFE,
        sd_low: float = SD_LOW,
        sd_high: float = SD_HIGH,
        cap: float = CAP,
        target: float = TARGET,
        onset_min: float = ONSET_MIN,
    ) -> None:
        if not (gamma > 0 and ref_db > 0 and half_life > 0 and fps > 0):
            raise ValueError("gamma, ref_db, half_life and fps must be positive")
        if not 0 <= sd_low < sd_high:
            raise ValueError(f"sd_low={sd_low!r}, sd_high={sd_high!r}: need 0 <= sd_low < sd_high")
        if not (0 < target < 1 and 0 < cap < 1):
            raise ValueError(f"cap={cap!r} and target={target!r} must be shares in (0, 1)")
        self.gamma, self.k_level, self.k_accent, self.ref_db = float(gamma), float(k_level), float(k_accent), float(ref_db)
        self.sd_low, self.sd_high, self.onset_min = float(sd_low), float(sd_high), float(onset_min)
        self._decay = 0.5 ** (1.0 / (half_life * fps))
        self._lcap, self._ltarget = _logit(cap), _logit(target)
        self.reset()

    def reset(self) -> None:
        """Forget the running statistics."""
        self._w = 0.0  # decayed onset weight
        self._level = 0.0  # weighted sums: level, logit, logit^2
        self._l1 = 0.0
        self._l2 = 0.0

    def __call__(self, total: np.ndarray, share: np.ndarray, level_db: np.ndarray) -> np.ndarray:
        """Downbeat share per frame.

        Parameters
        ----------
        total : np.ndarray [shape=(n,)]
            Beat + downbeat activation (onset strength) per frame.
        share : np.ndarray [shape=(n,)]
            The model's downbeat share per frame, 0..1.
        level_db : np.ndarray [shape=(n,)]
            Frame level in dB (RMS).

        Returns
        -------
        np.ndarray [shape=(n,)]
            Corrected downbeat share, 0..1.
        """
        return self.many([self], np.asarray(total, dtype=np.float64)[None], np.asarray(share, dtype=np.float64)[None],
                         np.asarray(level_db, dtype=np.float64)[None])[0]

    @staticmethod
    def many(cues: Sequence[DownbeatCue], total: np.ndarray, share: np.ndarray, level_db: np.ndarray) -> np.ndarray:
        """:meth:`__call__` for many streams: arrays ``[shape=(streams, n)]``, row ``i`` with ``cues[i]``
        (equal settings)."""
        one = cues[0]
        w = np.array([c._w for c in cues])
        level = np.array([c._level for c in cues])
        l1 = np.array([c._l1 for c in cues])
        l2 = np.array([c._l2 for c in cues])
        out = np.empty(np.shape(share))
        a = one._decay
        # a recursion over the (few) new frames (running statistics); each step is vectorised over the streams
        for i in range(out.shape[1]):
            p = np.clip(share[:, i], 1e-4, 1.0 - 1e-4)
            lg = np.log(p / (1.0 - p))
            lv = level_db[:, i]
            seen = w > 1e-2
            ws = np.where(seen, w, 1.0)
            accent = np.where(seen, np.clip((lv - level / ws) / one.ref_db, -1.0, 1.0), 0.0)
            mean = np.where(seen, l1 / ws, one._ltarget)
            sd = np.where(seen, np.sqrt(np.maximum(l2 / ws - mean * mean, 0.0)), np.inf)
            informative = np.clip((sd - one.sd_low) / (one.sd_high - one.sd_low), 0.0, 1.0)
            shift = np.where(mean > one._lcap, mean - one._ltarget, 0.0)
            z = one.gamma * lg + (one.k_level + (1.0 - informative) * one.k_accent) * accent - (1.0 - informative) * shift
            out[:, i] = 1.0 / (1.0 + np.exp(-z))
            wt = np.maximum(total[:, i] - one.onset_min, 0.0) ** 2
            w = a * w + wt
            level = a * level + wt * lv
            l1 = a * l1 + wt * lg
            l2 = a * l2 + wt * lg * lg
        for c, *state in zip(cues, w.tolist(), level.tolist(), l1.tolist(), l2.tolist()):
            c._w, c._level, c._l1, c._l2 = state
        return out
