"""The rq side of generation: enqueue jobs, read their status, free abandoned ones.

- Jobs are JSON on the wire (rq's ``JSONSerializer``), never pickle: a worker that
  unpickled job data from a shared Redis would run whatever a writer put there.
- A job's timeout follows its requested duration (:func:`~.config.job_timeout`); its
  result is kept ``result_ttl`` seconds, a failure ``failure_ttl`` seconds in rq's failed
  registry; ``retries`` re-runs follow transient failures and workers that died mid-job.
- :meth:`GenerationQueue.sweep` runs rq's started-registry cleanup, which fails (or
  retries) any job whose worker stopped sending heartbeats: a killed worker's job never
  stays "started". Status reads sweep first, so a poller sees the outcome promptly.
- At most one stream-triggered job per source is in flight: :meth:`claim_source` takes a
  :class:`~beatbus.bus.Lease` keyed by the source, owned by the job id.
- rq needs a plain Redis (MULTI/EXEC over keys of several slots): :func:`rq_redis` picks
  ``rq_url`` (``BEATBUS_RQ_URL``), else the broker unless it is a Redis Cluster. The in-flight
  leases and the stream stay on the bus.
"""
from __future__ import annotations

import time
from typing import Any

import msgspec
import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from beatbus import keys
from beatbus.bus import CLUSTER_SCHEMES, Bus, Lease
from beatbus.config import Settings, redact_url
from beatbus.errors import ConfigError

from .config import GenerateConfig, job_timeout
from .errors import NotFound
from .metrics import ENQUEUED
from .spec import GenerationJob
from .storage import Store

__all__ = ["GenerationQueue", "rq_connection", "rq_redis", "GENERATE_FUNC", "EMBED_FUNC", "embedding_job_id",
           "public_status"]

GENERATE_FUNC = "beatbus.consumers.generate.jobs.run_generation"
EMBED_FUNC = "beatbus.consumers.generate.jobs.run_embedding"
_FINAL = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def rq_connection(url: str) -> redis.Redis:
    """A plain client for rq (it adjusts the socket timeout of its connection pool itself)."""
    return redis.Redis.from_url(url, socket_connect_timeout=3, health_check_interval=15)


def rq_redis(settings: Settings, bus: Bus | None, *, own: bool = False) -> redis.Redis:
    """The client of rq's queue and jobs: ``rq_url``'s server, else the bus's broker if it is no cluster.

    ``own``: a client of its own, never the bus's (a worker: rq changes its pool's socket timeout).
    Raises ConfigError (one line) when there is no plain Redis for rq.
    """
    if settings.rq_url:
        if settings.rq_url.partition("://")[0] in CLUSTER_SCHEMES:
            raise ConfigError(f"rq_url {redact_url(settings.rq_url)} is a Redis Cluster; rq needs a plain Redis "
                              "(redis://, rediss:// or unix://)")
        return rq_connection(settings.rq_url)
    url = bus.url if bus is not None else settings.redis_url
    if (url or "").partition("://")[0] in CLUSTER_SCHEMES:
        raise ConfigError("REDIS_URL is a Redis Cluster; rq needs a plain Redis: set BEATBUS_RQ_URL "
                          "(or rq_url / --rq-url)")
    if bus is not None and not own:
        return bus.redis
    if not url:
        raise ConfigError("no broker: set REDIS_URL (or --redis-url); `beatbus broker` starts one")
    return rq_connection(url)


def embedding_job_id(audio_id: str) -> str:
    return f"embed-{audio_id}"


def public_status(status: str) -> str:
    """rq's status -> queued | started | finished | failed (GenerationResult's vocabulary)."""
    return {"scheduled": "queued", "deferred": "queued", "stopped": "failed", "canceled": "failed",
            "created": "queued"}.get(status, status)


class GenerationQueue:
    """Enqueue and inspect generation and embedding jobs on one rq queue.

    Parameters
    ----------
    connection : redis.Redis
        A client without ``decode_responses`` (a Bus's ``.redis`` works): rq keeps its own keys
        and takes a client, so the queue, unlike the stream stages, does not go through the Bus.
    """

    def __init__(self, connection: redis.Redis, config: GenerateConfig, *, store: Store | None = None):
        self.redis, self.config, self.store = connection, config, store
        self.queue = Queue(config.queue, connection=connection, serializer=JSONSerializer)

    # -- submitting -----------------------------------------------------------------
    def _retry(self) -> Retry | None:
        return Retry(max=self.config.retries, interval=self.config.retry_interval) if self.config.retries else None

    def submit(self, spec: GenerationJob) -> Job:
        """Queue a generation job (its id is the request's id)."""
        req = spec.request
        timeout = job_timeout(self.config, req.duration)
        meta = {"kind": req.backend, "progress": 0, "stage": "queued", "reason": spec.reason, "source": req.source,
                "duration": req.duration, "audio_id": spec.audio_id}
        job = self.queue.enqueue(GENERATE_FUNC, msgspec.json.encode(spec).decode(), job_id=spec.id,
                                 job_timeout=timeout, result_ttl=self.config.result_ttl,
                                 failure_ttl=self.config.failure_ttl, retry=self._retry(), meta=meta,
                                 description=f"{req.backend} {req.duration:g}s ({spec.reason})")
        ENQUEUED.labels(spec.reason).inc()
        return job

    def submit_embedding(self, audio_id: str, *, duration: float) -> Job:
        """Queue the CLAP embedding of an upload (job id ``embed-<audio_id>``)."""
        return self.queue.enqueue(EMBED_FUNC, audio_id, job_id=embedding_job_id(audio_id),
                                  job_timeout=job_timeout(self.config, min(duration, 60.0) / 4),
                                  result_ttl=self.config.result_ttl, failure_ttl=self.config.failure_ttl,
                                  retry=self._retry(), meta={"kind": "embed", "progress": 0, "stage": "queued"},
                                  description=f"embed {audio_id}")

    # -- reading ----------------------------------------------------------------------
    def sweep(self) -> None:
        """Fail or retry jobs whose worker stopped sending heartbeats (rq's registry cleanup)."""
        StartedJobRegistry(queue=self.queue).cleanup()

    def fetch(self, job_id: str) -> Job:
        try:
            return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            raise NotFound(f"no generation job {job_id}") from None

    def status(self, job_id: str) -> dict[str, Any]:
        """Status, progress and (when ended) result metadata or the error, as a JSON-able dict."""
        self.sweep()
        try:
            job = self.fetch(job_id)
        except NotFound:
            if self.store is not None:      # the rq record expired but the files are still kept
                meta = self.store.result_meta(job_id)
                return {"id": job_id, "status": "finished", "progress": 100, "stage": "done", "result": meta}
            raise
        rq_status = job.get_status(refresh=True)
        meta = job.get_meta(refresh=False)
        status = public_status(str(rq_status.value if hasattr(rq_status, "value") else rq_status))
        out: dict[str, Any] = {
            "id": job_id, "status": status, "rq_status": str(getattr(rq_status, "value", rq_status)),
            "progress": int(meta.get("progress", 0)), "stage": meta.get("stage"), "kind": meta.get("kind"),
            "duration": meta.get("duration"), "source": meta.get("source"), "reason": meta.get("reason"),
            "retries_left": job.retries_left, "timeout": job.timeout,
            "enqueued_at": job.enqueued_at.timestamp() if job.enqueued_at else None,
            "started_at": job.started_at.timestamp() if job.started_at else None,
            "ended_at": job.ended_at.timestamp() if job.ended_at else None,
        }
        if status == "queued":
            out["position"] = self.queue.get_job_position(job)
        if status == "failed":
            error = meta.get("error") or _last_line(job) or "failed"
            if "AbandonedJobError" in error:         # rq's registry sweep: the worker stopped heartbeating
                error = (f"the worker died while running this job (no heartbeat for "
                         f"{self.config.abandon_after:g} s)")
            out["error"], out["stage"] = error, "failed"
        if status == "finished":
            out["progress"] = 100
            out["result"] = job.return_value()
        return out

    def is_done(self, job_id: str) -> bool:
        """True when the job ended (or no longer exists)."""
        try:
            return self.fetch(job_id).get_status(refresh=True) in _FINAL
        except NotFound:
            return True

    def wait(self, job_id: str, *, timeout: float, poll: float = 0.2) -> dict[str, Any]:
        """Poll until the job ends or ``timeout`` seconds pass; returns the last status."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(job_id)
            if st["status"] in ("finished", "failed") or time.monotonic() >= deadline:
                return st
            time.sleep(poll)

    # -- one in flight per source -----------------------------------------------------
    def claim_source(self, bus: Bus, source: str, job_id: str, *, duration: float) -> Lease | None:
        """Take the source's in-flight lease for ``job_id``; None while another job holds it.

        A holder whose job has ended (or vanished) is released first, so a crashed
        worker or an expired record never blocks a source for longer than one check.
        """
        ttl = job_timeout(self.config, duration) * (self.config.retries + 1) + self.config.abandon_after + 60
        lease = Lease(bus, keys.generation_inflight(source), job_id, ttl)
        if lease.acquire():
            return lease
        holder = lease.holder()
        if holder:
            self.sweep()                    # a holder whose worker died is failed (or requeued) first
        if holder and self.is_done(holder):
            Lease(bus, keys.generation_inflight(source), holder, ttl).release()
            if lease.acquire():
                return lease
        return None

    @staticmethod
    def release_source(bus: Bus, source: str, job_id: str) -> bool:
        """Free the source's lease if ``job_id`` still holds it (a bus key: no rq, so a job can call it
        as ``GenerationQueue.release_source``)."""
        return Lease(bus, keys.generation_inflight(source), job_id, 1).release()


def _last_line(job: Job) -> str | None:
    result = job.latest_result()
    exc = getattr(result, "exc_string", None) if result is not None else None
    if not exc:
        return None
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None
