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
GET      /api/led/devices                 read       LED devices of every running LED consumer
WS       /ws/led/{device}                 read       an LED device's frames (RGB bytes)
GET      /metrics                         (open)     Prometheus
GET      /                                (open)     the dashboard (api/static)
=======  ===============================  =========  ==========================================
"""
from __future__ import annotations

import asyncio
import contextlib
import json
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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from beatbus import __version__, keys
from beatbus.bus import BROKER_ERRORS, Bus
from beatbus.config import Settings
from beatbus.errors import BeatbusError
from beatbus.log import get_logger
from beatbus.consumers.trigger import DeliveryThread, Outcome, PatternBook, Trigger, TriggerConfig, trigger_payload

from .contract import JsonTooLarge, errors, field_errors, finish_openapi, invalid_json, too_large
from .control import publish_control
from .deps import Guard, WsDenied, require, ws_subprotocol
from .hub import EventHub
from .led_preview import LedPreviews
from .models import (DEFAULT_TEMPO, BeatTriggerRequest, BeatTriggerResponse, ControlRequest, ControlResponse, Health,
                     RhythmModeRequest, RhythmModeStarted, RhythmModeStatus, SongMetadata, SongPlan, SourceList,
                     SourceState)
from .rhythm import RHYTHM_SOURCE, RhythmMode, SourceNotLive
from .song_plan import plan_from_audio, plan_from_metadata
from .sources import known_source, live_sources, source_state

__all__ = ["create_app", "ApiLimits", "STATIC_DIR"]

log = get_logger("api")
STATIC_DIR = Path(__file__).with_name("static")
SourcePath = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="source name")]
_ERRORS = errors(400, 503)           # 401/403/404/413/422/429 are added where they apply (api.contract)


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


class _App(FastAPI):
    def build_middleware_stack(self):
        return JsonTooLarge(super().build_middleware_stack())      # outside Starlette's body limit


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
        state["led"] = LedPreviews(bus)
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
            await run_in_threadpool(state["led"].close)

    app = _App(title="beatbus", version=__version__, lifespan=lifespan, max_body_size=limits.body_bytes,
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
        return JSONResponse({"detail": field_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        status, detail, cause = exc.status_code, exc.detail, exc.__cause__
        if status == 413 and detail == "Content Too Large":     # Starlette's body limit
            detail = too_large(request.scope.get(MAX_BODY_SIZE_SCOPE_KEY))
        elif status == 400 and isinstance(cause, UnicodeDecodeError):     # FastAPI's JSON body parser
            status, detail = 422, invalid_json("not UTF-8 text", cause.start)
        return JSONResponse({"detail": detail}, status_code=status, headers=exc.headers)

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
            raise HTTPException(503, "no error generator configured: start the API with --error-generator-url "
                                     "or BEATBUS_ERROR_GENERATOR_URL")
        return state["rhythm"]

    # -- health -------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["health"],
             responses={503: {"model": Health, "description": "unhealthy: the broker does not answer"}})
    def health():
        """``healthy`` while the broker answers, else 503 ``unhealthy`` (``backends`` says which part)."""
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
        healthy = backends["broker"] == "ok"
        doc = Health(status="healthy" if healthy else "unhealthy", service="beatbus", version=__version__,
                     backends=backends, fpga_enabled=settings.backend == "hls")
        return doc if healthy else JSONResponse(doc.model_dump(), status_code=503)

    # -- song analysis ------------------------------------------------------------------
    metadata_schema = SongMetadata.model_json_schema(ref_template="#/components/schemas/{model}")
    extra_schemas = metadata_schema.pop("$defs", {})       # added to the document's components below
    analyze_body = {"required": True, "content": {
        "application/json": {"schema": metadata_schema},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "audio/flac": {"schema": {"type": "string", "format": "binary"}},
    }}

    @app.post("/api/analyze-song", response_model=SongPlan, tags=["rhythm"], dependencies=[require("read")],
              max_body_size=limits.upload_bytes, openapi_extra={"requestBody": analyze_body},
              responses={**_ERRORS, **errors(415)})
    async def analyze_song(request: Request) -> SongPlan:
        """Plan a song: JSON metadata (ours, or the original rhythm service's ``name``, ``artist``,
        ``audio_features``) -> the heuristic; an audio body (``audio/*`` or
        ``application/octet-stream``) -> tracked tempo and meter."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if ctype == "application/json":
            if len(body) > limits.body_bytes:
                raise HTTPException(413, too_large(limits.body_bytes))
            try:
                meta = SongMetadata.model_validate(json.loads(body or b"null"))
            except json.JSONDecodeError as exc:
                raise HTTPException(422, invalid_json(exc.msg, exc.pos)) from None
            except UnicodeDecodeError as exc:
                raise HTTPException(422, invalid_json("not UTF-8 text", exc.start)) from None
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
    @app.post("/api/start-rhythm-mode", response_model=RhythmModeStarted, tags=["rhythm"],
              dependencies=[require("trigger")], responses={**_ERRORS, **errors(409)})
    async def start_rhythm_mode(req: RhythmModeRequest) -> RhythmModeStarted:
        """Fire triggers for ``duration`` s (default 180): from a live source's beats if one runs, else
        from a tempo-driven schedule of ``song_data`` (an analyze-song answer, ours or the original
        service's, or ``{"name", "audio_features": {"tempo"}}``)."""
        mode = _rhythm()
        try:
            status = await run_in_threadpool(_broker, mode.start, req.song_data, duration=req.duration,
                                             source=req.source)
        except SourceNotLive as exc:
            raise HTTPException(409, str(exc)) from None
        tempo = req.song_data.tempo
        return RhythmModeStarted(**status.model_dump(), tempo=tempo, beat_interval=round(60.0 / tempo, 6),
                                 duration=req.duration)

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
        tempo = tempo or DEFAULT_TEMPO
        pattern = book.pattern_for(req.section)
        body = trigger_payload(error_type=pattern, beat=req.beat_num, section=req.section, tempo=tempo)
        key = f"api:{uuid.uuid4().hex}:0"
        result = await asyncio.wrap_future(state["delivery"].submit(Trigger(key=key, body=body, due=time.time())))
        delivered = result.outcome is Outcome.DELIVERED
        out = BeatTriggerResponse(outcome=result.outcome.value, status=result.status, attempts=result.attempts,
                                  idempotency_key=key, payload=orjson.loads(body), success=delivered,
                                  triggered=delivered, error_type=pattern, section=req.section, beat=req.beat_num)
        if not delivered:
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
             responses={**_ERRORS, **errors(404)})
    def get_source(source: SourcePath) -> SourceState:
        if not _broker(known_source, bus, source):
            raise HTTPException(404, f"source {source!r} is unknown (see GET /api/sources)")
        return _broker(source_state, bus, source, live=source in _broker(live_sources, bus, settings))

    @app.post("/api/sources/{source}/control", response_model=ControlResponse, tags=["sources"],
              dependencies=[require("control")], responses={**_ERRORS, **errors(404)})
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

    # -- LED preview: devices of any LED consumer, relayed from the broker (api.led_preview), ---
    # -- and the web:// outputs of an LED consumer running in this process --------------------
    def _led_hub():
        # Only if the LED consumer is loaded here (e.g. `beatbus run`): importing it costs ~1 s.
        web = sys.modules.get("beatbus.consumers.led.outputs.web")
        return web.HUB if web is not None else None

    @app.get("/api/led/devices", tags=["led"], dependencies=[require("read")], responses=errors(503))
    def led_devices() -> dict[str, list[str]]:
        """LED devices of every running LED consumer (any process on this broker), and this process's
        ``web://NAME`` outputs; ``WS /ws/led/{device}`` streams their frames."""
        hub = _led_hub()
        names = set(_broker(state["led"].devices)) | set(hub.names() if hub else [])
        return {"devices": sorted(names)}

    async def _relayed_led_preview(websocket: WebSocket, device: str) -> None:
        previews: LedPreviews = state["led"]
        try:
            info = await run_in_threadpool(previews.info, device)
        except BROKER_ERRORS as exc:
            return await _deny(websocket, 503, f"broker unavailable: {type(exc).__name__}")
        if info is None:
            return await _deny(websocket, 404, f"no LED preview device {device[:64]!r} (see GET /api/led/devices)")
        await websocket.accept(subprotocol=ws_subprotocol(websocket))
        await websocket.send_text(orjson.dumps({"type": "hello", "device": device, "format": "rgb8",
                                                **info}).decode())
        q = previews.subscribe(device)

        async def next_frame() -> bytes:
            frame = await q.get()
            if frame is None:                 # the device's consumer stopped
                raise StopAsyncIteration
            return frame

        try:
            await _pump(websocket, next_frame)
        finally:
            previews.unsubscribe(device, q)

    @app.websocket("/ws/led/{device}", dependencies=[require("read")])
    async def led_preview(websocket: WebSocket, device: str) -> None:
        """A text ``hello`` (device, pixels, fps, format rgb8), then one binary RGB frame per message."""
        hub = _led_hub()
        if hub is None or device not in hub.names():
            return await _relayed_led_preview(websocket, device)
        await websocket.accept(subprotocol=ws_subprotocol(websocket))
        await websocket.send_text(orjson.dumps({"type": "hello", "device": device, "format": "rgb8",
                                                **hub.meta.get(device, {})}).decode())
        frames = hub.frames(device)
        try:
            await _pump(websocket, frames.__anext__)
        finally:
            with contextlib.suppress(RuntimeError):     # still running: the cancelled read ends it
                await frames.aclose()

    for router in routers:
        app.include_router(router)

    default_openapi = app.openapi

    documents: dict[bool, dict] = {}

    def openapi() -> dict:
        """The generated document, completed by :func:`api.contract.finish_openapi` (errors on every
        route; the bearer scheme while API keys exist, which can change while the API runs)."""
        keyed = app.state.guard.has_keys()
        if keyed not in documents:
            doc = default_openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(extra_schemas)
            documents[keyed] = finish_openapi(doc, keyed=keyed)
        return documents[keyed]

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
