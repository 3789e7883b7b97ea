"""The FastAPI application: routes, WebSocket feed, /metrics and the dashboard.

Routes (OpenAPI at ``/docs``; every guarded route names its scope, see :mod:`api.deps`: with API
keys configured a route needs ``Authorization: Bearer <key>`` with that scope, a WebSocket the
key as subprotocol ``bearer.<key>`` next to ``beatbus.v1``; without keys loopback clients only):

=======  ===============================  =========  ==========================================
method   path                             scope      what
=======  ===============================  =========  ==========================================
GET      /health                          (open)     status, service, backends, fpga_enabled
POST     /api/analyze-song                read       song plan from metadata (JSON) or audio
POST     /api/start-rhythm-mode           trigger    song_data + duration -> triggers
POST     /api/stop-rhythm-mode            trigger    stop it
GET      /api/rhythm-mode                 read       is it running, outcomes so far
POST     /api/beat-trigger                trigger    one manual trigger now
GET      /api/sources                     read       every live source's state
GET      /api/sources/{id}                read       one source's state
POST     /api/sources/{id}/control        control    ControlEvent -> bb:{id}:control
WS       /ws/{source}                     read       the source's events as JSON text
GET      /api/led/devices                 read       LED web-preview devices in this process
WS       /ws/led/{device}                 read       an LED device's frames (RGB bytes)
GET      /metrics                         (open)     Prometheus
GET      /                                (open)     the dashboard (api/static)
=======  ===============================  =========  ==========================================
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Sequence

import msgspec
import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Path as PathParam, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from beatbus import __version__, keys
from beatbus.bus import BROKER_ERRORS, Bus
from beatbus.config import Settings
from beatbus.errors import BeatbusError
from beatbus.log import get_logger
from consumers.trigger import DeliveryThread, Outcome, PatternBook, Trigger, TriggerConfig, trigger_payload

from .control import publish_control
from .deps import Guard, WsDenied, require, ws_subprotocol
from .hub import EventHub
from .models import (BeatTriggerRequest, BeatTriggerResponse, ControlRequest, ControlResponse, ErrorBody, Health,
                     RhythmModeRequest, RhythmModeStatus, SongMetadata, SongPlan, SourceList, SourceState)
from .rhythm import RHYTHM_SOURCE, RhythmMode, SourceNotLive
from .song_plan import plan_from_audio, plan_from_metadata
from .sources import known_source, live_sources, source_state

__all__ = ["create_app", "ApiLimits", "STATIC_DIR"]

log = get_logger("api")
STATIC_DIR = Path(__file__).with_name("static")
SourcePath = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="source name")]
_ERRORS = {400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody},
           503: {"model": ErrorBody, "description": "broker or error generator unavailable / not configured"}}


@dataclass(frozen=True)
class ApiLimits:
    """Size limits of request bodies and uploads.

    Attributes
    ----------
    body_bytes : int
        Any JSON request body.
    upload_bytes : int
        An audio file posted to ``/api/analyze-song``.
    upload_seconds : float
        Longest audio analysed (checked from the file header, before any analysis).
    """

    body_bytes: int = 64 * 1024
    upload_bytes: int = 20 * 1024 * 1024
    upload_seconds: float = 600.0


def _field_errors(errors) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


async def _deny(websocket: WebSocket, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Refuse a WebSocket handshake with an HTTP status and a JSON reason (close 1008 if unsupported)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status_code=status, headers=headers))
    else:
        await websocket.close(code=1008, reason=detail[:120])


async def _pump(websocket: WebSocket, next_message) -> None:
    """Send ``await next_message()`` (text or bytes) until the client leaves or the server stops.

    A second task watches the client's side, so a departure is noticed even while no
    message is due (otherwise a quiet feed would hold the connection open at shutdown).
    """
    async def client_left() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    watcher = asyncio.create_task(client_left())
    try:
        while True:
            getter = asyncio.ensure_future(next_message())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return
            message = getter.result()
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)
    except (WebSocketDisconnect, RuntimeError, StopAsyncIteration):
        return
    finally:
        watcher.cancel()


def create_app(bus: Bus, settings: Settings, *, trigger: TriggerConfig | None = None,
               limits: ApiLimits | None = None, routers: Sequence[APIRouter] = (), guard: Guard | None = None,
               cors_origins: Sequence[str] = ()) -> FastAPI:
    """Build the API.

    Parameters
    ----------
    bus : Bus
        Connected broker client (the caller owns and closes it).
    settings : Settings
    trigger : TriggerConfig, optional
        Where triggers go (``url`` from configuration, never from requests). Without a URL,
        trigger routes answer 503.
    limits : ApiLimits, optional
    routers : sequence of APIRouter
        Other stages' routes (e.g. generation's ``build_router``), included as they are;
        they guard themselves with :func:`api.deps.require`.
    guard : Guard, optional
        API keys and rate limits (:mod:`api.deps`); None: no keys (loopback clients only) and
        no rate limits.
    cors_origins : sequence of str
        Origins allowed to call the API from a browser; empty (default): no CORS headers, so
        only the dashboard's own origin can.
    """
    limits = limits or ApiLimits()
    book: PatternBook = trigger.book() if trigger else PatternBook()
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        state["hub"] = EventHub(bus, block_ms=settings.block_ms)
        if trigger is not None and trigger.url:
            state["delivery"] = DeliveryThread(trigger, name="api-delivery").start()
            state["rhythm"] = RhythmMode(bus, settings=settings, config=trigger, delivery=state["delivery"],
                                         live_sources=lambda: live_sources(bus, settings))
        try:
            yield
        finally:
            if "rhythm" in state:
                await run_in_threadpool(state["rhythm"].close)
            if "delivery" in state:
                await run_in_threadpool(state["delivery"].close, 1.0)
            await run_in_threadpool(state["hub"].close)

    app = FastAPI(title="beatbus", version=__version__, lifespan=lifespan, max_body_size=limits.body_bytes,
                  description="Real-time rhythm events: sources, triggers, rhythm mode, live dashboard.")

    app.state.guard = guard or Guard()
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"])

    @app.exception_handler(WsDenied)
    async def _ws_denied(websocket: WebSocket, exc: WsDenied):
        await _deny(websocket, exc.status, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _field_errors(exc.errors())}, status_code=422)

    @app.exception_handler(BeatbusError)
    async def _user_error(_request: Request, exc: BeatbusError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def _broker(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BROKER_ERRORS as exc:
            raise HTTPException(503, f"broker unavailable: {type(exc).__name__}") from None

    def _rhythm() -> RhythmMode:
        if "rhythm" not in state:
            raise HTTPException(503, "no error generator configured: start the API with --trigger-url "
                                     "or ERROR_GENERATOR_URL")
        return state["rhythm"]

    # -- health -------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["health"])
    def health() -> Health:
        backends = {"beat": settings.backend}
        try:
            bus.redis.ping()
            backends["broker"] = "ok"
        except BROKER_ERRORS:
            backends["broker"] = "down"
        if "delivery" in state:
            backends["error_generator"] = f"circuit {state['delivery'].breaker.state.value}"
        else:
            backends["error_generator"] = "not configured"
        return Health(status="ok" if backends["broker"] == "ok" else "degraded", service="beatbus",
                      version=__version__, backends=backends, fpga_enabled=settings.backend == "hls")

    # -- song analysis ------------------------------------------------------------------
    analyze_body = {"required": True, "content": {
        "application/json": {"schema": SongMetadata.model_json_schema()},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "audio/flac": {"schema": {"type": "string", "format": "binary"}},
    }}

    @app.post("/api/analyze-song", response_model=SongPlan, tags=["rhythm"], dependencies=[require("read")],
              max_body_size=limits.upload_bytes, openapi_extra={"requestBody": analyze_body},
              responses={**_ERRORS, 415: {"model": ErrorBody}})
    async def analyze_song(request: Request) -> SongPlan:
        """Plan a song: JSON metadata -> the heuristic; an audio body (``audio/*`` or
        ``application/octet-stream``) -> tracked tempo and meter."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if ctype == "application/json":
            if len(body) > limits.body_bytes:
                raise HTTPException(413, f"request body is larger than the limit of {limits.body_bytes} bytes")
            try:
                meta = SongMetadata.model_validate_json(body or b"null")
            except ValidationError as exc:
                raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
            return plan_from_metadata(meta, pattern_for=book.pattern_for)
        if ctype.startswith("audio/") or ctype == "application/octet-stream":
            return await _analyze_audio(body, request.headers.get("x-filename", ""))
        raise HTTPException(415, f"content-type {ctype or '(none)'!r}: send application/json (song metadata) "
                                 "or audio/* / application/octet-stream (an audio file)")

    analyses = asyncio.Semaphore(2)      # beat tracking is CPU-bound: at most two at once

    def _store_upload(body: bytes) -> tuple[str, float]:
        """Write the upload under a generated name and read its header: (path, seconds)."""
        import soundfile as sf

        fd, path = tempfile.mkstemp(prefix="beatbus-upload-")      # never the client's file name
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        try:
            info = sf.info(path)
        except Exception as exc:   # soundfile raises several types for undecodable input
            os.unlink(path)
            reason = str(exc).replace(f"'{path}'", "the upload")[:120]
            raise HTTPException(415, f"file: not a decodable audio file ({reason})") from None
        if not info.frames or not info.samplerate:
            os.unlink(path)
            raise HTTPException(422, "file: the audio has no samples")
        return path, info.frames / info.samplerate

    async def _analyze_audio(body: bytes, title: str) -> SongPlan:
        if not body:
            raise HTTPException(422, "file: the audio body is empty")
        path, seconds = await run_in_threadpool(_store_upload, body)
        try:
            if seconds > limits.upload_seconds:
                raise HTTPException(413, f"file: {seconds:.0f} s of audio is longer than the limit of "
                                         f"{limits.upload_seconds:.0f} s")
            async with analyses:
                try:
                    return await run_in_threadpool(
                        plan_from_audio, path, duration=seconds, backend=settings.backend, sr=settings.sr,
                        title=title[:200], pattern_for=book.pattern_for)
                except ValueError as exc:
                    raise HTTPException(422, f"file: {exc}") from None
                except RuntimeError as exc:    # libsndfile read errors past the header
                    raise HTTPException(415, f"file: audio could not be decoded ({str(exc)[:120]})") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # -- rhythm mode and manual triggers --------------------------------------------------
    @app.post("/api/start-rhythm-mode", response_model=RhythmModeStatus, tags=["rhythm"],
              dependencies=[require("trigger")], responses={**_ERRORS, 409: {"model": ErrorBody}})
    async def start_rhythm_mode(req: RhythmModeRequest) -> RhythmModeStatus:
        """Fire triggers for ``duration`` s: from a live source's beats if one runs, else from a
        tempo-driven schedule of ``song_data``."""
        mode = _rhythm()
        try:
            return await run_in_threadpool(_broker, mode.start, req.song_data, duration=req.duration,
                                           source=req.source)
        except SourceNotLive as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/stop-rhythm-mode", response_model=RhythmModeStatus, tags=["rhythm"],
              dependencies=[require("trigger")], responses=_ERRORS)
    async def stop_rhythm_mode() -> RhythmModeStatus:
        return await run_in_threadpool(_rhythm().stop)

    @app.get("/api/rhythm-mode", response_model=RhythmModeStatus, tags=["rhythm"], dependencies=[require("read")])
    def rhythm_mode_status() -> RhythmModeStatus:
        return state["rhythm"].status() if "rhythm" in state else RhythmModeStatus(active=False)

    @app.post("/api/beat-trigger", response_model=BeatTriggerResponse, tags=["rhythm"],
              dependencies=[require("trigger")],
              responses={**_ERRORS, 502: {"model": BeatTriggerResponse, "description": "the receiver failed"}})
    async def beat_trigger(req: BeatTriggerRequest) -> BeatTriggerResponse:
        """Send one trigger now: the section's pattern, ``beat_num``, the tempo."""
        _rhythm()
        tempo = req.tempo
        if tempo is None and req.source:
            tempo = (await run_in_threadpool(_broker, source_state, bus, req.source, live=True)).bpm
        tempo = tempo or 120.0
        pattern = book.pattern_for(req.section)
        body = trigger_payload(error_type=pattern, beat=req.beat_num, section=req.section, tempo=tempo)
        key = f"api:{uuid.uuid4().hex}:0"
        result = await asyncio.wrap_future(state["delivery"].submit(Trigger(key=key, body=body, due=time.time())))
        out = BeatTriggerResponse(outcome=result.outcome.value, status=result.status, attempts=result.attempts,
                                  idempotency_key=key, payload=orjson.loads(body))
        if result.outcome is not Outcome.DELIVERED:
            return JSONResponse(out.model_dump(), status_code=502)
        return out

    # -- sources -------------------------------------------------------------------------
    def _extra_sources() -> list[str]:
        rhythm = state.get("rhythm")
        status = rhythm.status() if rhythm else None
        return [RHYTHM_SOURCE] if status and status.active and status.source == RHYTHM_SOURCE else []

    @app.get("/api/sources", response_model=SourceList, tags=["sources"], dependencies=[require("read")],
             responses=_ERRORS)
    def list_sources() -> SourceList:
        live = _broker(live_sources, bus, settings)
        names = sorted(set(live) | set(_extra_sources()))
        return SourceList(sources=[_broker(source_state, bus, n, live=n in live) for n in names])

    @app.get("/api/sources/{source}", response_model=SourceState, tags=["sources"], dependencies=[require("read")],
             responses={404: {"model": ErrorBody}, **_ERRORS})
    def get_source(source: SourcePath) -> SourceState:
        if not _broker(known_source, bus, source):
            raise HTTPException(404, f"source {source!r} is unknown (see GET /api/sources)")
        return _broker(source_state, bus, source, live=source in _broker(live_sources, bus, settings))

    @app.post("/api/sources/{source}/control", response_model=ControlResponse, tags=["sources"],
              dependencies=[require("control")], responses={404: {"model": ErrorBody}, **_ERRORS})
    def control_source(source: SourcePath, req: ControlRequest) -> ControlResponse:
        """Publish a ControlEvent (fields left out are unchanged) on ``bb:{source}:control``."""
        if not _broker(known_source, bus, source):
            raise HTTPException(404, f"source {source!r} is unknown (see GET /api/sources)")
        entry, event = _broker(publish_control, bus, source, **req.model_dump())
        return ControlResponse(stream=keys.stream(source, keys.StreamKind.CONTROL), id=entry,
                               event=msgspec.to_builtins(event))

    # -- events ----------------------------------------------------------------------------
    @app.websocket("/ws/{source}", dependencies=[require("read")])
    async def events(websocket: WebSocket, source: str) -> None:
        """The source's beats, intensity, sections and controls, one JSON event per message."""
        try:
            keys.check_source(source)
        except BeatbusError as exc:
            return await _deny(websocket, 422, f"path.source: {exc}")
        await websocket.accept(subprotocol=ws_subprotocol(websocket))
        hub: EventHub = state["hub"]
        q = hub.subscribe(source)
        try:
            await _pump(websocket, q.get)
        finally:
            hub.unsubscribe(source, q)

    # -- LED preview (the LED consumer's web output, when it runs in this process) -----------
    def _led_hub():
        # Only if the LED consumer is loaded here (e.g. `beatbus run`): importing it costs ~1 s.
        web = sys.modules.get("consumers.led.outputs.web")
        return web.HUB if web is not None else None

    @app.get("/api/led/devices", tags=["led"], dependencies=[require("read")])
    def led_devices() -> dict[str, list[str]]:
        """LED devices with a web preview in this process (``web://NAME`` outputs)."""
        hub = _led_hub()
        return {"devices": hub.names() if hub else []}

    @app.websocket("/ws/led/{device}", dependencies=[require("read")])
    async def led_preview(websocket: WebSocket, device: str) -> None:
        """A text ``hello`` (device, pixels, fps, format rgb8), then one binary RGB frame per message."""
        hub = _led_hub()
        if hub is None or device not in hub.names():
            return await _deny(websocket, 404, f"no LED preview device {device[:64]!r} in this process")
        await websocket.accept(subprotocol=ws_subprotocol(websocket))
        await websocket.send_text(orjson.dumps({"type": "hello", "device": device, "format": "rgb8",
                                                **hub.meta.get(device, {})}).decode())
        frames = hub.frames(device)
        try:
            await _pump(websocket, frames.__anext__)
        finally:
            await frames.aclose()

    for router in routers:
        app.include_router(router)

    default_openapi = app.openapi

    def openapi() -> dict:
        """The generated document plus the bearer scheme on every guarded route (for /docs' Authorize)."""
        if app.openapi_schema is None:
            doc = default_openapi()
            doc.setdefault("components", {})["securitySchemes"] = {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "An API key from `beatbus api keys create` (not needed when none exist)"}}
            for path, ops in doc.get("paths", {}).items():
                for op in ops.values():
                    if path != "/health" and isinstance(op, dict):
                        op["security"] = [{"apiKey": []}]
        return app.openapi_schema

    app.openapi = openapi

    # -- metrics and dashboard -------------------------------------------------------------
    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app
