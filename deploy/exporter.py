"""``beatbus exporter``: one daemon per deployment that exports what the broker knows.

It serves ``/metrics`` with :class:`~deploy.rq_metrics.RqCollector` (generation queues) and
:class:`~deploy.stream_metrics.StreamCollector` (lag, ownership, trimming, dead letters), read
at scrape time. Its loop only pings the broker, so systemd's watchdog sees it alive and a
broker outage is logged and counted like in every other daemon.
"""
from __future__ import annotations

import threading

import redis

from beatbus.bus import Backoff, Bus, guarded
from beatbus.config import Settings
from beatbus.runtime import Service

from .rq_metrics import RqCollector
from .stream_metrics import StreamCollector

__all__ = ["ExporterService", "default_queues"]


def default_queues(config_file: str | None = None) -> list[str]:
    """The generation stage's rq queue (``[generate] queue`` / ``BEATBUS_GENERATE_QUEUE``)."""
    try:
        from beatbus.consumers.generate.config import load_generate_config
    except ImportError:
        return ["beatbus-generate"]
    return [load_generate_config({}, config_file=config_file).queue]


class ExporterService(Service):
    """Register the collectors and keep a broker heartbeat.

    Parameters
    ----------
    bus : Bus
        Its ``redis`` client is shared by the collectors (the pool is thread-safe).
    queues : list of str
        rq queues to report.
    max_age : float
        Seconds since a producer heartbeat for its source to count as live.
    registry : CollectorRegistry, optional
        Where to register (default: the process-wide one /metrics serves).
    """

    name = "exporter"

    def __init__(self, bus: Bus, *, settings: Settings, queues: list[str], max_age: float | None = None,
                 registry=None):
        super().__init__()
        self.bus, self.settings, self.queues = bus, settings, queues
        self.max_age = max_age if max_age is not None else max(3 * settings.heartbeat, settings.lease_ttl, 10.0)
        self.registry = registry
        self.collectors: list = []
        self._backoff = Backoff()

    def setup(self) -> None:
        # the collectors inspect the broker with commands no stage uses (XINFO, rq's registries): a client
        conn: redis.Redis = self.bus.redis
        self.collectors = [StreamCollector(conn, max_age=self.max_age)]
        if self.queues:
            self.collectors.append(RqCollector(conn, self.queues))
        for c in self.collectors:
            c.register(*([self.registry] if self.registry is not None else []))

    def step(self, stop: threading.Event) -> bool:
        stop.wait(min(1.0, self.settings.heartbeat))
        # the client's ping: Bus.ping raises BrokerError (fatal at start), this one must be retried
        guarded(self.bus.redis.ping, backoff=self._backoff, stop=stop, what="exporter ping", default=None)
        return True

    def drain(self) -> None:
        from prometheus_client import REGISTRY

        registry = self.registry if self.registry is not None else REGISTRY
        for c in self.collectors:
            try:
                registry.unregister(c)
            except KeyError:
                pass
        self.collectors = []
