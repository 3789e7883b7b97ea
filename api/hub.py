"""Fan-out of a source's event streams to WebSocket clients.

One reader thread per watched source (plain XREAD from ``$`` over its beats, intensity,
sections and control streams) hands each event, as its JSON text, to every subscriber's
bounded asyncio queue. A slow client loses its oldest messages, never slows the others,
and the thread ends when the last subscriber leaves.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Union

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, Reader, note_reconnect
from beatbus.errors import SchemaError
from beatbus.metrics import MALFORMED
from schemas import BeatEvent, IntensityEvent, SectionEvent, StreamEnd, decode, encode

from .control import ControlEvent

__all__ = ["EventHub", "HubEvent", "WATCHED_KINDS"]

HubEvent = Union[BeatEvent, IntensityEvent, SectionEvent, StreamEnd, ControlEvent]
WATCHED_KINDS = (keys.StreamKind.BEATS, keys.StreamKind.INTENSITY, keys.StreamKind.SECTIONS,
                 keys.StreamKind.CONTROL)


def _offer(q: asyncio.Queue, text: str) -> None:
    if q.full():
        try:
            q.get_nowait()           # drop the oldest: a live view wants the newest
        except asyncio.QueueEmpty:
            pass
    q.put_nowait(text)


class _Feed:
    def __init__(self, hub: "EventHub", source: str):
        self.hub, self.source = hub, source
        self.subscribers: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self.closing = False
        self.thread = threading.Thread(target=self.run, name=f"ws-feed-{source}", daemon=True)

    def run(self) -> None:
        backoff = Backoff()
        reader = None
        while not self.hub.stop.is_set():
            with self.hub.lock:
                if not self.subscribers:
                    self.closing = True
                    self.hub.feeds.pop(self.source, None)
                    return
                targets = list(self.subscribers.items())
            try:
                if reader is None:
                    reader = Reader(self.hub.bus, [keys.stream(self.source, k) for k in WATCHED_KINDS],
                                    block_ms=self.hub.block_ms)
                entries = reader.read(count=200)
                backoff.reset()
            except BROKER_ERRORS as exc:
                note_reconnect(exc, "websocket feed")
                backoff.wait(self.hub.stop)
                continue
            for stream, _id, fields in entries:
                try:
                    text = encode(decode(fields.get(b"d", b""), HubEvent)).decode()
                except SchemaError:
                    MALFORMED.labels(stream.rsplit(":", 1)[-1]).inc()
                    continue
                for q, loop in targets:
                    try:
                        loop.call_soon_threadsafe(_offer, q, text)
                    except RuntimeError:          # that client's loop is gone
                        pass


class EventHub:
    """Subscribe asyncio queues to a source's events.

    Parameters
    ----------
    bus : Bus
    block_ms : int
        XREAD block per round (also how fast an idle feed notices it has no subscribers).
    queue_size : int
        Messages buffered per client before the oldest are dropped.
    """

    def __init__(self, bus: Bus, *, block_ms: int = 500, queue_size: int = 256):
        self.bus, self.block_ms, self.queue_size = bus, block_ms, queue_size
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.feeds: dict[str, _Feed] = {}

    def subscribe(self, source: str) -> asyncio.Queue:
        """A queue of this source's events as JSON text (call from the client's event loop)."""
        keys.check_source(source)
        q: asyncio.Queue = asyncio.Queue(maxsize=self.queue_size)
        loop = asyncio.get_running_loop()
        with self.lock:
            feed = self.feeds.get(source)
            start = feed is None or feed.closing
            if start:
                feed = self.feeds[source] = _Feed(self, source)
            feed.subscribers[q] = loop
        if start:
            feed.thread.start()
        return q

    def unsubscribe(self, source: str, q: asyncio.Queue) -> None:
        with self.lock:
            feed = self.feeds.get(source)
            if feed is not None:
                feed.subscribers.pop(q, None)

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            feeds = list(self.feeds.values())
        for feed in feeds:
            feed.thread.join(timeout=2)
