"""Live per-source controls, published as events on ``bb:{source}:control``.

The event is :class:`schemas.ControlEvent`; consumers (LED, processors) read the control stream fan-out
and apply the fields that are not null.
"""
from __future__ import annotations

import time

from beatbus import keys
from beatbus.bus import Bus
from beatbus.schemas import ControlEvent

__all__ = ["ControlEvent", "publish_control", "CONTROL_MAXLEN"]

CONTROL_MAXLEN = 1000


def publish_control(bus: Bus, source: str, *, issued_at: float | None = None, **changes) -> tuple[str, ControlEvent]:
    """Publish one ControlEvent; returns (entry id, event)."""
    event = ControlEvent(source=source, issued_at=time.time() if issued_at is None else issued_at, **changes)
    entry = bus.publish(keys.stream(source, keys.StreamKind.CONTROL), event, maxlen=CONTROL_MAXLEN)
    return entry, event
