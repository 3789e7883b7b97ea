"""The ``dsp`` activation: causal spectral-flux onset strength, no machine learning.

Spectral flux = sum over log-spaced bands of the positive first difference of ``log10(1 + |X|)``
(:class:`~processors.beat.features.StreamingSpectrogram`), normalised causally so it behaves like
a beat probability: the running mean is subtracted (removes the steady floor of noise and sustained
sounds) and the result is divided by a slowly decaying running peak. The downbeat share of each
onset grows with its low-frequency (< 250 Hz) part, because bass and kick mark bar starts more often
than not; the share stays small so the downbeat evidence is weak. The onset's loudness accent then moves the
share (:class:`~processors.beat.downbeat.DownbeatCue`): the accented click of a metronome starts its
bar.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .backends import Activation, Frames
from .downbeat import DownbeatCue
from .features import StreamingSpectrogram

__all__ = ["OnsetNormaliser", "FluxCoherence", "DspActivation"]


class OnsetNormaliser:
    """Causal normalisation of a spectral-flux curve to a 0..1 onset strength.

    ``x = max(0, flux - running_mean)``, divided by a running peak that decays with a half-life of
    ``PEAK_HALF_LIFE`` s and never drops below ``PEAK_FLOOR`` (so the numerical ripple of a steady
    tone is not normalised up to onsets: music onsets are >= 0.02 mean log-flux per band, a steady
    sine < 0.001).

    Parameters
    ----------
    fps : float
        Frames per second of the flux curve.
    """

    PEAK_HALF_LIFE = 3.0  # s
    MEAN_SECONDS = 0.5  # s, running-mean window for the floor
    PEAK_FLOOR = 0.01  # mean log-flux per band

    def __init__(self, *, fps: float = 50.0) -> None:
        self._peak_decay = 0.5 ** (1.0 / (self.PEAK_HALF_LIFE * fps))
        self._mean_alpha = 1.0 / (self.MEAN_SECONDS * fps)
        self.reset()

    def reset(self) -> None:
        """Forget the running statistics."""
        self._mean = 0.0
        self._peak = 0.0

    def __call__(self, flux: np.ndarray) -> np.ndarray:
        """Normalise ``flux [shape=(n,)]``; returns ``[shape=(n,)]`` in 0..1."""
        return self.many([self], np.asarray(flux, dtype=np.float64)[None, :])[0]

    @staticmethod
    def many(norms: Sequence[OnsetNormaliser], flux: np.ndarray) -> np.ndarray:
        """Normalise ``flux [shape=(streams, n)]``, row ``i`` with ``norms[i]`` (equal fps)."""
        flux = np.asarray(flux, dtype=np.float64)
        one = norms[0]
        mean = np.array([o._mean for o in norms])
        peak = np.array([o._peak for o in norms])
        out = np.empty(flux.shape)
        # a recursion over the (few) new frames; each step is vectorised over the streams
        for i in range(flux.shape[1]):
            f = flux[:, i]
            x = np.maximum(f - mean, 0.0)
            mean += one._mean_alpha * (f - mean)
            peak = np.maximum(np.maximum(x, peak * one._peak_decay), one.PEAK_FLOOR)
            out[:, i] = np.minimum(x / peak, 1.0)
        for o, m, pk in zip(norms, mean.tolist(), peak.tolist()):
            o._mean, o._peak = m, pk
        return out


class FluxCoherence:
    """Causal cross-band coherence of the spectral flux: a music-vs-noise score in 0..1.

    Per frame, ``r = (sum_b d_b)^2 / sum_b d_b^2`` with ``d_b`` the flux of band ``b`` minus its
    running mean: about 1 when the bands fluctuate independently (stationary noise), up to the
    number of bands when they rise together (an onset). After a 0.5 s warm-up of the mean, ``r`` is
    clipped at ``CLIP`` (so one loud onset, e.g. the start of a sound, cannot dominate the window)
    and averaged over ``SECONDS``.
    Measured here: white, pink and brown noise at any level 1.5-2.0 after the first 2 s (higher
    before: see ``YOUNG_EXCESS``); real music
    3.2 or more (5th percentile of the softest excerpt of shared/data/beats). The score maps
    ``NOISE .. MUSIC`` to 0..1 and is amplitude-invariant: quiet noise is rejected like loud noise.

    Parameters
    ----------
    fps : float
        Frames per second.
    """

    SECONDS = 4.0
    WARMUP = 25  # frames (0.5 s) for the running mean before the first score
    # A young average of noise is high (up to 7.5 just after the warm-up, 3.6 at 1 s, 2.6 at 2 s):
    # the noise threshold starts YOUNG_EXCESS higher and decays with YOUNG_FRAMES (music: 6 or more).
    YOUNG_EXCESS = 6.0
    YOUNG_FRAMES = 20
    CLIP = 20.0
    NOISE = 2.2
    MUSIC = 3.0

    def __init__(self, *, fps: float = 50.0) -> None:
        self._alpha = 1.0 / (self.SECONDS * fps)
        self.reset()

    def reset(self) -> None:
        """Forget the running statistics."""
        self._n = 0
        self._mean = None  # per-band running mean of the flux
        self._coherence = 0.0

    def __call__(self, flux: np.ndarray) -> np.ndarray:
        """Score ``flux [shape=(n, bands)]`` (positive differences per band); returns ``[shape=(n,)]``."""
        return self.many([self], np.asarray(flux, dtype=np.float64)[None])[0]

    @staticmethod
    def many(scores: Sequence[FluxCoherence], flux: np.ndarray) -> np.ndarray:
        """Score ``flux [shape=(streams, n, bands)]``, stream ``i`` with ``scores[i]`` (equal fps)."""
        flux = np.asarray(flux, dtype=np.float64)
        one = scores[0]
        count = np.array([c._n for c in scores], dtype=np.float64)
        mean = np.stack([np.zeros(flux.shape[2]) if c._mean is None else c._mean for c in scores])
        coherence = np.array([c._coherence for c in scores])
        out = np.zeros(flux.shape[:2])
        # a recursion over the (few) new frames; each step is vectorised over streams and bands
        for i in range(flux.shape[1]):
            count += 1
            d = flux[:, i, :] - mean
            mean += np.maximum(one._alpha, 1.0 / count)[:, None] * d   # a plain mean until the window is full
            k = count - one.WARMUP
            scored = k > 0      # deviations from a young mean are all positive, hence coherent: score 0
            if not scored.any():
                continue
            energy = np.einsum("sb,sb->s", d, d)
            r = np.where(energy > 1e-12, np.minimum(one.CLIP, d.sum(axis=1) ** 2 / np.maximum(energy, 1e-300)), 0.0)
            k = np.maximum(k, 1.0)
            coherence = np.where(scored, coherence + np.maximum(one._alpha, 1.0 / k) * (r - coherence), coherence)
            noise = one.NOISE + one.YOUNG_EXCESS * np.exp(-k / one.YOUNG_FRAMES)
            out[:, i] = np.where(scored, np.clip((coherence - noise) / (one.MUSIC - one.NOISE), 0.0, 1.0), 0.0)
        for c, n, m, co in zip(scores, count.tolist(), mean, coherence.tolist()):
            c._n, c._mean, c._coherence = int(n), m, co
        return out


class DspActivation(Activation):
    """Streaming onset-strength activation in the tracker's ``[beat, downbeat]`` format (backend ``dsp``).

    Parameters
    ----------
    sr : int
        Sample rate in Hz; must be a multiple of ``fps`` (50).
    fps : float
        Activation frames per second (hop = ``sr / fps`` samples).
    frame_size : int or None
        Analysis window in samples; default 46 ms (1024 at 22050 Hz), a shorter window than
        BeatNet's so the flux peak sits on the onset frame.
    silence_db : float
        Frames whose RMS is below this level (dBFS) are gated as silence.
    """

    name = "dsp"
    SILENCE_DB = -60.0
    LOW_HZ = 250.0
    # the bass share varies little between onsets, so the accent always has its say
    CUE = {"gamma": 1.0, "k_level": 0.0, "k_accent": 1.5}

    def __init__(
        self, *, sr: int = 22050, fps: float = 50.0, frame_size: int | None = None, silence_db: float = SILENCE_DB
    ) -> None:
        hop = sr / fps
        if hop != int(hop):
            raise ValueError(f"sr={sr} must be a multiple of fps={fps}")
        if frame_size is None:
            frame_size = int(round(1024 * sr / 22050))  # 46 ms
        self.sr = int(sr)
        self.fps = float(fps)
        self.hop_length = int(hop)
        self.silence_db = float(silence_db)
        self.frontend = StreamingSpectrogram(
            sr=self.sr, frame_size=frame_size, hop_length=self.hop_length, bands_per_octave=12, fmin=30.0,
            fmax=min(17000.0, sr / 2), diff=True,
        )
        self._nb = self.frontend.n_bands
        # centre frequency per band, from the filterbank weights
        fb = self.frontend._fb
        bin_hz = np.arange(fb.shape[0]) * sr / (2 * fb.shape[0])
        centre = (fb * bin_hz[:, None]).sum(0) / np.maximum(fb.sum(0), 1e-9)
        self._low = centre < self.LOW_HZ
        self._norm = OnsetNormaliser(fps=fps)
        self._low_norm = OnsetNormaliser(fps=fps)
        self._cue = DownbeatCue(fps=fps, **self.CUE)
        self._coherence = FluxCoherence(fps=fps)
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self.frontend.reset()
        self._norm.reset()
        self._low_norm.reset()
        self._cue.reset()
        self._coherence.reset()

    @property
    def batch_key(self) -> tuple:
        """Activations with equal keys share a front end configuration: one batch."""
        fe = self.frontend
        return ("dsp", fe.sr, fe.frame_size, fe.hop_length)

    @staticmethod
    def infer_many(acts: list[DspActivation], feats: list[np.ndarray]) -> list[None]:
        """No model to run: the activation is computed from the features alone."""
        return [None] * len(acts)

    @classmethod
    def frames_many(cls, acts: Sequence[DspActivation], feats: np.ndarray, rms: np.ndarray, probs: None) -> Frames:
        """``[beat, downbeat]`` pseudo-probabilities, silence gate, normalised spectral flux (0..1)
        and the periodic signal (``beat + downbeat``) of the new frames, stacked over the streams."""
        one = acts[0]
        level = 20 * np.log10(np.maximum(rms, 1e-10))
        gate = level > np.array([a.silence_db for a in acts])[:, None]
        diff = feats[:, :, one._nb :]
        onset = OnsetNormaliser.many([a._norm for a in acts], diff.mean(axis=2))
        low = (OnsetNormaliser.many([a._low_norm for a in acts], diff[:, :, one._low].mean(axis=2))
               if one._low.any() else np.zeros_like(onset))
        a = np.where(gate, 0.9 * onset, 0.0)  # leave some non-beat probability even on the strongest onset
        # downbeat share 0.3..0.6: no bass says little against a downbeat, bass a little for it
        w = DownbeatCue.many([x._cue for x in acts], a, 0.3 + 0.3 * low, level)
        act = np.stack([a * (1 - w), a * w], axis=2)
        # as for the networks: only music-like (coherent across bands) flux counts as onset activity,
        # so the flux of pink noise, which now and then repeats at some period, gets no confidence
        music = FluxCoherence.many([x._coherence for x in acts], diff)
        onset = np.where(gate, onset, 0.0) * music
        periodic = np.where(music > 0, act.sum(axis=2), 0.0)
        return act, gate, onset, periodic
