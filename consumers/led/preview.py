"""LED preview through the broker: the frames a consumer renders, in the dashboard of ``beatbus api``.

Whichever process renders them, the dashboard shows a device's real frames:

- every second the consumer heartbeats its devices in ``bb:led:devices`` (sorted set,
  name -> unix time) and describes them in ``bb:led:info`` (pixels, fps, source, output);
- while a dashboard watches a device, the API keeps ``bb:led:watch:NAME`` set (short TTL);
- for a watched device the relay XADDs its newest rendered frame (field ``f``: RGB bytes,
  3 per pixel) to ``bb:led:frames:NAME`` (MAXLEN 1), at most :data:`PREVIEW_FPS` times a second.

With a consumer name, the same heartbeat lists the consumer in ``bb:led:consumers`` (name -> unix
time) and its setup in ``bb:led:setup`` (name -> JSON: every device, enabled or not, and the
presets), which ``GET /api/led/devices`` shows. When the devices change (:meth:`PreviewRelay.set_runners`)
the ones gone are removed at once.

Nothing but the heartbeat is written while nobody watches. The relay has its own thread and
only reads each render thread's newest frame: the lights never wait on the broker.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import orjson

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus
from beatbus.log import get_logger

__all__ = ["PreviewRelay", "PREVIEW_FPS"]

log = get_logger("led.preview")

PREVIEW_FPS = 30.0
HEARTBEAT_S = 1.0            # well within keys.LED_DEVICE_MAX_AGE_S
WATCH_POLL_S = 0.25          # how soon a new watcher gets frames
FRAMES_TTL_MS = 5000         # a dead consumer's last frame does not linger


class PreviewRelay:
    """Publish the devices of ``runners`` (DeviceRunner) to the broker for the dashboard.

    Parameters
    ----------
    bus : Bus
    runners : sequence of DeviceRunner
        Their ``device`` and ``last_frame`` are read.
    source : str
        The source the devices follow (shown by the dashboard).
    fps : float
        Frames per second per watched device at most.
    consumer : str, optional
        The consumer's name: heartbeat it and its setup too.
    describe : callable, optional
        ``describe()`` -> the setup document (JSON-able) heartbeated with ``consumer``.
    """

    def __init__(self, bus: Bus, runners: Sequence, source: str, *, fps: float = PREVIEW_FPS,
                 consumer: str | None = None, describe: Callable[[], dict] | None = None):
        self.bus, self.runners, self.source = bus, list(runners), source
        self.consumer, self.describe = consumer, describe
        self.period = 1.0 / fps
        self.fps = fps
        self.frames_sent = 0
        self._listed: set[str] = set()
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._run, name="led-preview", daemon=True)

    def start(self) -> PreviewRelay:
        self._thread.start()
        return self

    def set_runners(self, runners: Sequence) -> None:
        """The devices changed: heartbeat these from now on (the ones gone are removed at once)."""
        self.runners = list(runners)
        self._poke.set()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._poke.set()
        self._thread.join(timeout)
        names = sorted(self._listed | {r.device.name for r in self.runners})
        try:
            pipe = self.bus.pipeline()
            self._unlist(pipe, names)
            if self.consumer:
                pipe.zrem(keys.LED_CONSUMERS, self.consumer)
                pipe.hdel(keys.LED_SETUP, self.consumer)
            if len(pipe):
                pipe.execute()
        except BROKER_ERRORS:
            pass                      # the heartbeat ages out instead

    @staticmethod
    def _unlist(pipe, names) -> None:
        if not names:
            return
        pipe.zrem(keys.LED_DEVICES, *names)
        pipe.hdel(keys.LED_DEVICE_INFO, *names)
        for n in names:     # one key per command: on a cluster the devices' keys are in different slots
            pipe.delete(keys.led_frames(n))

    def _info(self, runner) -> bytes:
        d = runner.device
        return orjson.dumps({"pixels": d.pixels, "fps": min(d.fps, self.fps), "source": self.source,
                             "output": d.spec.scheme})

    def _run(self) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        broken = False
        next_heartbeat = next_watch = 0.0
        watched: list = []
        sent: dict[str, bytes] = {}
        while not self._stop.is_set():
            if self._poke.is_set():               # the devices changed: heartbeat and poll watchers now
                self._poke.clear()
                next_heartbeat = next_watch = 0.0
            now = time.monotonic()
            runners = self.runners
            try:
                # the device registry, watch flags and frames are the preview's own keys (only the
                # API's dashboard reads them), so the relay writes and reads them with plain commands
                pipe = self.bus.pipeline()
                if now >= next_heartbeat:
                    wall = time.time()
                    names = {r.device.name for r in runners}
                    self._unlist(pipe, sorted(self._listed - names))
                    if runners:
                        pipe.zadd(keys.LED_DEVICES, {r.device.name: wall for r in runners})
                        pipe.hset(keys.LED_DEVICE_INFO, mapping={r.device.name: self._info(r) for r in runners})
                    if self.consumer:
                        pipe.zadd(keys.LED_CONSUMERS, {self.consumer: wall})
                        pipe.hset(keys.LED_SETUP, self.consumer, orjson.dumps(self.describe()))
                    self._listed = names
                    next_heartbeat = now + HEARTBEAT_S
                if now >= next_watch:
                    flags = self.bus.get_many([keys.led_watch(r.device.name) for r in runners])
                    watched = [r for r, flag in zip(runners, flags) if flag is not None]
                    next_watch = now + WATCH_POLL_S
                for r in watched:
                    frame = r.last_frame
                    if frame is not None and frame is not sent.get(r.device.name):
                        key = keys.led_frames(r.device.name)
                        pipe.xadd(key, {"f": frame}, maxlen=1, approximate=False)
                        pipe.pexpire(key, FRAMES_TTL_MS)
                        sent[r.device.name] = frame
                        self.frames_sent += 1
                if len(pipe):
                    pipe.execute()
            except BROKER_ERRORS as exc:
                if not broken:            # said once per outage; the bus reader counts reconnects
                    log.warning("LED preview relay: broker unavailable; retrying", extra={"error": str(exc)[:200]})
                    broken = True
                backoff.wait(self._stop)
                continue
            if broken:
                log.info("LED preview relay: broker back")
                broken = False
            backoff.reset()
            self._poke.wait(self.period if watched else max(0.0, min(next_watch, next_heartbeat) - time.monotonic()))
