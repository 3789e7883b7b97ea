"""``beatbus consume generate``: stream events -> generation jobs on the rq queue.

::

    bb:{src}:beats ─┐
    bb:{src}:sections ─┼─(fan-out XREAD)─> GenerationPolicy ─> Trigger ─> capture audio ─> rq queue
    bb:{src}:intensity ─┘                                              (one job in flight per source)

- Events are *state*, read fan-out from ``$``: a restart must not replay old choruses.
- Each source's policy is owned by one instance at a time (:class:`~beatbus.leases.SourceLeases`,
  role ``generate``, sources shared fairly between instances), so N instances queue each
  trigger once.
- At most one stream-triggered job per source is queued or running: the in-flight lease
  (:meth:`~.jobqueue.GenerationQueue.claim_source`) is held by the job id and freed when the
  job ends; a trigger that finds it held is skipped and counted
  (``beatbus_generation_skipped_total{reason="busy"}``).
- A trigger while no live worker offers the configured kind is skipped
  (``reason="no_worker"``), said once when that starts and once when it ends.
- Conditioning: tempo, meter, intensity and section from the events; the last
  ``capture_seconds`` of audio from ``bb:{src}:audio`` (stored as an upload with a
  generated id, its key estimated from its chroma) for continuation or melody.
"""
from __future__ import annotations

import itertools
import threading

from beatbus import keys
from beatbus.bus import Backoff, Bus, EventReader, guarded
from beatbus.config import Settings
from beatbus.leases import SourceLeases
from beatbus.log import get_logger
from beatbus.runtime import Service, instance_id
from beatbus.schemas import BeatEvent, IntensityEvent, KeyEvent, SectionEvent

from .conditioning import Conditioning, capture_audio, estimate_key
from .config import GenerateConfig
from .errors import GenerationError, NoWorker
from .jobqueue import GenerationQueue, rq_redis
from .metrics import SKIPPED
from .offers import job_kind, require_worker
from .policy import GenerationPolicy, Trigger
from .spec import GenerateParams, build_job, new_id
from .storage import Store

__all__ = ["GenerationService", "capture_conditioning"]

log = get_logger("generate.service")
_instances = itertools.count()
_KINDS = (keys.StreamKind.BEATS, keys.StreamKind.SECTIONS, keys.StreamKind.INTENSITY, keys.StreamKind.HARMONY)


class GenerationService(Service):
    """Queue generation jobs from the live stream according to the configured policy.

    Parameters
    ----------
    sources : list of str, optional
        Sources to serve; None follows every live source in the registry.
    """

    name = "generate"

    def __init__(self, bus: Bus, *, settings: Settings, config: GenerateConfig, sources: list[str] | None = None,
                 queue: GenerationQueue | None = None, store: Store | None = None):
        super().__init__()
        self.bus, self.settings, self.config = bus, settings, config
        self.store = store or Store(config.state_path)
        # rq on its own server when the broker is a cluster (rq_url); the in-flight leases stay on the bus
        self.queue = queue or GenerationQueue(rq_redis(settings, bus), config, store=self.store)
        self.policy = GenerationPolicy(mode=config.policy, labels=config.section_labels, every_bars=config.every_bars)
        self.owner = f"{instance_id(keys.Role.GENERATE)}:{next(_instances)}"
        self.leases = SourceLeases(bus, keys.Role.GENERATE, self.owner, ttl=settings.lease_ttl,
                                   heartbeat=settings.heartbeat, fixed=sources)
        self.queued: list[tuple[str, str]] = []          # (source, job id), for tests and logs
        self._backoff = Backoff()
        self.events = EventReader(bus, block_ms=settings.block_ms, backoff=self._backoff)
        self._no_worker = False                          # said once per change, not per trigger

    # -- sources and ownership ------------------------------------------------------
    def _manage(self) -> None:
        """Scan the leases when due; follow every live source (owned or not: a takeover finds the
        policy's state current)."""
        if not self.leases.due():
            return
        self.leases.scan()
        reader = self.events.open()
        for name in self.leases.live:
            for kind in _KINDS:
                if keys.stream(name, kind) not in reader.ids:
                    reader.add(keys.stream(name, kind))

    def owns(self, source: str) -> bool:
        """Whether this instance holds the source's lease, asked of the broker (another may have
        taken it since the last renewal)."""
        lease = self.leases.held.get(source)
        return lease is not None and lease.holder() == self.owner

    # -- the loop ---------------------------------------------------------------------
    def setup(self) -> None:
        guarded(self._manage, backoff=self._backoff, stop=None, what="generate sources", default=None)

    def step(self, stop: threading.Event) -> bool:
        # XREAD groups a batch by stream (ids do not order entries across streams), so the whole
        # batch updates the state first and its triggers fire after, with the newest conditioning.
        triggers = []
        for _stream, _entry_id, ev in self.events.read(stop, count=200, before=self._manage):
            trigger = None
            if isinstance(ev, BeatEvent):
                trigger = self.policy.on_beat(ev)
            elif isinstance(ev, SectionEvent):
                trigger = self.policy.on_section(ev)
            elif isinstance(ev, IntensityEvent):
                self.policy.on_intensity(ev)
            elif isinstance(ev, KeyEvent):
                self.policy.on_key(ev)
            if trigger is not None:
                triggers.append(trigger)
        for trigger in triggers:
            guarded(lambda t=trigger: self.fire(t), backoff=self._backoff, stop=stop, what="queue generation",
                    default=None)
        return True

    def drain(self) -> None:
        self.leases.release_all()

    def fire(self, trigger: Trigger) -> str | None:
        """Queue a job for ``trigger`` unless another instance owns the source or a job is in flight."""
        if not self.owns(trigger.source):
            SKIPPED.labels("not_owner").inc()
            return None
        if not self._worker_ready():
            return None
        cond = self.policy.conditioning(trigger.source)
        job_id = new_id("g")
        lease = self.queue.claim_source(self.bus, trigger.source, job_id, duration=self.config.duration)
        if lease is None:
            SKIPPED.labels("busy").inc()
            log.info("generation skipped: a job is in flight", extra={"source": trigger.source,
                                                                      "reason": trigger.reason})
            return None
        try:
            audio_id = None
            if self.config.kind == "musicgen":
                audio_id = capture_conditioning(self.bus, self.store, trigger.source, self.config.capture_seconds,
                                                cond)
            params = GenerateParams(kind=self.config.kind, duration=self.config.duration if
                                    self.config.kind == "musicgen" else None,
                                    melody=self.config.melody and audio_id is not None)
            spec = build_job(params, conditioning=cond, audio_id=audio_id, reason=trigger.reason, job_id=job_id,
                             base_prompt=self.config.prompt)
            self.queue.submit(spec)
        except GenerationError as exc:
            lease.release()
            SKIPPED.labels("invalid").inc()
            log.warning("generation not queued", extra={"source": trigger.source, "error": str(exc)})
            return None
        except BaseException:
            lease.release()
            raise
        self.queued.append((trigger.source, job_id))
        log.info("generation queued", extra={"source": trigger.source, "reason": trigger.reason,
                                             "detail": trigger.detail, "job": job_id, "prompt": spec.request.prompt})
        return job_id


    def _worker_ready(self) -> bool:
        """Whether a live worker offers the configured kind; a change is logged once."""
        kind = job_kind(self.config.kind, melody=self.config.melody)
        try:
            require_worker(self.queue.redis, self.config.queue, kind)
        except NoWorker as exc:
            SKIPPED.labels("no_worker").inc()
            if not self._no_worker:
                log.warning("generation paused: no live worker can run it", extra={"error": str(exc)})
            self._no_worker = True
            return False
        if self._no_worker:
            log.info("generation resumed: a live worker can run it", extra={"kind": kind})
        self._no_worker = False
        return True


def capture_conditioning(bus: Bus, store: Store, source: str, seconds: float, cond: Conditioning) -> str | None:
    """Store the source's last ``seconds`` of audio as an upload; set ``cond.key`` from it unless the
    harmony stage already named the live key.

    Returns the new audio id, or None with under a second of audio (text-only conditioning).
    """
    if seconds <= 0:
        return None
    x, sr = capture_audio(bus, source, seconds)
    if sr == 0 or len(x) < sr:
        return None
    if cond.key is None:
        cond.key, cond.key_confidence = estimate_key(x, sr)
    return store.save_upload(x, sr, origin=f"capture:{source}")
