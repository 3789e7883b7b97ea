"""Beat, downbeat, tempo and meter tracking (causal, streaming).

Public names
------------
Beat
    One tracked beat (frozen dataclass; stream times in seconds).
BeatProcessor
    ``BeatProcessor(*, backend="dsp"|"beatnet"|"small", sr=22050, device="cpu", **tracker_kwargs)``;
    ``process(chunk) -> list[Beat]``, ``flush()``, ``reset()``, ``latency``.
BarTracker
    The online bar-pointer HMM behind every backend (activations in, beats out).
track_file
    Stream a file through a ``BeatProcessor`` in 441-sample chunks.
"""
from .processor import BeatProcessor, load_audio, track_file
from .tracker import BarTracker, Beat

__all__ = ["Beat", "BeatProcessor", "BarTracker", "track_file", "load_audio"]
