"""``TransitionEvent`` and ``IntensityEntry`` live in :mod:`schemas.events`; re-exported here, with the
one conversion of a detector's :class:`~.predict.Transition` into the event the stage publishes."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from beatbus.schemas.events import IntensityEntry, TransitionEvent, TransitionKind

from .predict import Transition

__all__ = ["TransitionEvent", "TransitionKind", "IntensityEntry", "transition_event"]


def transition_event(tr: Transition, *, source: str, stream_time: Callable[[float], float],
                     wall: Callable[[float], float], now: float) -> TransitionEvent:
    """The event of ``tr``: ``stream_time`` maps the detector's clock to the stream's, ``wall`` a stream
    time to the wall clock; ``now`` is the emission time."""
    ts = max(stream_time(tr.time), 0.0)
    pred = stream_time(tr.predicted_time) if tr.predicted_time is not None else None
    return TransitionEvent(
        source=source, kind=tr.kind, timestamp=ts, system_time=wall(ts),
        detected_time=max(stream_time(tr.detected_at), 0.0), emitted_at=now,
        confidence=float(np.clip(tr.confidence, 0, 1)), predicted_time=pred,
        predicted_system_time=wall(pred) if pred is not None else None,
        bpm_from=None if tr.bpm_from is None else float(np.clip(tr.bpm_from, 0, 400)),
        bpm_to=None if tr.bpm_to is None else float(np.clip(tr.bpm_to, 0, 400)),
        loudness_from=tr.level_from, loudness_to=tr.level_to)
