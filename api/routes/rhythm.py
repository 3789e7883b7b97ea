"""Rhythm mode and manual triggers: ``/api/start-rhythm-mode``, ``/api/stop-rhythm-mode``,
``/api/rhythm-mode`` and ``/api/beat-trigger`` (503 without an error generator URL)."""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson
from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from beatbus.consumers.trigger import Outcome, Trigger, trigger_payload

from ..contract import errors
from ..deps import require
from ..models import (
    DEFAULT_TEMPO,
    BeatTriggerRequest,
    BeatTriggerResponse,
    RhythmModeRequest,
    RhythmModeStarted,
    RhythmModeStatus,
)
from ..rhythm import SourceNotLive
from ..sources import source_state
from ..state import ERRORS, Api, broker

__all__ = ["router"]

router = APIRouter(tags=["rhythm"])


@router.post("/api/start-rhythm-mode", response_model=RhythmModeStarted, dependencies=[require("trigger")],
             responses={**ERRORS, **errors(409)})
async def start_rhythm_mode(req: RhythmModeRequest, api: Api) -> RhythmModeStarted:
    """Fire triggers for ``duration`` s (default 180): from a live source's beats if one runs, else
    from a tempo-driven schedule of ``song_data`` (an analyze-song answer, ours or the original
    service's, or ``{"name", "audio_features": {"tempo"}}``)."""
    mode = api.rhythm_mode()
    try:
        status = await run_in_threadpool(broker, mode.start, req.song_data, duration=req.duration,
                                         source=req.source)
    except SourceNotLive as exc:
        raise HTTPException(409, str(exc)) from None
    tempo = req.song_data.tempo
    return RhythmModeStarted(**status.model_dump(), tempo=tempo, beat_interval=round(60.0 / tempo, 6),
                             duration=req.duration)


@router.post("/api/stop-rhythm-mode", response_model=RhythmModeStatus, dependencies=[require("trigger")],
             responses=ERRORS)
async def stop_rhythm_mode(api: Api) -> RhythmModeStatus:
    return await run_in_threadpool(api.rhythm_mode().stop)


@router.get("/api/rhythm-mode", response_model=RhythmModeStatus, dependencies=[require("read")])
def rhythm_mode_status(api: Api) -> RhythmModeStatus:
    return api.rhythm.status() if api.rhythm is not None else RhythmModeStatus(active=False)


@router.post("/api/beat-trigger", response_model=BeatTriggerResponse, dependencies=[require("trigger")],
             responses={**ERRORS, 502: {"model": BeatTriggerResponse, "description": "the receiver failed"}})
async def beat_trigger(req: BeatTriggerRequest, api: Api) -> BeatTriggerResponse:
    """Send one trigger now: the section's pattern, ``beat_num``, the tempo."""
    api.rhythm_mode()                   # 503 without an error generator
    tempo = req.tempo
    if tempo is None and req.source:
        tempo = (await run_in_threadpool(broker, source_state, api.bus, req.source, live=True)).bpm
    tempo = tempo or DEFAULT_TEMPO
    pattern = api.book.pattern_for(req.section)
    body = trigger_payload(error_type=pattern, beat=req.beat_num, section=req.section, tempo=tempo)
    key = f"api:{uuid.uuid4().hex}:0"
    result = await asyncio.wrap_future(api.delivery.submit(Trigger(key=key, body=body, due=time.time())))
    delivered = result.outcome is Outcome.DELIVERED
    out = BeatTriggerResponse(outcome=result.outcome.value, status=result.status, attempts=result.attempts,
                              idempotency_key=key, payload=orjson.loads(body), success=delivered,
                              triggered=delivered, error_type=pattern, section=req.section, beat=req.beat_num)
    if not delivered:
        return JSONResponse(out.model_dump(), status_code=502)
    return out
