"""``beatbus exporter``: one daemon per deployment that exports what the broker knows.

It serves ``/metrics`` with :class:`~deploy.rq_metrics.RqCollector` (generation queues) and
:class:`~deploy.stream_metrics.StreamCollector` (lag, ownership, trimming, dead letters), read
at scrape time. Its loop only pings the broker, so systemd's watchdog sees it alive and a
broker outage is logged and counted like in every other daemon.

rq is read where the jobs are: ``rq_url``, else the broker. A Redis Cluster broker without
``rq_url`` holds no rq, so the rq collector is left out (said once, at start).
"""
from __future__ import annotations

import threading

import redis

from beatbus.bus import Backoff, Bus, guarded
from beatbus.config import Settings
from beatbus.errors import ConfigError
from beatbus.log import get_logger
from beatbus.runtime import Service

from .rq_metrics import RqCollector
from .stream_metrics import StreamCollector

__all__ = ["ExporterService", "default_queues"]

log = get_logger("deploy.exporter")


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
        Its ``redis`` client is shared by the collectors (the pool is thread-safe); rq's is
        ``settings.rq_url``'s when set.
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
        self._rq: redis.Redis | None = None
        self._backoff = Backoff()

    def setup(self) -> None:
        """Register the collectors (once: ``beatbus exporter`` calls it before /metrics is served)."""
        if self.collectors:
            return
        # the collectors inspect the broker with commands no stage uses (XINFO, rq's registries)
        self.collectors = [StreamCollector(self.bus, max_age=self.max_age)]
        if self.queues:
            from beatbus.consumers.generate.jobqueue import rq_redis

            try:
                self._rq = rq_redis(self.settings, self.bus)
            except ConfigError as exc:      # a cluster broker without rq_url: the streams are still worth serving
                log.warning("rq metrics left out", extra={"reason": str(exc)})
            else:
                self.collectors.append(RqCollector(self._rq, self.queues))
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
        if self._rq is not None and self._rq is not self.bus.redis:
            self._rq.close()
        self._rq = None
