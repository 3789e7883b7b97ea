"""Prometheus metrics of the generation stage (bounded labels: kind, outcome, reason)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["JOBS", "JOB_SECONDS", "QUEUE_WAIT", "REALTIME_FACTOR", "ENQUEUED", "SKIPPED", "UPLOADS"]

_JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

JOBS = Counter("beatbus_generation_jobs_total", "Generation jobs a worker ended, by outcome",
               ["kind", "outcome"])          # outcome: finished | failed | timeout | retried
JOB_SECONDS = Histogram("beatbus_generation_job_seconds", "Wall time of a job in the worker", ["kind"],
                        buckets=_JOB_BUCKETS)
QUEUE_WAIT = Histogram("beatbus_generation_queue_wait_seconds", "Enqueue to start of a job", ["kind"],
                       buckets=_WAIT_BUCKETS)
REALTIME_FACTOR = Histogram("beatbus_generation_realtime_factor", "Generation wall time / audio time",
                            ["kind"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
ENQUEUED = Counter("beatbus_generation_enqueued_total", "Jobs queued, by why", ["reason"])
SKIPPED = Counter("beatbus_generation_skipped_total", "Stream triggers not queued, by why", ["reason"])
UPLOADS = Counter("beatbus_generation_uploads_total", "Uploads, by outcome", ["outcome"])
