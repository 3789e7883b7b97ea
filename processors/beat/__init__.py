"""Beat, downbeat, tempo and meter tracking (causal, streaming).

Public names
------------
Beat
    One tracked beat (frozen dataclass; stream times in seconds).
BeatProcessor
    ``BeatProcessor(*, backend=NAME, sr=22050, device="cpu", **tracker_kwargs)``;
    ``process(chunk) -> list[Beat]``, ``flush()``, ``reset()``, ``latency``.
backends
    The activation backends behind it: ``names()``, ``create(name, ...)``, ``register(name, factory)``
    and their interface, ``Activation``.
BarTracker
    The online bar-pointer HMM behind every backend (activations in, beats out).
BeatBatch
    Many streams, one batch: ``add(key)``, ``remove(key)``, ``process({key: chunk}) -> {key: [Beat]}``.
track_file
    Stream a file through a ``BeatProcessor`` in 441-sample chunks (``mode="offline"``: decode
    the whole file at once, :func:`track_offline`).
track_offline
    Beats of whole-recording samples by one Viterbi pass (:mod:`.offline`).
"""
from .batch import BeatBatch
from .processor import BeatProcessor, track_file, track_offline
from .tracker import BarTracker, Beat

__all__ = ["Beat", "BeatProcessor", "BeatBatch", "BarTracker", "track_file", "track_offline"]
