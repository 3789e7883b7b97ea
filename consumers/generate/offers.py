"""Which models the live workers of a queue can run: the worker advertises, the API and CLI ask.

A worker writes the kinds it can run (``lstm``, ``musicgen``, ``musicgen-melody``, ``clap``)
into its own rq registration (field ``beatbus_models`` of ``rq:worker:<name>``), so the
advertisement lives and dies with rq's: the worker heartbeats while idle (every
``worker_ttl - 15`` s) and while busy, and says its death on exit. A worker counts as live
while its last heartbeat is younger than ``LIVE_SECONDS``, so a SIGKILLed one stops
counting within that, before rq's own key expires.
"""
from __future__ import annotations

import datetime as dt

import redis
from rq.utils import utcparse
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from .errors import NoWorker

__all__ = ["MODELS_FIELD", "LIVE_SECONDS", "advertise", "live_offers", "require_worker", "job_kind"]

MODELS_FIELD = "beatbus_models"
_PREFIX = "rq:worker:"      # rq's worker key prefix (Worker.redis_worker_namespace_prefix)
LIVE_SECONDS = 35.0            # rq's worker_ttl as GenerationWorker sets it: idle heartbeats come every 20 s


def advertise(connection: redis.Redis, worker_key: str, kinds) -> None:
    """Record ``kinds`` in the worker's rq registration (call after rq's register_birth)."""
    connection.hset(worker_key, MODELS_FIELD, ",".join(kinds))


def live_offers(connection: redis.Redis, queue: str) -> dict[str, set[str]]:
    """Live worker name -> the kinds it advertises, for the workers of ``queue``."""
    names = sorted(k.decode() if isinstance(k, bytes) else k
                   for k in connection.smembers(WORKERS_BY_QUEUE_KEY % queue))
    if not names:
        return {}
    with connection.pipeline() as pipe:
        for key in names:
            pipe.hmget(key, MODELS_FIELD, "last_heartbeat", "death")
        rows = pipe.execute()
    now = dt.datetime.now(dt.UTC)
    out = {}
    for key, (models, beat, death) in zip(names, rows):
        if death or not beat:
            continue
        last = utcparse(beat.decode())
        if last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        if (now - last).total_seconds() <= LIVE_SECONDS:
            out[key.removeprefix(_PREFIX)] = set(models.decode().split(",")) if models else set()
    return out


def job_kind(backend: str, *, melody: bool = False) -> str:
    """The advertised kind a job needs (a melody job needs MusicGen-Melody)."""
    return "musicgen-melody" if backend == "musicgen" and melody else backend


def require_worker(connection: redis.Redis, queue: str, kind: str) -> None:
    """Raise :class:`NoWorker` (HTTP 503) unless a live worker of ``queue`` advertises ``kind``."""
    offers = live_offers(connection, queue)
    if any(kind in kinds for kinds in offers.values()):
        return
    if not offers:
        raise NoWorker(f"no live worker can run {kind}: no `beatbus worker` serves queue {queue!r}")
    offered = ", ".join(sorted(set().union(*offers.values()))) or "nothing"
    raise NoWorker(f"no live worker can run {kind}: the {len(offers)} live worker(s) of queue {queue!r} offer "
                   f"{offered} (each says at start why a model is unavailable; `beatbus worker` downloads "
                   "hub models on first use where the Hugging Face hub is reachable)")
