"""LED devices, effects and presets: the LED consumers' setups, changed live, and their frames.

``GET /api/led/devices`` lists every running LED consumer's setup (and the devices with a preview);
``POST /api/led/devices``, ``PATCH``/``DELETE /api/led/devices/{name}``, ``POST /api/led/presets``,
``POST /api/led/presets/{name}/apply`` and ``DELETE /api/led/presets/{name}`` send the consumer a
command and answer with its new setup (:mod:`api.led_setup`); ``GET /api/led/effects`` is the effect
catalogue. ``?consumer=NAME`` picks the consumer where several run. ``GET /api/led/discover`` finds WLED controllers over mDNS
(:mod:`consumers.led.discover`, the optional extra ``wled``).

Devices of any LED consumer on this broker are previewed on ``WS /ws/led/{device}``, relayed from
it (:mod:`api.led_preview`); the ``web://`` outputs of an LED consumer running in this process are
streamed directly.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query, WebSocket
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from beatbus.bus import BROKER_ERRORS
from beatbus.errors import ConfigError, DependencyError

from ..contract import errors
from ..deps import require, ws_subprotocol
from ..led_preview import LedPreviews
from ..led_setup import (
    LED_DEVICE_PATTERN,
    NAME_PATTERN,
    LedCatalogue,
    LedConsumer,
    LedDeviceFields,
    LedDeviceRequest,
    LedDevices,
    LedSetups,
    PresetList,
    PresetRequest,
    WledDiscovery,
    catalogue,
)
from ..models import ErrorBody
from ..state import ERRORS, Api, broker
from ..websocket import deny, pump

__all__ = ["router"]

router = APIRouter()


def _local_hub():
    # Only if the LED consumer is loaded here (e.g. `beatbus run`): importing it costs ~1 s.
    web = sys.modules.get("beatbus.consumers.led.outputs.web")
    return web.HUB if web is not None else None


def _hello(device: str, info: dict) -> str:
    return orjson.dumps({"type": "hello", "device": device, "format": "rgb8", **info}).decode()


DevicePath = Annotated[str, PathParam(pattern=LED_DEVICE_PATTERN, description="LED device name")]
PresetPath = Annotated[str, PathParam(pattern=NAME_PATTERN, description="preset name")]
ConsumerQuery = Annotated[str | None, Query(pattern=NAME_PATTERN,
                                            description="the LED consumer (needed only where several run)")]
COMMAND_ERRORS = {**ERRORS, **errors(404, 409, 504)}


@router.get("/api/led/devices", response_model=LedDevices, tags=["led"], dependencies=[require("read")],
            responses=errors(503))
def led_devices(api: Api) -> LedDevices:
    """Every running LED consumer's setup (each device, enabled or not, whether it runs and its output
    is up; the presets), and the devices with a preview (any process on this broker, and this
    process's ``web://NAME`` outputs): ``WS /ws/led/{device}`` streams their frames."""
    hub = _local_hub()
    names = set(broker(api.led.devices)) | set(hub.names() if hub else [])
    consumers = broker(LedSetups(api.bus).consumers)
    return LedDevices(devices=sorted(names), consumers=list(consumers.values()))


@router.get("/api/led/effects", response_model=LedCatalogue, tags=["led"], dependencies=[require("read")])
def led_effects() -> LedCatalogue:
    """Every effect with its parameters (type, default, range or choices) and every palette."""
    return catalogue()


DISCOVER_ERRORS = {503: {"model": ErrorBody, "description": "WLED discovery cannot run here: the optional extra "
                                                             "wled is not installed, or no mDNS socket could open"}}


@router.get("/api/led/discover", response_model=WledDiscovery, tags=["led"], dependencies=[require("read")],
            responses=DISCOVER_ERRORS)
def discover_wled(timeout: Annotated[float, Query(ge=0.2, le=5.0, description="how long to listen, in seconds")] = 2.0,
                  ) -> WledDiscovery:
    """The WLED controllers on this server's network: each announces ``_wled._tcp`` over mDNS and
    answers within ``timeout`` s. Each comes with its ``output`` URL (``ddp://ADDRESS``) and a
    device name for ``POST /api/led/devices``; the pixel count is yours to give."""
    # imported here: the LED stage loads only when a page asks
    from beatbus.consumers.led.discover import DiscoveryError, discover

    try:
        found = discover(timeout)         # a def route: FastAPI runs it in its thread pool
    except (DependencyError, DiscoveryError, ConfigError) as exc:     # ConfigError: BEATBUS_MDNS_INTERFACES
        raise HTTPException(503, str(exc)) from None
    return WledDiscovery(devices=[d.to_dict() for d in found], timeout_s=timeout)


@router.post("/api/led/devices", response_model=LedConsumer, tags=["led"], dependencies=[require("control")],
             responses=COMMAND_ERRORS)
def add_led_device(req: LedDeviceRequest, api: Api, consumer: ConsumerQuery = None) -> LedConsumer:
    """Add a device to an LED consumer: it starts sending frames at once and is saved. Answers the
    consumer's new setup, or its one-line refusal (a bad URL, pixels out of the protocol's range,
    an unknown effect or parameter: 422; the name taken: 409)."""
    setups = LedSetups(api.bus)
    target = broker(setups.pick, consumer)
    return broker(setups.command, target, "add_device", fields=req.changes())


@router.patch("/api/led/devices/{name}", response_model=LedConsumer, tags=["led"],
              dependencies=[require("control")], responses=COMMAND_ERRORS)
def change_led_device(name: DevicePath, req: LedDeviceFields, api: Api, consumer: ConsumerQuery = None) -> LedConsumer:
    """Change a device live (keys left out stay): output, pixels, fps, brightness, reverse, output
    latency, effect and its values, segments, enabled. Other devices keep running untouched."""
    setups = LedSetups(api.bus)
    target = broker(setups.owner, consumer, device=name)
    return broker(setups.command, target, "update_device", device=name, fields=req.changes())


@router.delete("/api/led/devices/{name}", response_model=LedConsumer, tags=["led"],
               dependencies=[require("control")], responses=COMMAND_ERRORS)
def remove_led_device(name: DevicePath, api: Api, consumer: ConsumerQuery = None) -> LedConsumer:
    """Remove a device: its strip goes dark and it is no longer saved."""
    setups = LedSetups(api.bus)
    target = broker(setups.owner, consumer, device=name)
    return broker(setups.command, target, "remove_device", device=name)


@router.get("/api/led/presets", response_model=PresetList, tags=["led"], dependencies=[require("read")],
            responses=errors(503))
def led_presets(api: Api) -> PresetList:
    """Every preset of every running LED consumer: the effect and values of each device."""
    return PresetList(presets=broker(LedSetups(api.bus).presets))


@router.post("/api/led/presets", response_model=LedConsumer, tags=["led"], dependencies=[require("control")],
             responses=COMMAND_ERRORS)
def save_led_preset(req: PresetRequest, api: Api, consumer: ConsumerQuery = None) -> LedConsumer:
    """Save the effects of every device of the consumer as a preset (one of the same name is replaced)."""
    setups = LedSetups(api.bus)
    target = broker(setups.pick, consumer)
    return broker(setups.command, target, "save_preset", preset=req.name)


@router.post("/api/led/presets/{name}/apply", response_model=LedConsumer, tags=["led"],
             dependencies=[require("control")], responses=COMMAND_ERRORS)
def apply_led_preset(name: PresetPath, api: Api, consumer: ConsumerQuery = None) -> LedConsumer:
    """Set every device of the preset that still exists to its saved effect and values."""
    setups = LedSetups(api.bus)
    target = broker(setups.owner, consumer, preset=name)
    return broker(setups.command, target, "apply_preset", preset=name)


@router.delete("/api/led/presets/{name}", response_model=LedConsumer, tags=["led"],
               dependencies=[require("control")], responses=COMMAND_ERRORS)
def delete_led_preset(name: PresetPath, api: Api, consumer: ConsumerQuery = None) -> LedConsumer:
    """Delete a preset: the consumer no longer saves it (the devices keep their effects)."""
    setups = LedSetups(api.bus)
    target = broker(setups.owner, consumer, preset=name)
    return broker(setups.command, target, "delete_preset", preset=name)


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
