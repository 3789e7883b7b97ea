"""LED devices rendered by any process, listed and relayed to WebSocket clients from the broker.

The LED consumer (:mod:`consumers.led.preview`) heartbeats its devices in ``bb:led:devices``
and, while ``bb:led:watch:NAME`` is set, writes each device's newest frame to
``bb:led:frames:NAME``. Here one reader thread per watched device keeps the watch key fresh,
reads the frames and hands each to every subscriber's asyncio queue (newest frame only: a
slow client skips frames, never slows the others). ``None`` tells subscribers the device is
gone (its consumer stopped). The thread ends when the last subscriber leaves.
"""
from __future__ import annotations

import asyncio
import time

import orjson

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, Reader
from beatbus.log import get_logger

from .fanout import FanOut, Feed

__all__ = ["LedPreviews"]

log = get_logger("beatbus.api.led")
REFRESH_S = 1.0                  # watch key refresh and liveness check


class _FrameFeed(Feed):
    def run(self) -> None:
        p, bus = self.owner, self.owner.bus
        backoff = Backoff()
        reader: Reader | None = None
        next_refresh = 0.0
        broken = False
        while not p.stop.is_set():
            targets = self.targets()
            if targets is None:
                return
            try:
                if time.monotonic() >= next_refresh:
                    bus.redis.set(keys.led_watch(self.key), 1, px=keys.LED_WATCH_TTL_MS)
                    if p.info(self.key) is None:
                        self.send(targets, None)
                        p.stop.wait(REFRESH_S)
                        continue
                    next_refresh = time.monotonic() + REFRESH_S
                if reader is None:
                    # the stream holds at most the newest frame: start with it
                    reader = Reader(bus, [keys.led_frames(self.key)], start="0-0", block_ms=p.block_ms)
                entries = reader.read(count=10)
            except BROKER_ERRORS as exc:
                if not broken:
                    log.warning("LED preview feed: broker unavailable; retrying",
                                extra={"device": self.key, "error": str(exc)[:200]})
                    broken = True
                backoff.wait(p.stop)
                continue
            broken = False
            backoff.reset()
            if entries:
                frame = entries[-1][2].get(b"f")
                if frame is not None:
                    self.send(targets, frame)


class LedPreviews(FanOut):
    """LED devices whose consumer heartbeats in the broker, and their frames (newest only)."""

    feed_class = _FrameFeed
    thread_prefix = "led-feed"

    def __init__(self, bus: Bus, *, block_ms: int = 250):
        super().__init__(queue_size=1)
        self.bus, self.block_ms = bus, block_ms

    def devices(self) -> list[str]:
        """Names of the devices heartbeated within ``keys.LED_DEVICE_MAX_AGE_S`` (older ones are pruned:
        their consumer died without deregistering them)."""
        cutoff = time.time() - keys.LED_DEVICE_MAX_AGE_S
        pipe = self.bus.redis.pipeline(transaction=False)
        pipe.zrangebyscore(keys.LED_DEVICES, "-inf", f"({cutoff}")
        pipe.zremrangebyscore(keys.LED_DEVICES, "-inf", f"({cutoff}")
        pipe.zrangebyscore(keys.LED_DEVICES, cutoff, "+inf")
        stale, _, live = pipe.execute()
        if stale:
            self.bus.redis.hdel(keys.LED_DEVICE_INFO, *stale)
        return sorted(n.decode() if isinstance(n, bytes) else n for n in live)

    def info(self, name: str) -> dict | None:
        """``{pixels, fps, source, output}`` of a live device, else None."""
        score = self.bus.redis.zscore(keys.LED_DEVICES, name)
        if score is None or score < time.time() - keys.LED_DEVICE_MAX_AGE_S:
            return None
        raw = self.bus.redis.hget(keys.LED_DEVICE_INFO, name)
        return orjson.loads(raw) if raw else {}

    def subscribe(self, name: str) -> asyncio.Queue:
        """A queue of the device's frames (bytes), then None if it goes away (call from the client's loop)."""
        return super().subscribe(name)
