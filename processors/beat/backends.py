"""Beat activation backends: one interface (:class:`Activation`) and one registry.

A backend turns one stream's mono audio into what the online
:class:`~processors.beat.tracker.BarTracker` consumes, 50 frames per second. The registry maps
names to factories; :class:`~processors.beat.processor.BeatProcessor` asks it for its backend::

    register(name, factory)     # factory(*, sr, device, model, onset_weight) -> Activation
    names()                     # ("dsp", "beatnet", "small", "hls"): built-ins, then plug-ins by name
    create(name, **settings)    # one stream's Activation; ConfigError / DependencyError in one line

The built-in backends (``dsp``, ``beatnet``, ``small``) are registered here and import their
modules (torch for the networks) only when created. Plug-ins are entry points of the group
``beatbus.beat_backends`` naming a factory (``hls = "beatbus.hls.backend:factory"``); they are
listed without being imported, and imported on their first :func:`create`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from beatbus.config import Settings
from beatbus.errors import ConfigError, DependencyError

from .features import StreamingSpectrogram

__all__ = [
    "DEFAULT",
    "ENTRY_POINT_GROUP",
    "FPS",
    "TEMPO_PRIOR",
    "offline_settings",
    "Activation",
    "Factory",
    "Frames",
    "create",
    "empty_frames",
    "names",
    "register",
]

FPS = 50.0
ENTRY_POINT_GROUP = "beatbus.beat_backends"
# the one default backend: the daemons' setting (``backend`` in beatbus.config)
DEFAULT: str = Settings().backend
# A broad log-normal tempo prior (centre 100 BPM, sigma half an octave) nudges the metrical level
# towards the one annotators pick on slow songs (tempo Acc1 0.725 -> 0.750 for beatnet). The offline
# decoder always uses this one; a backend's online tracker may use its own (bda.py).
TEMPO_PRIOR = (100.0, 0.5)


def offline_settings(tracker_settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the offline decoder takes from a backend's (online) tracker settings: its time offset,
    and :data:`TEMPO_PRIOR` where the backend uses a prior (online and offline were tuned apart)."""
    out = {k: v for k, v in tracker_settings.items() if k == "time_offset"}
    if tracker_settings.get("tempo_prior") is not None:
        out["tempo_prior"] = TEMPO_PRIOR
    return out


# per frame: activations [beat, downbeat] (m, 2), silence gate (m,) bool, onset strength (m,),
# periodic signal (m,) for the tracker's rhythm check
Frames = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def empty_frames() -> Frames:
    """:data:`Frames` of no frame."""
    return np.zeros((0, 2)), np.zeros(0, dtype=bool), np.zeros(0), np.zeros(0)


class Activation(ABC):
    """One stream's activation front end: audio in, :data:`Frames` out (what a backend provides).

    Attributes
    ----------
    name : str
        The backend's registry name.
    device : str
        Where it computes (``"cpu"`` or ``"cuda"``).
    tracker_settings : dict
        :class:`~processors.beat.tracker.BarTracker` keyword defaults tuned on shared/data/beats
        for this backend's activations (explicit tracker arguments win). These generic ones (a
        little time offset, the tempo prior) suit the flux and the softer networks.
    frontend : StreamingSpectrogram
        The stream's feature front end (buffers, FFT, filterbank).

    Notes
    -----
    :meth:`process_many` advances many streams with equal :attr:`batch_key` in one batch: one FFT
    call for all their new frames, one :meth:`infer_many` call, then one :meth:`frames_many` call
    per count of new frames (usually one: live streams advance together) that post-processes the
    streams side by side, each with its own running statistics. Subclasses implement
    ``batch_key``, ``reset``, ``infer_many`` and ``frames_many``.
    """

    name: ClassVar[str]
    device: str = "cpu"
    tracker_settings: ClassVar[Mapping[str, Any]] = {"time_offset": 0.006, "tempo_prior": TEMPO_PRIOR}
    frontend: StreamingSpectrogram

    @property
    def latency(self) -> float:
        """Look-ahead in seconds (half the analysis window)."""
        return self.frontend.latency

    @property
    @abstractmethod
    def batch_key(self) -> tuple:
        """Activations with equal keys can be advanced together by :meth:`process_many`."""

    @abstractmethod
    def reset(self) -> None:
        """Start a new stream."""

    @staticmethod
    @abstractmethod
    def infer_many(acts: list[Any], feats: list[np.ndarray]) -> list:
        """The model's output for each stream's new feature frames (equal :attr:`batch_key`), in one
        batch; advances each stream's model state. A backend without a model returns Nones."""

    @classmethod
    @abstractmethod
    def frames_many(cls, acts: Sequence[Any], feats: np.ndarray, rms: np.ndarray, probs: np.ndarray | None) -> Frames:
        """Post-process the new frames of streams that have as many of them, stacked: ``feats
        [shape=(streams, n, features)]``, ``rms [shape=(streams, n)]``, ``probs`` the stacked output
        of :meth:`infer_many` (None: no model). Returns the :data:`Frames` stacked the same way
        (``[streams, n, 2]``, then ``[streams, n]``). Vectorised over the streams: a processor's
        cost per source is then mostly numpy's, not Python's."""

    def _frames(self, feats: np.ndarray, rms: np.ndarray | None = None, probs: Any = None) -> Frames:
        """This stream's :data:`Frames` for its new feature frames (``probs`` None: computed)."""
        if feats.shape[0] == 0:
            return empty_frames()
        rms = self.frontend.last_rms if rms is None else rms
        if probs is None:
            probs = type(self).infer_many([self], [feats])[0]
        out = type(self).frames_many([self], feats[None], np.asarray(rms)[None], None if probs is None else probs[None])
        return out[0][0], out[1][0], out[2][0], out[3][0]

    def process(self, samples: np.ndarray) -> Frames:
        """Feed mono float32 samples; :data:`Frames` for the new frames."""
        return self._frames(self.frontend.process(samples))

    def flush(self) -> Frames:
        """End of stream: :data:`Frames` for the remaining zero-padded frames."""
        return self._frames(self.frontend.flush())

    @classmethod
    def process_many(cls, acts: Sequence[Activation], chunks: Sequence[np.ndarray]) -> list[Frames]:
        """Feed one chunk to each of many streams (equal :attr:`batch_key`) in one batch.

        Parameters
        ----------
        acts : sequence of Activation
            Each appears once.
        chunks : sequence of np.ndarray
            Mono float32 samples per stream (lengths may differ).

        Returns
        -------
        list of Frames
            Per stream, the :data:`Frames` of its new frames.
        """
        raw, rms = [], []
        for a, x in zip(acts, chunks):
            raw.append(a.frontend.take(x))
            rms.append(a.frontend.last_rms)
        counts = [r.shape[0] for r in raw]
        if not sum(counts):
            return [empty_frames() for _ in acts]
        bands = acts[0].frontend.bands(np.concatenate(raw))  # one FFT call for every stream
        edges = np.cumsum([0, *counts])
        feats = [a.frontend.finish(bands[lo:hi]) for a, lo, hi in zip(acts, edges[:-1], edges[1:])]
        probs = cls.infer_many(list(acts), feats)
        out = [empty_frames() for _ in acts]
        by_count: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            if f.shape[0]:
                by_count.setdefault(f.shape[0], []).append(i)
        for idx in by_count.values():
            group = [acts[i] for i in idx]
            p = None if probs[idx[0]] is None else np.stack([np.asarray(probs[i]) for i in idx])
            res = cls.frames_many(group, np.stack([feats[i] for i in idx]), np.stack([np.asarray(rms[i]) for i in idx]), p)
            for j, i in enumerate(idx):
                out[i] = (res[0][j], res[1][j], res[2][j], res[3][j])
        return out


# factory(*, sr, device, model, onset_weight) -> Activation: sr in Hz, device "cpu" | "cuda",
# model: BeatNet weight set, onset_weight: flux share (None: the backend's default); a factory
# ignores the settings that do not apply to it
Factory = Callable[..., Activation]

_FACTORIES: dict[str, Factory] = {}
_plugins: dict[str, Any] | None = None  # plug-in name -> its entry point, then its factory once loaded


def register(name: str, factory: Factory) -> None:
    """Make backend ``name`` available; ``factory`` builds one stream's :class:`Activation` (import
    heavy dependencies inside it, so that registering and :func:`names` stay cheap)."""
    if _FACTORIES.get(name, factory) is not factory:
        raise ConfigError(f"beat backend {name!r} is registered twice")
    _FACTORIES[name] = factory


def _entry_points() -> dict[str, Any]:
    global _plugins
    if _plugins is None:  # read once, on first use: importing this module stays cheap
        from importlib.metadata import entry_points

        _plugins = {ep.name: ep for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)}
    return _plugins


def names() -> tuple[str, ...]:
    """Every backend name: the built-ins, then the plug-ins by name (none of them imported)."""
    return (*_FACTORIES, *(n for n in _entry_points() if n not in _FACTORIES))


def create(name: str, *, sr: int = 22050, device: str = "cpu", model: int = 1,
           onset_weight: float | None = None) -> Activation:
    """One stream's activation of backend ``name`` (see :data:`Factory` for the settings).

    Raises
    ------
    ConfigError
        For an unknown name (the message lists the known ones).
    DependencyError
        When the backend's extra is not installed.
    ValueError
        For settings the backend does not support (e.g. its sample rate).
    """
    from importlib.metadata import EntryPoint

    plugins = _entry_points()
    if name not in _FACTORIES and name not in plugins:
        raise ConfigError(f"unknown beat backend {name!r} (known: {', '.join(names())})")
    try:
        factory = _FACTORIES.get(name)
        if factory is None:
            if isinstance(plugins[name], EntryPoint):  # import the plug-in now
                plugins[name] = plugins[name].load()
            factory = plugins[name]
        return factory(sr=sr, device=device, model=model, onset_weight=onset_weight)
    except DependencyError:
        raise
    except ImportError as exc:  # a missing extra: one line, no traceback, in every command
        raise DependencyError(str(exc)) from exc


# -- the built-in backends ------------------------------------------------------------
def _dsp(*, sr: int, device: str, model: int, onset_weight: float | None) -> Activation:
    """Spectral flux, no model: any multiple of 50 Hz."""
    if sr % 50:
        raise ValueError(f"sr={sr} must be a multiple of 50 Hz for the dsp backend (20 ms hop)")
    from .dsp import DspActivation

    return DspActivation(sr=sr, fps=FPS)


def _beatnet(*, sr: int, device: str, model: int, onset_weight: float | None) -> Activation:
    """BeatNet's network (weight set ``model``) on ``device``."""
    from .network import check_sr

    check_sr("beatnet", sr)
    from .bda import BeatNetActivation  # torch: imported only when asked for

    return BeatNetActivation(model=model, device=device, onset_weight=onset_weight)


def _small(*, sr: int, device: str, model: int, onset_weight: float | None) -> Activation:
    """Our compact GRU (:mod:`processors.beat.small`) on ``device``."""
    from .network import check_sr

    check_sr("small", sr)
    from .small import SmallActivation

    return SmallActivation(device=device, onset_weight=onset_weight)


register("dsp", _dsp)
register("beatnet", _beatnet)
register("small", _small)
