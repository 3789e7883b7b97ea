"""A Prometheus collector for rq queues: jobs by state, workers, the age of the oldest queued job.

rq-exporter pins rq < 3, so this is a small collector of our own. It reads the broker at
scrape time (one pipeline per scrape) and changes nothing: rq's own registry sweeps are
left to the workers and to :meth:`consumers.generate.jobqueue.GenerationQueue.sweep`, so a
job whose worker died shows up as ``abandoned`` until a sweep fails or retries it.

Series (``queue`` is a configured rq queue name, ``state`` a fixed word)::

    beatbus_rq_jobs{queue, state}          queued | started | abandoned | deferred | scheduled
                                           | failed | finished | canceled
    beatbus_rq_workers{queue}              workers registered on the queue
    beatbus_rq_oldest_job_age_seconds{queue}   age of the job at the head of the queue (0: empty)
    beatbus_rq_up                          1 when the last scrape reached the broker

Use it in any process that serves /metrics::

    from beatbus.deploy.rq_metrics import RqCollector
    RqCollector(redis_connection, ["beatbus-generate"]).register()

``beatbus exporter`` registers it (one exporter per deployment: every worker exporting the
same queue-wide numbers would only duplicate them).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import redis
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from rq import Queue, Worker
from rq.job import Job
from rq.utils import utcparse

from beatbus.log import get_logger

__all__ = ["RqCollector", "JOB_STATES"]

log = get_logger("beatbus.deploy.rq_metrics")
JOB_STATES = ("queued", "started", "abandoned", "deferred", "scheduled", "failed", "finished", "canceled")
# registries whose scores are expiry times (an entry past it is gone or, for started, abandoned)
_EXPIRING = ("failed", "finished", "canceled")


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class RqCollector:
    """Collect rq queue metrics from ``connection`` at scrape time.

    Parameters
    ----------
    connection : redis.Redis
        A client of the broker rq uses (its own connection pool is thread-safe).
    queues : sequence of str
        rq queue names (bounded: the deployment's queues).
    """

    def __init__(self, connection: redis.Redis, queues: Sequence[str]):
        self.connection = connection
        self.queues = [Queue(name, connection=connection) for name in dict.fromkeys(queues)]

    def register(self, registry=REGISTRY) -> RqCollector:
        registry.register(self)
        return self

    def _families(self):
        return (GaugeMetricFamily("beatbus_rq_jobs", "rq jobs by queue and state", labels=["queue", "state"]),
                GaugeMetricFamily("beatbus_rq_workers", "rq workers registered on a queue", labels=["queue"]),
                GaugeMetricFamily("beatbus_rq_oldest_job_age_seconds",
                                  "Age of the job at the head of an rq queue (0 when empty)", labels=["queue"]),
                GaugeMetricFamily("beatbus_rq_up", "1 when the rq collector's last scrape reached the broker"))

    def describe(self) -> Iterable:
        # names only: registering must not touch the broker
        return self._families()

    def collect(self) -> Iterable:
        jobs, workers, oldest, up = self._families()
        try:
            self._collect(jobs, workers, oldest)
            up.add_metric([], 1)
        except redis.RedisError as exc:
            log.warning("rq metrics unavailable", extra={"error": str(exc)[:200]})
            jobs, workers, oldest, _ = self._families()       # no partial numbers
            up.add_metric([], 0)
        return [jobs, workers, oldest, up]

    def _collect(self, jobs, workers, oldest) -> None:
        now = time.time()
        pipe = self.connection.pipeline(transaction=False)
        for q in self.queues:
            pipe.llen(q.key)
            pipe.lindex(q.key, 0)
            started = q.started_job_registry.key
            pipe.zcard(started)
            pipe.zcount(started, 0, now)                       # heartbeat lapsed: abandoned
            pipe.zcard(q.deferred_job_registry.key)
            pipe.zcard(q.scheduled_job_registry.key)
            for reg in (q.failed_job_registry, q.finished_job_registry, q.canceled_job_registry):
                pipe.zcard(reg.key)
                pipe.zcount(reg.key, 0, now)                   # expired, not yet cleaned up
        values = iter(pipe.execute())
        heads: list[tuple[Queue, str]] = []
        for q in self.queues:
            queued, head = next(values), next(values)
            started, abandoned = next(values), next(values)
            counts = {"queued": queued, "started": started - abandoned, "abandoned": abandoned,
                      "deferred": next(values), "scheduled": next(values)}
            for state in _EXPIRING:
                total, expired = next(values), next(values)
                counts[state] = total - expired
            for state in JOB_STATES:
                jobs.add_metric([q.name, state], counts[state])
            workers.add_metric([q.name], Worker.count(connection=self.connection, queue=q))
            if head is not None:
                heads.append((q, _s(head)))
            else:
                oldest.add_metric([q.name], 0.0)
        for q, job_id in heads:
            enqueued = self.connection.hget(Job.key_for(job_id), "enqueued_at")
            age = 0.0
            if enqueued:
                try:
                    age = max(0.0, now - utcparse(_s(enqueued)).timestamp())
                except ValueError:
                    pass
            oldest.add_metric([q.name], age)
