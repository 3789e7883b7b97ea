"""``beatbus worker``: an rq worker that keeps its models loaded between jobs.

:class:`GenerationWorker` is rq's ``SimpleWorker`` (jobs run in the worker process, not a
forked child: CUDA contexts do not survive ``fork`` and reloading weights per job would
dominate short jobs) with three additions:

- a heartbeat thread while a job runs: rq's SimpleWorker only heartbeats between jobs, so
  its started-registry entry would live for the job's whole timeout. Here the entry is
  renewed every ``heartbeat`` seconds and expires ``abandon_after`` seconds after the last
  one, so a worker killed mid-job (SIGKILL, OOM, power) has its job failed or retried by
  the next registry sweep instead of sitting "started" until the timeout;
- :func:`~.jobs.on_failure` as exception handler (retry only transient failures);
- systemd ``READY=1`` once models are loaded, ``WATCHDOG=1`` while its loop or the job's
  heartbeat is alive, ``STOPPING=1`` on exit;
- the models it can run (:mod:`.availability`: shipped, local, cached or downloadable) are
  advertised in its rq registration (:mod:`.offers`), so the API refuses what no live worker
  can run; models it cannot run are said once at start, one line each;
- one log line when a job starts and one when it ends (rq's own chatter is kept at WARNING
  unless the log level is debug); a failed job's traceback is logged at debug only.

One worker per GPU (``--device cuda:N``); more CPU workers are more processes.
SIGTERM is rq's warm shutdown: the running job finishes first (size systemd's
``TimeoutStopSec`` to the longest job), a second SIGTERM aborts it.
"""
from __future__ import annotations

import importlib
import math
import os
import threading
import time

import redis
from rq.job_lifecycle import call_exception_handlers
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker, WorkerStatus

from beatbus.log import get_logger
from beatbus.metrics import serve_metrics
from beatbus.runtime import children_die_with_parent, sd_notify

from .availability import check_models
from .errors import ModelUnavailable
from .jobqueue import rq_redis
from .jobs import WorkerContext, install_context, load_clap, load_composer, load_musicgen, on_failure
from .offers import advertise

__all__ = ["GenerationWorker", "run_worker", "PRELOADS", "set_torch_threads"]

log = get_logger("generate.worker")
PRELOADS = ("musicgen", "musicgen-melody", "clap", "lstm")


def set_torch_threads(n: int) -> None:
    """Limit torch's intra-op threads (0 keeps torch's default); small models on shared cores want 1."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


class GenerationWorker(SimpleWorker):
    """A SimpleWorker with in-job heartbeats and beatbus's failure handling.

    Parameters
    ----------
    queues
        Queue names or rq Queues.
    context : WorkerContext
        Installed for the jobs of this process.
    """

    def __init__(self, queues, *, context: WorkerContext, models=(), **kwargs):
        cfg = context.config
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("job_monitoring_interval", max(1, int(math.ceil(cfg.heartbeat))))
        kwargs.setdefault("maintenance_interval", max(5, int(cfg.abandon_after)))
        kwargs.setdefault("worker_ttl", 35)        # BLPOP of 20 s: shorter than any socket timeout
        handlers = list(kwargs.pop("exception_handlers", None) or []) + [on_failure]
        super().__init__(queues, exception_handlers=handlers, **kwargs)
        self.context = context
        self.models = tuple(models)          # advertised kinds (see .offers)
        self.announce = None                 # called once registered: READY=1 then means "the API can see me"
        self.tick = time.monotonic()
        install_context(context)

    def register_birth(self):
        super().register_birth()
        advertise(self.connection, self.key, self.models)
        if self.announce is not None:
            self.announce()

    def handle_exception(self, job, *exc_info):
        # rq logs the whole traceback at ERROR; on_failure logs the one-line cause instead.
        log.debug("job traceback", exc_info=exc_info, extra={"job": job.id})
        call_exception_handlers(self._exc_handlers, job, *exc_info)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        # The started-registry entry lapses this long after the last heartbeat.
        return int(math.ceil(self.context.config.abandon_after))

    def heartbeat(self, *args, **kwargs):
        self.tick = time.monotonic()
        return super().heartbeat(*args, **kwargs)

    def _beat_while_busy(self, job, execution, stop: threading.Event) -> None:
        while not stop.wait(self.context.config.heartbeat):
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError as exc:          # the next beat retries; rq's own loop reconnects
                log.warning("heartbeat failed", extra={"job": job.id, "error": str(exc)[:200]})

    def execute_job(self, job, queue):
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat_while_busy, args=(job, execution, stop),
                                name="rq-job-heartbeat", daemon=True)
        beat.start()
        kind = job.meta.get("kind", "?")
        log.info("job started", extra={"job": job.id, "kind": kind})
        started = time.monotonic()
        try:
            ok = self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join(timeout=5)
        if ok:                               # a failure was logged by on_failure, with its cause
            log.info("job finished", extra={"job": job.id, "kind": kind,
                                            "seconds": round(time.monotonic() - started, 2)})
        self.set_state(WorkerStatus.IDLE)
        try:
            self.context.store.prune(results_older_than=self.context.config.result_ttl,
                                     uploads_older_than=self.context.config.upload_ttl)
        except OSError as exc:
            log.warning("pruning old results failed", extra={"error": str(exc)[:200]})


def _preload(ctx: WorkerContext, names: list[str]) -> None:
    for name in names:
        if name == "musicgen":
            load_musicgen(ctx)
        elif name == "musicgen-melody":
            load_musicgen(ctx, melody=True)
        elif name == "clap":
            load_clap(ctx)
        elif name == "lstm":
            load_composer(ctx)
            importlib.import_module("music21.midi.translate")   # else its import is most of a first LSTM job


def _watchdog(worker: GenerationWorker, stop: threading.Event) -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if not usec:
        return
    every = usec / 2e6
    limit = max(usec / 1e6, worker.dequeue_timeout + 10)
    while not stop.wait(every):
        if time.monotonic() - worker.tick < limit:
            sd_notify("WATCHDOG=1")


def _offers(ctx: WorkerContext, preload: list[str] | tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """(kinds this worker offers, kinds to preload); each model's availability said once.

    ``preload`` None loads the LSTM and MusicGen when their weights are on this machine (never
    a download); a model named explicitly must be available (downloaded now if need be).
    """
    found = {a.kind: a for a in check_models(ctx.config)}
    for kind in preload or ():
        if not found[kind].ok:
            raise ModelUnavailable(f"cannot preload {kind}: {found[kind].reason}")
    for a in found.values():
        if a.ok:
            log.info("model offered", extra={"kind": a.kind, "model": a.model, "from": a.source
                                             + (" (downloaded by its first job)" if a.source == "hub" else "")})
        else:
            log.warning("model not offered", extra={"kind": a.kind, "reason": a.reason})
    offered = [k for k, a in found.items() if a.ok]
    if not offered:
        raise ModelUnavailable("this worker can run no model (see the lines above)")
    if preload is None:
        preload = [k for k in ("lstm", "musicgen") if found[k].source in ("shipped", "local", "cache")]
    return offered, list(preload)


def _rq_log_level(level: str) -> str:
    # rq says ~10 INFO lines per job; GenerationWorker says one at each end instead.
    return "DEBUG" if level.lower() == "debug" else "WARNING"


def run_worker(ctx: WorkerContext, *, burst: bool = False, preload: list[str] | tuple[str, ...] | None = None,
               with_scheduler: bool = True, max_jobs: int | None = None, name: str | None = None,
               connection: redis.Redis | None = None) -> int:
    """Load models, then work the queue until SIGTERM (or, with ``burst``, until it is empty).

    ``connection``: rq's client (default :func:`~.jobqueue.rq_redis`'s own one); jobs keep ``ctx.bus``.
    """
    # asked before any model loads: no plain Redis for rq is said at once
    connection = connection or rq_redis(ctx.settings, ctx.bus, own=True)
    set_torch_threads(ctx.config.torch_threads)
    children_die_with_parent()       # rq's scheduler process must not outlive a killed worker
    install_context(ctx)
    offered, preload = _offers(ctx, preload)
    _preload(ctx, preload)
    bound = serve_metrics(ctx.settings.metrics_addr, role="worker")
    if bound:
        log.info("metrics served", extra={"url": f"http://{bound[0]}:{bound[1]}/metrics"})
    worker = GenerationWorker([ctx.config.queue], connection=connection, context=ctx, name=name, models=offered)
    stop = threading.Event()
    threading.Thread(target=_watchdog, args=(worker, stop), name="watchdog", daemon=True).start()

    def announce():
        sd_notify("READY=1")
        log.info("worker ready", extra={"queue": ctx.config.queue, "device": ctx.device, "offers": ",".join(offered),
                                        "loaded": ",".join(k for k, _, _ in ctx.models.loaded()) or "none"})

    worker.announce = announce
    try:
        worker.work(burst=burst, with_scheduler=with_scheduler and not burst, max_jobs=max_jobs,
                    logging_level=_rq_log_level(ctx.settings.log_level))
    finally:
        stop.set()
        sd_notify("STOPPING=1")
    return 0
