"""Streaming beat processor: audio chunks in, :class:`Beat` events out.

``BeatProcessor`` glues an activation backend (``dsp``: spectral flux; ``beatnet``: BeatNet's
BDA network on its own features; ``small``: our compact GRU; ``hls``: that GRU quantized) to the online
:class:`~processors.beat.tracker.BarTracker`. Everything is causal: a beat is returned from the
``process`` call whose audio made the tracker decide it, exactly once. :func:`track_offline` is
the non-causal alternative for whole files (:mod:`processors.beat.offline`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from os import PathLike

import numpy as np

from beatbus.audio import load_audio

from . import backends
from .backends import FPS
from .offline import OfflineDecoder
from .tracker import BarTracker, Beat

__all__ = ["BeatProcessor", "track_file", "track_offline", "offline_activations"]

MODES = ("offline", "online")


class BeatProcessor:
    """Causal beat / downbeat / tempo / meter tracker for one audio stream.

    Parameters
    ----------
    backend : str
        Activation backend, one of :func:`~processors.beat.backends.names` (``small``: our GRU;
        ``hls``: the same model quantized, run by hls4ml's bit-accurate C simulation); default
        :data:`~processors.beat.backends.DEFAULT`, the daemons' ``backend`` setting.
    sr : int
        Sample rate in Hz of the chunks given to :meth:`process` (22050 for ``beatnet``;
        ``dsp`` accepts any multiple of 50 Hz).
    device : {"cpu", "cuda"}
        Torch device for the ``beatnet`` backend.
    model : int
        BeatNet weight set for ``beatnet`` (1, 2, 3; only 1 may be scored on GTZAN).
    onset_weight : float
        Spectral-flux share mixed into the ``beatnet`` activation (0 = raw network output).
    **tracker_kwargs
        Passed to :class:`~processors.beat.tracker.BarTracker` (``meters``, ``lookahead``,
        ``min_confidence``, ``min_bpm``, ``max_bpm``, ``transition_lambda``, ...); they win over
        the backend's ``tracker_settings``.

    Attributes
    ----------
    n_bad_samples : int
        NaN / inf samples replaced by 0 so far.
    """

    def __init__(
        self,
        *,
        backend: str = backends.DEFAULT,
        sr: int = 22050,
        device: str = "cpu",
        model: int = 1,
        onset_weight: float | None = None,
        **tracker_kwargs,
    ) -> None:
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ValueError(f"sr={sr!r} must be a positive integer sample rate in Hz")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r} must be 'cpu' or 'cuda'")
        self.backend = backend
        self.sr = int(sr)
        self.device = device
        self.hop_length = 441 if self.sr == 22050 else int(self.sr / FPS)
        self.fps = FPS
        self._act = backends.create(backend, sr=self.sr, device=device, model=model, onset_weight=onset_weight)
        kwargs = dict(self._act.tracker_settings)
        kwargs.update(tracker_kwargs)
        kwargs.setdefault("frame_delay", self._act.latency)
        self.tracker = BarTracker(fps=FPS, **kwargs)
        self.n_bad_samples = 0
        self._n_samples = 0

    @property
    def latency(self) -> float:
        """Look-ahead in seconds: half the analysis window plus the tracker's look-ahead frames."""
        return self._act.latency + self.tracker.latency

    @property
    def confidence(self) -> float:
        """Tracker confidence (0..1) at the latest frame."""
        return self.tracker.confidence

    def __call__(self, samples: np.ndarray) -> list[Beat]:
        return self.process(samples)

    def process(self, samples: np.ndarray) -> list[Beat]:
        """Feed the next chunk and return the beats decided with the audio seen so far.

        Parameters
        ----------
        samples : np.ndarray [shape=(n,), dtype=float32]
            Mono samples at ``self.sr``, any length (typically 441 = 20 ms). float64 is accepted;
            NaN / inf samples are replaced by 0 and counted in ``n_bad_samples``.

        Returns
        -------
        list of Beat
            New beats in time order; each beat is returned exactly once over the stream.
        """
        return BeatProcessor.process_many([self], [samples])[0]

    @property
    def batch_key(self) -> tuple:
        """Processors with equal keys can be advanced together by :meth:`process_many`."""
        return (self.backend, self._act.batch_key, self.tracker.batch_key)

    @staticmethod
    def process_many(procs: Sequence[BeatProcessor], chunks: Sequence[np.ndarray]) -> list[list[Beat]]:
        """Feed one chunk to each of many processors (equal :attr:`batch_key`) in one batch: one
        FFT call for all new frames, one network step per frame for all streams, one tracker step
        per frame for all streams.

        Parameters
        ----------
        procs : sequence of BeatProcessor
            Each appears once.
        chunks : sequence of np.ndarray
            One chunk per processor (see :meth:`process`); lengths may differ.

        Returns
        -------
        list of list of Beat
            Per processor, the new beats.
        """
        if len(procs) != len(chunks):
            raise ValueError(f"{len(procs)} processors but {len(chunks)} chunks")
        if len({p.batch_key for p in procs}) > 1:
            raise ValueError("processors in one batch must share backend, model and tracker settings")
        xs = [p._check(x) for p, x in zip(procs, chunks)]
        for p, x in zip(procs, xs):
            p._n_samples += x.size
        frames = type(procs[0]._act).process_many([p._act for p in procs], xs)
        if not any(f[0].shape[0] for f in frames):
            return [[] for _ in procs]
        return BarTracker.process_many([p.tracker for p in procs], frames)

    def flush(self) -> list[Beat]:
        """End of stream: process the zero-padded tail and return the last beats."""
        act, gate, onset, periodic = self._act.flush()
        if not act.shape[0]:
            return []
        end = self._n_samples / self.sr
        beats = self.tracker.process(act, gate=gate, onset=onset, periodic=periodic)
        return [replace(b, decided_at=min(b.decided_at, end)) for b in beats]

    def reset(self) -> None:
        """Start a new stream (stream time restarts at 0)."""
        self._act.reset()
        self.tracker.reset()
        self.n_bad_samples = 0
        self._n_samples = 0

    def _check(self, samples: np.ndarray) -> np.ndarray:
        if not isinstance(samples, np.ndarray):
            raise ValueError(f"samples must be a numpy array, got {type(samples).__name__}")
        if samples.dtype not in (np.float32, np.float64):
            raise ValueError(f"samples dtype={samples.dtype} must be float32 (mono audio in [-1, 1])")
        if samples.ndim != 1:
            raise ValueError(f"samples shape={samples.shape} must be 1-D mono")
        x = samples.astype(np.float32, copy=False)
        bad = ~np.isfinite(x)
        if bad.any():
            # sanitise rather than crash: a glitching source must not kill the stream
            self.n_bad_samples += int(bad.sum())
            x = np.where(bad, np.float32(0.0), x)
        return x


def track_offline(
    samples: np.ndarray | Iterable[np.ndarray], *, backend: str = backends.DEFAULT, sr: int = 22050,
    device: str = "cpu", model: int = 1, onset_weight: float | None = None, **decoder_kwargs,
) -> list[Beat]:
    """Beats of a whole recording, non-causally: the backend's activations of all of it, then one
    Viterbi pass (:class:`~processors.beat.offline.OfflineDecoder`).

    Parameters
    ----------
    samples : np.ndarray [shape=(n,)] or iterable of np.ndarray
        Mono samples at ``sr``, whole or in chunks (a generator of chunks can report progress);
        NaN / inf are read as 0.
    backend, sr, device, model, onset_weight
        As for :class:`BeatProcessor`.
    **decoder_kwargs
        Passed to :class:`~processors.beat.offline.OfflineDecoder`; they win over the backend's
        ``time_offset`` and ``tempo_prior``.

    Returns
    -------
    list of Beat
        ``decided_at`` is the end of the recording.
    """
    act, gate, onset, settings = offline_activations(samples, backend=backend, sr=sr, device=device, model=model,
                                                     onset_weight=onset_weight)
    return OfflineDecoder(fps=FPS, **{**settings, **decoder_kwargs}).decode(act, gate=gate, onset=onset)


def offline_activations(
    samples: np.ndarray | Iterable[np.ndarray], *, backend: str = backends.DEFAULT, sr: int = 22050,
    device: str = "cpu", model: int = 1, onset_weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """What :func:`track_offline` decodes: the backend's ``[beat, downbeat]`` activations ``(n, 2)``, its
    silence gate ``(n,)`` and onset strength ``(n,)`` over a whole recording (arguments as there), and
    the backend's :class:`~processors.beat.offline.OfflineDecoder` settings."""
    act = backends.create(backend, sr=sr, device=device, model=model, onset_weight=onset_weight)
    parts = [act.process(np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0))
             for x in ([samples] if isinstance(samples, np.ndarray) else samples)]
    parts.append(act.flush())
    settings = backends.offline_settings(act.tracker_settings)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), settings)


def track_file(
    path: str | PathLike, *, backend: str = backends.DEFAULT, sr: int = 22050, chunk: int = 441,
    mode: str = "online", **kwargs,
) -> list[Beat]:
    """Track a whole file.

    Parameters
    ----------
    path : str or PathLike
        Any file soundfile reads (mixed to mono, resampled to ``sr``).
    backend : str
        One of :func:`~processors.beat.backends.names`.
    sr : int
        Processing sample rate in Hz.
    chunk : int
        ``online``: samples per ``process`` call (441 = 20 ms, like the live producer).
    mode : {"online", "offline"}
        ``online``: stream it through :class:`BeatProcessor` in ``chunk``-sample pieces, exactly
        as the live pipeline does (its confidence gate: few beats on noise); ``offline``:
        :func:`track_offline` (sees the whole file: intros, higher F on annotated music).
    **kwargs
        Passed to :func:`track_offline` or :class:`BeatProcessor`.

    Returns
    -------
    list of Beat
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    y = load_audio(path, sr=sr)
    if mode == "offline":
        return track_offline(y, backend=backend, sr=sr, **kwargs)
    proc = BeatProcessor(backend=backend, sr=sr, **kwargs)
    beats: list[Beat] = []
    for i in range(0, y.size, chunk):
        beats.extend(proc.process(y[i : i + chunk]))
    beats.extend(proc.flush())
    return beats
