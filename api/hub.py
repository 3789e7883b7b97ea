"""Fan-out of a source's event streams to WebSocket clients.

One reader thread per watched source (:mod:`api.fanout`) (plain XREAD from ``$`` over its beats, intensity
(levels and transitions), sections and control streams) hands each event, as its JSON text, to every subscriber's
bounded asyncio queue. A slow client loses its oldest messages, never slows the others,
and the thread ends when the last subscriber leaves. While it has subscribers it marks the
source watched (``keys.watched``): under load, adaptive quality degrades the sources nobody
watches first.
"""
from __future__ import annotations

import asyncio
import time

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Bus, EventReader, note_back, note_reconnect, on_node
from beatbus.schemas import encode

from .fanout import FanOut, Feed

__all__ = ["EventHub", "WATCHED_KINDS"]

WATCH_MARK_S = 2.0                  # how often a feed with subscribers marks its source watched
WATCH_TTL_S = 24 * 3600             # a mark outlives its feed: "least recently watched" needs the past
WATCHED_KINDS = (keys.StreamKind.BEATS, keys.StreamKind.INTENSITY, keys.StreamKind.SECTIONS,
                 keys.StreamKind.CONTROL)


class _EventFeed(Feed):
    def run(self) -> None:
        hub = self.owner
        # the first read opens the streams (retried while the broker is down); the bus counts and
        # dead-letters malformed entries and ends not written by the producer. Decoded as any event,
        # as every reader does: a narrower list of types went stale and dead-lettered transitions
        events = EventReader(hub.bus, [keys.stream(self.key, k) for k in WATCHED_KINDS],
                             what="websocket feed", block_ms=hub.block_ms)
        marked = float("-inf")
        try:
            while not hub.stop.is_set():
                targets = self.targets()
                if targets is None:
                    return
                if time.time() - marked >= WATCH_MARK_S:
                    marked = time.time()
                    self.mark_watched(marked)
                for _stream, _entry_id, event in events.read(hub.stop, count=200):
                    self.send(targets, encode(event).decode())
        finally:
            events.close()

    def mark_watched(self, now: float) -> None:
        """Adaptive quality serves watched sources first (``keys.watched``); best effort."""
        bus = self.owner.bus
        what = on_node("mark a source watched", bus.node_name(keys.watched(self.key)))
        try:
            bus.redis.set(keys.watched(self.key), f"{now:.3f}", ex=WATCH_TTL_S)
        except BROKER_ERRORS as exc:
            note_reconnect(exc, what)
        else:
            note_back(what)


class EventHub(FanOut):
    """Subscribe asyncio queues to a source's events.

    Parameters
    ----------
    bus : Bus
    block_ms : int
        XREAD block per round (also how fast an idle feed notices it has no subscribers).
    queue_size : int
        Messages buffered per client before the oldest are dropped.
    """

    feed_class = _EventFeed
    thread_prefix = "ws-feed"

    def __init__(self, bus: Bus, *, block_ms: int = 500, queue_size: int = 256):
        super().__init__(queue_size=queue_size)
        self.bus, self.block_ms = bus, block_ms

    def subscribe(self, source: str) -> asyncio.Queue:
        """A queue of this source's events as JSON text (call from the client's event loop)."""
        keys.check_source(source)
        return super().subscribe(source)
