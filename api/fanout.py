"""Thread-per-key fan-out from the broker to WebSocket clients' asyncio queues.

A :class:`FanOut` keeps one :class:`Feed` thread per watched key (a source's events, an LED
device's frames). The feed reads the broker and hands each item to every subscriber's bounded
queue on that client's own event loop; a slow client loses its oldest items, never slows the
others, and the thread ends when the last subscriber leaves.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ["FanOut", "Feed"]


def _offer(q: asyncio.Queue, item: Any) -> None:
    while q.full():
        try:
            q.get_nowait()           # drop the oldest: a live view wants the newest
        except asyncio.QueueEmpty:
            break
    q.put_nowait(item)


class Feed:
    """One reader thread of a :class:`FanOut`; subclasses implement :meth:`run`."""

    def __init__(self, owner: FanOut, key: str):
        self.owner, self.key = owner, key
        self.subscribers: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self.closing = False
        self.thread = threading.Thread(target=self.run, name=f"{owner.thread_prefix}-{key}", daemon=True)

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def targets(self) -> list[tuple[asyncio.Queue, asyncio.AbstractEventLoop]] | None:
        """The current subscribers; None once the last has left (the feed must then return)."""
        with self.owner.lock:
            if not self.subscribers:
                self.closing = True
                self.owner.feeds.pop(self.key, None)
                return None
            return list(self.subscribers.items())

    @staticmethod
    def send(targets, item: Any) -> None:
        for q, loop in targets:
            try:
                loop.call_soon_threadsafe(_offer, q, item)
            except RuntimeError:          # that client's loop is gone
                pass


class FanOut:
    """Subscribe asyncio queues to keys; ``feed_class`` reads one key for all its subscribers."""

    feed_class: type[Feed] = Feed
    thread_prefix = "feed"

    def __init__(self, *, queue_size: int):
        self.queue_size = queue_size
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.feeds: dict[str, Feed] = {}

    def subscribe(self, key: str) -> asyncio.Queue:
        """A queue of ``key``'s items (call from the client's event loop)."""
        q: asyncio.Queue = asyncio.Queue(maxsize=self.queue_size)
        loop = asyncio.get_running_loop()
        with self.lock:
            feed = self.feeds.get(key)
            start = feed is None or feed.closing
            if start:
                feed = self.feeds[key] = self.feed_class(self, key)
            feed.subscribers[q] = loop
        if start:
            feed.thread.start()
        return q

    def unsubscribe(self, key: str, q: asyncio.Queue) -> None:
        with self.lock:
            feed = self.feeds.get(key)
            if feed is not None:
                feed.subscribers.pop(q, None)

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            feeds = list(self.feeds.values())
        for feed in feeds:
            feed.thread.join(timeout=2)
