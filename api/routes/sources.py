"""Sources: ``GET /api/sources``, ``GET /api/sources/{source}``, ``GET /api/sources/{source}/sections``,
``POST /api/sources/{source}/control``."""
from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam

from beatbus import keys
from beatbus.bus import BROKER_ERRORS

from ..contract import errors
from ..control import publish_control
from ..deps import require
from ..models import ControlRequest, ControlResponse, SectionHistory, SourceList, SourceState
from ..rhythm import RHYTHM_SOURCE
from ..sources import known_source, live_sources, section_history, source_state
from ..state import ERRORS, Api, ApiState, broker

__all__ = ["router"]

router = APIRouter(tags=["sources"])
SourcePath = Annotated[str, PathParam(pattern=keys.NAME_PATTERN, description="source name")]


def _rhythm_source(api: ApiState) -> list[str]:
    """Rhythm mode's own source while it schedules triggers without a live one."""
    status = api.rhythm.status() if api.rhythm is not None else None
    return [RHYTHM_SOURCE] if status and status.active and status.source == RHYTHM_SOURCE else []


def _known(api: ApiState, source: str) -> None:
    if not broker(known_source, api.bus, source):
        raise HTTPException(404, f"source {source!r} is unknown (see GET /api/sources)")


@router.get("/api/sources", response_model=SourceList, dependencies=[require("read")], responses=ERRORS)
def list_sources(api: Api) -> SourceList:
    live = broker(live_sources, api.bus, api.settings)
    names = sorted(set(live) | set(_rhythm_source(api)))
    return SourceList(sources=[_state(api, n, live=n in live) for n in names])


def _state(api: ApiState, source: str, *, live: bool) -> SourceState:
    """A source's state; on a cluster, a shard that is down leaves the source unreachable, not the
    answer 503 (the registry, on another node, answered: whether the source is live is known)."""
    try:
        return source_state(api.bus, source, live=live)
    except BROKER_ERRORS:
        return SourceState(source=source, live=live, reachable=False)


@router.get("/api/sources/{source}", response_model=SourceState, dependencies=[require("read")],
            responses={**ERRORS, **errors(404)})
def get_source(source: SourcePath, api: Api) -> SourceState:
    _known(api, source)
    return _state(api, source, live=source in broker(live_sources, api.bus, api.settings))


@router.get("/api/sources/{source}/sections", response_model=SectionHistory, dependencies=[require("read")],
            responses={**ERRORS, **errors(404)})
def get_sections(source: SourcePath, api: Api) -> SectionHistory:
    """The song so far: confirmed sections of the source's current run, relabels applied (oldest first)."""
    _known(api, source)
    return SectionHistory(source=source, sections=broker(section_history, api.bus, source))


@router.post("/api/sources/{source}/control", response_model=ControlResponse, dependencies=[require("control")],
             responses={**ERRORS, **errors(404)})
def control_source(source: SourcePath, req: ControlRequest, api: Api) -> ControlResponse:
    """Publish a ControlEvent (fields left out are unchanged) on ``bb:{source}:control``."""
    _known(api, source)
    entry, event = broker(publish_control, api.bus, source, **req.model_dump())
    return ControlResponse(stream=keys.stream(source, keys.StreamKind.CONTROL), id=entry,
                           event=msgspec.to_builtins(event))
