"""``WS /ws/{source}``: the source's beats, intensity (levels and transitions), sections and controls,
one JSON text per message."""
from __future__ import annotations

from fastapi import APIRouter, WebSocket

from beatbus import keys
from beatbus.errors import BeatbusError

from ..deps import require, ws_subprotocol
from ..state import Api
from ..websocket import deny, pump

__all__ = ["router"]

router = APIRouter()


@router.websocket("/ws/{source}", dependencies=[require("read")])
async def events(websocket: WebSocket, source: str, api: Api) -> None:
    """The source's beats, intensity, sections and controls, one JSON event per message."""
    try:
        keys.check_source(source)
    except BeatbusError as exc:
        return await deny(websocket, 422, f"path.source: {exc}")
    await websocket.accept(subprotocol=ws_subprotocol(websocket))
    q = api.hub.subscribe(source)
    try:
        await pump(websocket, q.get)
    finally:
        api.hub.unsubscribe(source, q)
