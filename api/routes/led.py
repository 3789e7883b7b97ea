"""LED preview: ``GET /api/led/devices`` and ``WS /ws/led/{device}``.

Devices of any LED consumer on this broker are relayed from it (:mod:`api.led_preview`); the
``web://`` outputs of an LED consumer running in this process are streamed directly.
"""
from __future__ import annotations

import contextlib
import sys

import orjson
from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool

from beatbus.bus import BROKER_ERRORS

from ..contract import errors
from ..deps import require, ws_subprotocol
from ..led_preview import LedPreviews
from ..state import Api, broker
from ..websocket import deny, pump

__all__ = ["router"]

router = APIRouter()


def _local_hub():
    # Only if the LED consumer is loaded here (e.g. `beatbus run`): importing it costs ~1 s.
    web = sys.modules.get("beatbus.consumers.led.outputs.web")
    return web.HUB if web is not None else None


def _hello(device: str, info: dict) -> str:
    return orjson.dumps({"type": "hello", "device": device, "format": "rgb8", **info}).decode()


@router.get("/api/led/devices", tags=["led"], dependencies=[require("read")], responses=errors(503))
def led_devices(api: Api) -> dict[str, list[str]]:
    """LED devices of every running LED consumer (any process on this broker), and this process's
    ``web://NAME`` outputs; ``WS /ws/led/{device}`` streams their frames."""
    hub = _local_hub()
    names = set(broker(api.led.devices)) | set(hub.names() if hub else [])
    return {"devices": sorted(names)}


@router.websocket("/ws/led/{device}", dependencies=[require("read")])
async def led_preview(websocket: WebSocket, device: str, api: Api) -> None:
    """A text ``hello`` (device, pixels, fps, format rgb8), then one binary RGB frame per message."""
    hub = _local_hub()
    if hub is None or device not in hub.names():
        return await _relayed(websocket, device, api.led)
    await websocket.accept(subprotocol=ws_subprotocol(websocket))
    await websocket.send_text(_hello(device, hub.meta.get(device, {})))
    frames = hub.frames(device)
    try:
        await pump(websocket, frames.__anext__)
    finally:
        with contextlib.suppress(RuntimeError):     # still running: the cancelled read ends it
            await frames.aclose()


async def _relayed(websocket: WebSocket, device: str, previews: LedPreviews) -> None:
    """A device of an LED consumer in another process, relayed from the broker."""
    try:
        info = await run_in_threadpool(previews.info, device)
    except BROKER_ERRORS as exc:
        return await deny(websocket, 503, f"broker unavailable: {type(exc).__name__}")
    if info is None:
        return await deny(websocket, 404, f"no LED preview device {device[:64]!r} (see GET /api/led/devices)")
    await websocket.accept(subprotocol=ws_subprotocol(websocket))
    await websocket.send_text(_hello(device, info))
    q = previews.subscribe(device)

    async def next_frame() -> bytes:
        frame = await q.get()
        if frame is None:                 # the device's consumer stopped
            raise StopAsyncIteration
        return frame

    try:
        await pump(websocket, next_frame)
    finally:
        previews.unsubscribe(device, q)
