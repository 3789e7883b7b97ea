"""The rq job functions and the per-process context they run in.

rq imports :func:`run_generation` and :func:`run_embedding` by name. They find the
worker's :class:`WorkerContext` (settings, store, model cache, bus) installed by
:class:`~consumers.generate.worker.GenerationWorker`; a plain ``rq worker`` builds one
from the environment on first use. Progress (0-100) and the stage go to ``job.meta``;
the return value is a :class:`schemas.GenerationResult` as a dict (JSON-serialised by rq).

Failures: :func:`on_failure` is the worker's exception handler. Transient errors (broker
blips, CUDA OOM, :class:`~.errors.TransientError`) keep rq's retries; anything else
(bad input, missing model, full disk, timeout) fails at once with a one-line
``job.meta["error"]``.
"""
from __future__ import annotations

import errno
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from beatbus.bus import BROKER_ERRORS, Bus
from beatbus.config import Settings, load_settings
from beatbus.errors import BrokerError
from beatbus.log import get_logger
from beatbus.schemas import GenerationResult

from .audio import normalize_loudness, wav_bytes
from .config import GenerateConfig, load_generate_config
from .errors import GenerationError, InvalidRequest, TransientError
from .jobqueue import GenerationQueue
from .metrics import JOB_SECONDS, JOBS, QUEUE_WAIT, REALTIME_FACTOR
from .models import ModelCache
from .spec import GenerationJob
from .storage import Store

__all__ = ["WorkerContext", "install_context", "current_context", "run_generation", "run_embedding", "on_failure",
           "is_transient", "describe_failure", "Progress", "load_musicgen", "load_clap", "load_composer",
           "generate_local", "SOUNDFONT"]

log = get_logger("generate.jobs")
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"


@dataclass
class WorkerContext:
    """What jobs share within one worker process."""
    settings: Settings
    config: GenerateConfig
    store: Store
    bus: Bus | None = None
    device: str = "cpu"                  # cpu, cuda or cuda:N (one worker per GPU)
    models: ModelCache = field(default_factory=ModelCache)


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def install_context(ctx: WorkerContext | None) -> None:
    """Make ``ctx`` the context of jobs run in this process (None uninstalls)."""
    global _context
    with _context_lock:
        _context = ctx


def current_context() -> WorkerContext:
    """The installed context, or one built from the environment (for a plain ``rq worker``)."""
    global _context
    with _context_lock:
        if _context is None:
            settings = load_settings()
            bus = Bus.connect(settings.redis_url) if settings.redis_url else None
            cfg = load_generate_config()
            _context = WorkerContext(settings=settings, config=cfg, store=Store(cfg.state_path), bus=bus,
                                     device=settings.device)
        return _context


# -- models (loaded once per process) --------------------------------------------------
def load_musicgen(ctx: WorkerContext, *, melody: bool = False):
    if ctx.config.musicgen_engine == "audiocraft":
        from .backends.audiocraft import AudiocraftMusicGen as engine
    else:
        from .backends.musicgen import MusicGen as engine

    name = ctx.config.musicgen_melody_model if melody else ctx.config.musicgen_model
    kind = f"{ctx.config.musicgen_engine}:{'musicgen-melody' if melody else 'musicgen'}"
    return ctx.models.get(kind, name, ctx.device, lambda: engine.load(name, device=ctx.device, melody=melody))


def load_clap(ctx: WorkerContext):
    from .clap import ClapEmbedder

    name = ctx.config.clap_model
    return ctx.models.get("clap", name, ctx.device, lambda: ClapEmbedder.load(name, device=ctx.device))


def load_composer(ctx: WorkerContext):
    from .backends.lstm import DEFAULT_CHECKPOINT, Composer

    path = ctx.config.lstm_checkpoint or str(DEFAULT_CHECKPOINT)
    return ctx.models.get("lstm", path, ctx.device, lambda: Composer.load(path, device=ctx.device))


# -- progress -----------------------------------------------------------------------------
class Progress:
    """Writes ``progress`` (0-100) and ``stage`` into ``job.meta``, at most every ``every`` s."""

    def __init__(self, job: Job | None, *, every: float = 0.25):
        self.job, self.every = job, every
        self.value, self._last = 0, 0.0

    def stage(self, name: str, value: int | None = None) -> None:
        self._save(value if value is not None else self.value, name, force=True)

    def update(self, value: float) -> None:
        self._save(int(value), None, force=False)

    def _save(self, value: int, stage: str | None, *, force: bool) -> None:
        value = max(self.value, min(100, int(value)))       # progress never goes back
        now = time.monotonic()
        if self.job is None or (not force and (value == self.value or now - self._last < self.every)):
            self.value = value
            return
        self.value, self._last = value, now
        self.job.meta["progress"] = value
        if stage:
            self.job.meta["stage"] = stage
        try:
            self.job.save_meta()
        except redis.RedisError as exc:         # progress is advisory: a blip must not fail the job
            log.debug("progress not saved", extra={"error": str(exc)})


# -- backends -------------------------------------------------------------------------------
def _musicgen(spec: GenerationJob, ctx: WorkerContext, progress: Progress) -> tuple[dict, dict]:
    req = spec.request
    melody = audio_prompt = None
    if spec.audio_id:
        x, sr = ctx.store.load_upload(spec.audio_id)
        melody, audio_prompt = ((x, sr), None) if spec.melody else (None, (x, sr))
    model = load_musicgen(ctx, melody=spec.melody)
    progress.stage("generating", 2)
    audio, info = model.generate(req.prompt, duration=req.duration, temperature=req.temperature, top_k=req.top_k,
                                 top_p=req.top_p, cfg_coef=req.cfg_coef, seed=spec.seed, melody=melody,
                                 audio_prompt=audio_prompt, window_seconds=ctx.config.window_seconds,
                                 overlap_seconds=ctx.config.overlap_seconds,
                                 progress=lambda done, total: progress.update(2 + 92 * done / total))
    progress.stage("encoding", 95)
    audio, loudness = normalize_loudness(audio, model.sr, ctx.config.loudness_lufs)
    REALTIME_FACTOR.labels("musicgen").observe(info["rtf"])
    meta = {"model": model.name, "melody": spec.melody, "sr": model.sr, "samples": len(audio),
            "conditioning_audio": spec.audio_id, "mode": "melody" if melody else "continuation" if audio_prompt
            else "text", **info, **loudness}
    return {"audio.wav": wav_bytes(audio, model.sr)}, meta


def _render_midi(midi: bytes, soundfont: str, sr: int = 32000, timeout: float = 120.0) -> bytes:
    """MIDI -> WAV with FluidSynth (the GM soundfont Debian ships)."""
    exe = shutil.which("fluidsynth")
    if not exe or not Path(soundfont).exists():
        raise GenerationError("rendering MIDI needs fluidsynth and a GM soundfont (apt install fluidsynth "
                              "fluid-soundfont-gm)")
    with tempfile.TemporaryDirectory(prefix="bb-render-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        proc = subprocess.run([exe, "-ni", "-q", "-g", "0.5", "-F", str(wav), "-r", str(sr), soundfont, str(mid)],
                              capture_output=True, timeout=timeout)
        if proc.returncode != 0 or not wav.exists():
            raise GenerationError(f"fluidsynth failed: {proc.stderr.decode(errors='replace')[-200:]}")
        return wav.read_bytes()


def _lstm(spec: GenerationJob, ctx: WorkerContext, progress: Progress) -> tuple[dict, dict]:
    from music21 import midi as m21midi

    req = spec.request
    composer = load_composer(ctx)
    progress.stage("generating", 2)
    score, info = composer.compose(tempo=req.tempo or 100.0, meter=spec.meter, key=req.key, bars=spec.bars or 8,
                                   temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, seed=spec.seed,
                                   seed_tokens=spec.seed_tokens,
                                   progress=lambda done, total: progress.update(2 + 90 * done / total))
    progress.stage("encoding", 95)
    data = m21midi.translate.streamToMidiFile(score).writestr()
    files = {"music.mid": data}
    meta = {"model": "lstm", "tempo": req.tempo or 100.0, "meter": spec.meter, "bars": spec.bars, "key": req.key,
            "checkpoint": Path(ctx.config.lstm_checkpoint).name if ctx.config.lstm_checkpoint else "shipped", **info}
    if spec.render_audio:
        files["audio.wav"] = _render_midi(data, SOUNDFONT)
    return files, meta


def _result_fields(meta: dict) -> dict[str, str | int | float | bool | None]:
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}


# -- job functions ----------------------------------------------------------------------------
def run_generation(payload: str) -> dict[str, Any]:
    """rq job: generate the music a :class:`~.spec.GenerationJob` (JSON) asks for."""
    ctx = current_context()
    job = get_current_job()
    try:
        spec = msgspec.json.decode(payload, type=GenerationJob)
    except msgspec.DecodeError as exc:          # malformed JSON or a schema violation
        raise InvalidRequest(f"job payload is invalid: {exc}") from None
    if job is not None and job.enqueued_at is not None:
        QUEUE_WAIT.labels(spec.request.backend).observe(max(0.0, time.time() - job.enqueued_at.timestamp()))
    progress = Progress(job)
    progress.stage("loading", 1)
    started = time.perf_counter()
    if spec.request.backend == "musicgen":
        files, meta = _musicgen(spec, ctx, progress)
    else:
        files, meta = _lstm(spec, ctx, progress)
    seconds = time.perf_counter() - started
    meta = {"id": spec.id, "backend": spec.request.backend, "prompt": spec.request.prompt,
            "duration": spec.request.duration, "temperature": spec.request.temperature, "top_k": spec.request.top_k,
            "top_p": spec.request.top_p, "cfg_coef": spec.request.cfg_coef, "tempo": spec.request.tempo,
            "section": spec.request.section, "intensity": spec.request.intensity, "key": spec.request.key,
            "seed": spec.seed, "reason": spec.reason, "source": spec.request.source, "job_seconds": round(seconds, 3),
            "finished_at": time.time(), **meta}
    progress.stage("saving", 98)
    d = ctx.store.save_result(spec.id, files, meta)
    if ctx.bus is not None and spec.request.source and spec.reason in ("section", "bars"):
        GenerationQueue.release_source(ctx.bus, spec.request.source, spec.id)
    progress.stage("done", 100)
    JOBS.labels(spec.request.backend, "finished").inc()
    JOB_SECONDS.labels(spec.request.backend).observe(seconds)
    result = GenerationResult(id=spec.id, status="finished", progress=100,
                              audio_path=str(d / "audio.wav") if "audio.wav" in files else None,
                              midi_path=str(d / "music.mid") if "music.mid" in files else None,
                              metadata=_result_fields(meta), duration=spec.request.duration,
                              finished_at=meta["finished_at"])
    return msgspec.to_builtins(result)


def run_embedding(audio_id: str) -> dict[str, Any]:
    """rq job: CLAP-embed an upload and store the vector beside it."""
    ctx = current_context()
    progress = Progress(get_current_job())
    progress.stage("loading", 1)
    x, sr = ctx.store.load_upload(audio_id)
    embedder = load_clap(ctx)
    progress.stage("embedding", 10)
    started = time.perf_counter()
    vector = embedder.embed(x, sr)
    ctx.store.save_embedding(audio_id, vector, model=embedder.name)
    progress.stage("done", 100)
    JOBS.labels("embed", "finished").inc()
    JOB_SECONDS.labels("embed").observe(time.perf_counter() - started)
    return {"audio_id": audio_id, "dim": int(vector.shape[-1]), "model": embedder.name}


def generate_local(spec: GenerationJob, ctx: WorkerContext) -> tuple[dict, dict]:
    """Run a job in this process without rq (``beatbus generate ... --local``); returns (files, meta)."""
    progress = Progress(None)
    if spec.request.backend == "musicgen":
        return _musicgen(spec, ctx, progress)
    return _lstm(spec, ctx, progress)


# -- failures ---------------------------------------------------------------------------------
def is_transient(exc: BaseException) -> bool:
    """Whether a retry may succeed: broker blips, CUDA OOM, temporary OS errors."""
    if isinstance(exc, (TransientError, BrokerError, *BROKER_ERRORS)):
        return True
    if type(exc).__name__ in ("OutOfMemoryError", "AbandonedJobError"):
        return True
    if isinstance(exc, GenerationError) or isinstance(exc, JobTimeoutException):
        return False
    return isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT,
                                                      errno.ECONNRESET, errno.ECONNREFUSED)


def describe_failure(exc: BaseException, job: Job | None) -> str:
    """One line for ``job.meta["error"]`` and the API."""
    if isinstance(exc, JobTimeoutException):
        duration = (job.meta.get("duration") if job else None) or "?"
        return (f"timed out after {job.timeout if job else '?'} s, the limit for {duration} s of audio "
                "(raise generate.job_timeout_base/_factor for slower hardware)")
    if isinstance(exc, GenerationError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


def on_failure(job: Job, exc_type, exc_value, traceback) -> bool:
    """rq exception handler: decide retry or not, record a one-line error, free the source."""
    transient = is_transient(exc_value)
    if not transient:
        job.retries_left = 0            # rq reads it in memory right after this handler
    will_retry = bool(job.retries_left)
    kind = job.meta.get("kind", "generate")
    outcome = "retried" if will_retry else "timeout" if isinstance(exc_value, JobTimeoutException) else "failed"
    JOBS.labels(kind, outcome).inc()
    job.meta["error"] = describe_failure(exc_value, job)
    job.meta["stage"] = "retrying" if will_retry else "failed"
    try:
        job.save_meta()
    except redis.RedisError:
        pass
    log.warning("generation job failed", extra={"job": job.id, "kind": kind, "retry": will_retry,
                                                "error": job.meta["error"]})
    source, reason = job.meta.get("source"), job.meta.get("reason")
    ctx = _context
    if not will_retry and source and reason in ("section", "bars") and ctx is not None and ctx.bus is not None:
        try:
            GenerationQueue.release_source(ctx.bus, source, job.id)
        except redis.RedisError:
            pass                         # the lease lapses on its own; the service also checks the holder
    return True
