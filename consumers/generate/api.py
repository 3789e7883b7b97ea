"""HTTP routes of the generation stage (a FastAPI ``APIRouter`` mounted by ``beatbus api``).

===========================================  ==============================================================
``POST /api/upload``                          multipart ``file``: decoded to check it is audio, size and
                                              duration limits, stored under a generated id; queues its
                                              CLAP embedding. 201 ``{audio_id, duration, sr, embedding}``
``GET  /api/embedding/{audio_id}``            200 the 512-d vector; 202 while its job runs
``POST /api/generate/{audio_id}``             JSON params (kind musicgen|lstm, ...): continue or follow
                                              (``melody``) the upload. 202 ``{generation_id, ...}``
``POST /api/generate``                        JSON params: a prompt, and/or ``source`` for live conditioning
``GET  /api/status/{generation_id}``          status (queued|started|finished|failed), progress 0-100, error
``GET  /api/download/{generation_id}``        the WAV (or MIDI; ``?format=mid|wav|json``)
``GET  /api/similar/{audio_id}``              nearest uploads by CLAP cosine similarity (``?k=5``)
===========================================  ==============================================================

Errors are ``{"detail": "<one line naming the cause>"}`` with 404 (unknown id), 413 (too
large or long), 415 (not audio), 422 (parameter out of range), 409 (not ready), 503 (broker
unavailable, no live worker offers the model: :mod:`.offers`, or no plain Redis for rq: a cluster
broker without ``rq_url``), 507 (disk full). Every
parameter is checked, and a live worker that can run the job found, before a job is queued;
an upload whose CLAP embedding no live worker can compute is stored without one.
Ids are generated server-side; a client's file name is kept as display text only.

``build_router(..., read_dependencies=[...], write_dependencies=[...])`` lets the API app
attach authentication and rate limits per route class (reads vs. uploads/generation).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.formparsers import MultiPartException, MultiPartParser

from beatbus import keys
from beatbus.bus import Bus
from beatbus.config import Settings
from beatbus.errors import BeatbusError, BrokerError, ConfigError
from beatbus.log import get_logger

from .audio import decode_audio
from .clap import EmbeddingIndex
from .conditioning import Conditioning, snapshot
from .config import GenerateConfig
from .errors import GenerationError, InvalidRequest, NotFound, NoWorker, TooLarge, UnsupportedAudio, http_status
from .jobqueue import GenerationQueue, embedding_job_id, rq_redis
from .metrics import UPLOADS
from .offers import job_kind, require_worker
from .service import capture_conditioning
from .spec import ID_RE, GenerateParams, build_job, parse_params
from .storage import Store

__all__ = ["build_router", "GENERATE_SCHEMA"]

log = get_logger("generate.api")

# Inlined (GenerateParams nests no structs), so the OpenAPI document needs no extra components.
GENERATE_SCHEMA = msgspec.json.schema(GenerateParams)["$defs"]["GenerateParams"]
_MULTIPART_SLACK = 64 * 1024          # headers and boundaries around the file part
_JSON_BODY_LIMIT = 64 * 1024
# The OpenAPI document states the id format, so a client learns it from there (and no schema-valid
# id is refused); the answers are the codes of the module docstring, each {"detail": "..."}.
IdPath = Annotated[str, Path(pattern=ID_RE.pattern, description="an id this API returned")]
_ERRORS = {404: {"description": "unknown id"}, 409: {"description": "not ready, or failed"},
           413: {"description": "too large or too long"}, 415: {"description": "not audio"},
           422: {"description": "a parameter out of range"},
           503: {"description": "broker unavailable, or no live worker offers the model"},
           507: {"description": "disk full"}}
_MEDIA = {"wav": ("audio.wav", "audio/wav"), "mid": ("music.mid", "audio/midi"), "json": ("meta.json", None)}
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}
_GENERATE_BODY = {"requestBody": {"content": {"application/json": {"schema": GENERATE_SCHEMA}}}}


def _http(fn):
    """Turn beatbus errors into HTTP errors with a one-line detail."""
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except GenerationError as exc:
            raise HTTPException(http_status(exc), str(exc)) from None
        except BrokerError as exc:
            raise HTTPException(503, f"broker unavailable: {exc}") from None
        except BeatbusError as exc:
            raise HTTPException(422, str(exc)) from None
    return wrapper


def _public(status: dict[str, Any]) -> dict[str, Any]:
    """Status without server paths, plus the download link once finished."""
    out = dict(status)
    result = out.pop("result", None)
    if isinstance(result, dict):
        out["result"] = result.get("metadata", result)
    if out.get("status") == "finished":
        out["download"] = f"/api/download/{out['id']}"
    return out


class _Routes:
    """The generation routes' handlers, bound to one broker connection and configuration.

    :func:`build_router` registers the public methods as routes (bound methods: no handler is a
    closure over its arguments).
    """

    def __init__(self, bus: Bus, config: GenerateConfig, store: Store, settings: Settings):
        self.bus, self.config, self.store = bus, config, store
        self._queue: GenerationQueue | None = None
        self.rq_unavailable: str | None = None      # why there is no job queue: its routes answer 503
        try:
            self._queue = GenerationQueue(rq_redis(settings, bus), config, store=store)
        except ConfigError as exc:
            self.rq_unavailable = str(exc)
            log.warning("generation routes answer 503: no job queue", extra={"reason": self.rq_unavailable})
        self.index = EmbeddingIndex(store)

    @property
    def queue(self) -> GenerationQueue:
        if self._queue is None:
            raise HTTPException(503, self.rq_unavailable)
        return self._queue

    # -- uploads ---------------------------------------------------------------------------
    @_http
    async def upload(self, request: Request):
        """Upload audio (WAV, FLAC, OGG, MP3, AIFF ...) as multipart field ``file``."""
        config = self.config
        limit = config.max_upload_bytes + _MULTIPART_SLACK
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            UPLOADS.labels("too_large").inc()
            raise TooLarge(f"upload of {declared} bytes exceeds the limit of {config.max_upload_bytes} bytes")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise UnsupportedAudio("send the audio as multipart/form-data in a field named 'file'")
        try:
            # The route's max_body_size stops a larger body while it streams in (413).
            form = await MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=8).parse()
        except MultiPartException as exc:
            raise InvalidRequest(f"malformed multipart body: {exc.message}") from None
        try:
            audio_id, seconds, sr = await self._store_file_part(form.get("file"))
        finally:
            await form.close()
        UPLOADS.labels("stored").inc()
        body = {"audio_id": audio_id, "duration": round(seconds, 3), "sr": sr,
                "name": self.store.upload_meta(audio_id)["name"], "embedding": None}
        if config.embed_uploads:
            await self._queue_embedding(audio_id, seconds, body)
        return JSONResponse(status_code=201, content=body)

    async def _store_file_part(self, part) -> tuple[str, float, int]:
        """Check the form's ``file`` part is audio within the limits and store it: (audio id, seconds, sr)."""
        config = self.config
        if part is None or isinstance(part, str):
            raise InvalidRequest("file: the multipart body has no file field named 'file'")
        data = await part.read()
        if len(data) > config.max_upload_bytes:
            raise TooLarge(f"upload of {len(data)} bytes exceeds the limit of {config.max_upload_bytes} bytes")
        try:
            x, sr = await run_in_threadpool(decode_audio, data, max_seconds=config.max_upload_seconds,
                                            min_seconds=config.min_upload_seconds)
        except GenerationError as exc:
            UPLOADS.labels("too_long" if isinstance(exc, TooLarge) else "not_audio").inc()
            raise
        audio_id = await run_in_threadpool(self.store.save_upload, x, sr, origin="upload", name=part.filename,
                                           raw=data)
        return audio_id, len(x) / sr, sr

    async def _queue_embedding(self, audio_id: str, seconds: float, body: dict[str, Any]) -> None:
        """Queue the upload's CLAP embedding into ``body``, or say why no live worker can compute it."""
        if self._queue is None:
            body["embedding_unavailable"] = self.rq_unavailable
            return
        try:
            await run_in_threadpool(require_worker, self.queue.redis, self.config.queue, "clap")
        except NoWorker as exc:
            body["embedding_unavailable"] = str(exc)
            return
        job = await run_in_threadpool(self.queue.submit_embedding, audio_id, duration=seconds)
        body["embedding"] = {"job_id": job.id, "status": "queued", "url": f"/api/embedding/{audio_id}"}

    @_http
    async def embedding(self, audio_id: IdPath):
        """The upload's CLAP embedding (202 while it is being computed)."""
        vector = await run_in_threadpool(self.store.load_embedding, audio_id)
        if vector is not None:
            meta = self.store.upload_meta(audio_id).get("embedding", {})
            return {"audio_id": audio_id, "dim": int(vector.shape[-1]), "model": meta.get("model"),
                    "embedding": [round(float(v), 7) for v in vector]}
        try:
            st = await run_in_threadpool(self.queue.status, embedding_job_id(audio_id))
        except NotFound:
            raise HTTPException(409, f"audio {audio_id} has no embedding and none is queued") from None
        if st["status"] == "failed":
            raise HTTPException(409, f"embedding of {audio_id} failed: {st.get('error')}")
        return JSONResponse(status_code=202, content={"audio_id": audio_id, "status": st["status"],
                                                      "progress": st["progress"]})

    @_http
    async def similar(self, audio_id: IdPath, k: int = Query(5, ge=1, le=100)):
        """Uploads most similar to this one (cosine similarity of CLAP embeddings)."""
        if await run_in_threadpool(self.store.load_embedding, audio_id) is None:
            raise HTTPException(409, f"audio {audio_id} has no embedding yet; see /api/embedding/{audio_id}")
        hits = await run_in_threadpool(self.index.similar, audio_id, k)
        return {"audio_id": audio_id, "results": [{"audio_id": i, "score": round(s, 6)} for i, s in hits]}

    # -- generation ------------------------------------------------------------------------
    @_http
    async def generate_from_upload(self, audio_id: IdPath, request: Request, body: dict | None = Body(None)):
        """Generate from an upload: MusicGen continues it (or follows its melody with ``melody``)."""
        params = parse_params(body)
        self.store.upload_meta(audio_id)                      # 404 before anything is queued
        if params.kind != "musicgen":
            raise InvalidRequest("kind: lstm composes MIDI from tokens and takes no audio; use POST /api/generate")
        await self._require_worker(params)
        spec = build_job(params, audio_id=audio_id, reason="api",
                         conditioning=await run_in_threadpool(self._stream_conditioning, params))
        return await run_in_threadpool(self._job_response, spec, request)

    @_http
    async def generate(self, request: Request, body: dict | None = Body(None)):
        """Generate from a prompt and/or a live source's conditioning (``source``)."""
        params = parse_params(body)
        await self._require_worker(params)
        spec = await run_in_threadpool(self._live_job, params)
        return await run_in_threadpool(self._job_response, spec, request)

    async def _require_worker(self, params: GenerateParams) -> None:
        """NoWorker (503) unless a live worker offers the job's model."""
        await run_in_threadpool(require_worker, self.queue.redis, self.config.queue,
                                job_kind(params.kind, melody=params.melody))

    def _stream_conditioning(self, params: GenerateParams) -> Conditioning | None:
        return snapshot(self.bus, params.source) if params.source else None

    def _live_job(self, params: GenerateParams):
        """The job of ``POST /api/generate``: conditioned on ``source`` (and its audio, for musicgen)."""
        cond = self._stream_conditioning(params)
        audio_id = None
        if cond is not None and params.kind == "musicgen":
            audio_id = capture_conditioning(self.bus, self.store, params.source, self.config.capture_seconds, cond)
        if params.melody and audio_id is None:
            raise InvalidRequest("melody: needs a live source with audio (source) or an upload "
                                 "(POST /api/generate/{audio_id})")
        return build_job(params, conditioning=cond, audio_id=audio_id, reason="api",
                         base_prompt="" if params.prompt else self.config.prompt)

    def _job_response(self, spec, request: Request) -> JSONResponse:
        owner = getattr(request.state, "api_key", None)
        if owner:  # "downloads of your own jobs": remember which key asked
            self.bus.redis.set(keys.generation_owner(spec.id), owner,
                               ex=self.config.result_ttl + self.config.failure_ttl)
        job = self.queue.submit(spec)
        return JSONResponse(status_code=202, content={
            "generation_id": spec.id, "status": "queued", "kind": spec.request.backend,
            "prompt": spec.request.prompt, "duration": spec.request.duration, "timeout": job.timeout,
            "status_url": f"/api/status/{spec.id}", "download_url": f"/api/download/{spec.id}"})

    # -- results ---------------------------------------------------------------------------
    @_http
    async def status(self, generation_id: IdPath, request: Request):
        """Status and progress (0-100) of a generation; the error when it failed."""
        Store.check_id(generation_id, "generation id")
        await run_in_threadpool(self._check_owner, generation_id, request)
        return _public(await run_in_threadpool(self.queue.status, generation_id))

    @_http
    async def download(self, generation_id: IdPath, request: Request,
                       format: str | None = Query(None, pattern="^(wav|mid|json)$")):  # noqa: A002
        """The result file: WAV for musicgen, MIDI for lstm (``format`` picks another)."""
        Store.check_id(generation_id, "generation id")
        await run_in_threadpool(self._check_owner, generation_id, request)
        st = await run_in_threadpool(self.queue.status, generation_id)
        if st["status"] != "finished":
            raise HTTPException(409, f"generation {generation_id} is {st['status']}"
                                + (f": {st['error']}" if st.get("error") else ""))
        if format is None:
            path = self.store.result_file(generation_id)
            media = "audio/wav" if path.suffix == ".wav" else "audio/midi"
        else:
            name, media = _MEDIA[format]
            path = self.store.result_dir(generation_id) / name
            if not path.exists():
                raise NotFound(f"generation {generation_id} has no {format} output")
        if media is None:
            return JSONResponse(self.store.result_meta(generation_id))
        return FileResponse(path, media_type=media, filename=f"{generation_id}{path.suffix}")

    def _check_owner(self, generation_id: str, request: Request) -> None:
        """With API keys, a job is visible only to the key that submitted it (404 otherwise)."""
        key = getattr(request.state, "api_key", None)
        if key is None:
            return  # open mode: loopback only, one user
        owner = self.bus.redis.get(keys.generation_owner(generation_id))
        if owner is None or owner.decode() != key:
            raise NotFound(f"no generation {generation_id}")


def build_router(bus: Bus, config: GenerateConfig, *, store: Store | None = None, settings: Settings | None = None,
                 read_dependencies: Sequence[Any] = (), write_dependencies: Sequence[Any] = ()) -> APIRouter:
    """The generation routes, bound to a broker connection and a configuration.

    Parameters
    ----------
    bus : Bus
        Connected bus (stream conditioning reads its streams; rq uses its Redis client unless
        ``settings.rq_url`` names another).
    config : GenerateConfig
        Limits, queue name, state directory.
    store : Store, optional
        Uploads and results (default: under ``config.state_path``).
    settings : Settings, optional
        The core settings (``rq_url``); default: none set. With a cluster bus and no ``rq_url``
        the routes that need the job queue answer 503 saying so.
    read_dependencies, write_dependencies
        FastAPI dependencies for read routes (status, download, embedding, similar) and
        write routes (upload, generate), e.g. authentication with scopes.
    """
    routes = _Routes(bus, config, store or Store(config.state_path), settings or Settings())
    router = APIRouter(tags=["generation"], responses=_ERRORS)
    read, write = list(read_dependencies), list(write_dependencies)
    router.add_api_route("/api/upload", routes.upload, methods=["POST"], status_code=201, dependencies=write,
                         max_body_size=config.max_upload_bytes + _MULTIPART_SLACK, openapi_extra=_UPLOAD_BODY)
    router.add_api_route("/api/embedding/{audio_id}", routes.embedding, methods=["GET"], dependencies=read,
                         responses={202: {"description": "the embedding is being computed"}})
    router.add_api_route("/api/generate/{audio_id}", routes.generate_from_upload, methods=["POST"], status_code=202,
                         dependencies=write, openapi_extra=_GENERATE_BODY, max_body_size=_JSON_BODY_LIMIT)
    router.add_api_route("/api/generate", routes.generate, methods=["POST"], status_code=202, dependencies=write,
                         openapi_extra=_GENERATE_BODY, max_body_size=_JSON_BODY_LIMIT)
    router.add_api_route("/api/status/{generation_id}", routes.status, methods=["GET"], dependencies=read)
    router.add_api_route("/api/download/{generation_id}", routes.download, methods=["GET"], dependencies=read)
    router.add_api_route("/api/similar/{audio_id}", routes.similar, methods=["GET"], dependencies=read)
    return router
