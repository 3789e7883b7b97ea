"""LED setup from the API: the consumers' setups as they heartbeat them, and commands to change them.

The LED consumer owns its setup (:mod:`consumers.led.setup`): it heartbeats it in
``bb:led:setup`` (consumer name -> JSON) and lists itself in ``bb:led:consumers``. A change is a
:class:`~beatbus.schemas.LedCommand` on ``bb:led:commands`` naming one consumer; the API waits
(at most :data:`REPLY_TIMEOUT_S`) for the answer the consumer pushes to ``bb:led:reply:{id}`` and
turns it into the route's answer: 200 with the new setup, the consumer's one-line refusal
(404, 409, 422), or 504 when no LED consumer answered.
"""
from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import orjson
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from beatbus import keys
from beatbus.bus import Bus
from beatbus.keys import NAME_PATTERN
from beatbus.schemas import LED_DEVICE_PATTERN, LedCommand

from .models import JsonInt, _no_default, _Request

__all__ = ["LED_DEVICE_PATTERN", "NAME_PATTERN", "LedSetups", "LedDeviceFields", "LedDeviceRequest", "LedDevices",
           "LedConsumer", "LedCatalogue", "PresetRequest", "PresetList", "DeviceName", "PresetName",
           "REPLY_TIMEOUT_S", "catalogue", "WledDevice", "WledDiscovery"]

REPLY_TIMEOUT_S = 3.0
COMMANDS_MAXLEN = 1000
DeviceName = Annotated[str, StringConstraints(pattern=LED_DEVICE_PATTERN)]
PresetName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ConsumerName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ParamValue = bool | int | float | str
MAX_PIXELS = 65536          # consumers.led.outputs.MAX_PIXELS (not imported: the LED consumer loads on demand)


# -- bodies ---------------------------------------------------------------------------------
class LedSegment(_Request):
    """Pixels ``[start, stop)`` of the device showing the next part of the effect."""

    start: JsonInt = Field(..., ge=0, le=MAX_PIXELS - 1)
    stop: JsonInt = Field(..., ge=1, le=MAX_PIXELS)
    reverse: bool = False


class LedDeviceFields(_Request):
    """Device keys to change; omitted ones stay as they are (give at least one). ``effect_config``
    is merged into the device's values (``null`` resets a key to the effect's default); a new
    ``effect`` starts from its own defaults."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"minProperties": 1})

    output: str = Field(None, min_length=1, max_length=500, json_schema_extra=_no_default,
                        description="output URL, e.g. ddp://192.168.1.50 (see the README's LED section)")
    pixels: JsonInt = Field(None, ge=1, le=MAX_PIXELS, json_schema_extra=_no_default)
    fps: float = Field(None, ge=1.0, le=200.0, json_schema_extra=_no_default)
    brightness: float = Field(None, ge=0.0, le=1.0, json_schema_extra=_no_default)
    reverse: bool = Field(None, json_schema_extra=_no_default)
    output_latency_ms: float = Field(None, ge=0.0, le=2000.0, json_schema_extra=_no_default)
    effect: str = Field(None, pattern=r"^[a-z][a-z0-9_]{0,63}$", json_schema_extra=_no_default)
    effect_config: dict[str, ParamValue | None] = Field(None, max_length=64, json_schema_extra=_no_default)
    segments: list[LedSegment] = Field(None, max_length=64, json_schema_extra=_no_default)
    enabled: bool = Field(None, json_schema_extra=_no_default)

    @model_validator(mode="after")
    def _something(self) -> LedDeviceFields:
        if not self.model_fields_set:
            raise ValueError("give at least one device key (output, pixels, fps, brightness, reverse, "
                             "output_latency_ms, effect, effect_config, segments, enabled)")
        return self

    def changes(self) -> dict[str, Any]:
        """The keys given (a null inside ``effect_config`` stays: it resets that key)."""
        return self.model_dump(exclude_unset=True)


class LedDeviceRequest(LedDeviceFields):
    """A new device: its output URL, and any other keys (the consumer's defaults fill the rest;
    the name defaults to ``scheme:host``)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    output: str = Field(..., min_length=1, max_length=500,
                        description="output URL, e.g. ddp://192.168.1.50 (see the README's LED section)")
    name: DeviceName = Field(None, json_schema_extra=_no_default)


class PresetRequest(_Request):
    """Save the effects of every device of the consumer as preset ``name`` (replacing one of that name)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: PresetName


# -- answers --------------------------------------------------------------------------------
class LedLook(BaseModel):
    effect: str
    effect_config: dict[str, Any] = {}


class LedDevice(BaseModel):
    """One configured device, and how it runs now."""

    name: str
    output: str
    pixels: int | None
    fps: float | None
    effect: str | None
    effect_config: dict[str, Any]
    brightness: float
    reverse: bool
    output_latency_ms: float | None
    segments: list[dict[str, Any]]
    enabled: bool
    running: bool = Field(..., description="its render thread runs (enabled and started)")
    output_up: bool | None = Field(None, description="its output takes frames (None: not running)")


class LedConsumer(BaseModel):
    """One LED consumer's setup, as it last heartbeated or answered it."""

    consumer: str
    source: str
    instance: str = ""
    saved_to: str | None = Field(None, description="the file the consumer saves its setup to")
    devices: list[LedDevice]
    presets: dict[str, dict[str, LedLook]] = {}
    updated_at: float


class LedDevices(BaseModel):
    devices: list[str] = Field(..., description="devices with a live preview (WS /ws/led/{device})")
    consumers: list[LedConsumer] = Field(..., description="every running LED consumer's setup")


class PresetInfo(BaseModel):
    consumer: str
    name: str
    devices: dict[str, LedLook]


class PresetList(BaseModel):
    presets: list[PresetInfo]


class LedParam(BaseModel):
    name: str
    type: Literal["bool", "int", "float", "str"]
    default: ParamValue
    description: str
    min: float | None = None
    max: float | None = None
    choices: list[str] | None = None


class LedEffect(BaseModel):
    name: str
    description: str
    params: list[LedParam]


class LedPalette(BaseModel):
    name: str
    colors: list[str] = Field(..., description="the palette's stops as #rrggbb")


class LedCatalogue(BaseModel):
    effects: list[LedEffect]
    palettes: list[LedPalette]
    outputs: list[str] = Field(..., description="output URL schemes")


class WledDevice(BaseModel):
    """A WLED controller that answered mDNS (``_wled._tcp``)."""

    name: str = Field(..., description="its mDNS instance name (WLED announces its host name)")
    device: str = Field(..., description="the name as an LED device name, for POST /api/led/devices")
    host: str = Field(..., description="its mDNS host, e.g. wled-kitchen.local")
    addresses: list[str] = Field(..., description="IPv4 first, then IPv6")
    port: int = Field(..., description="the port it announced (its web page and JSON API)")
    output: str = Field(..., description="the output URL to add it with: ddp://ADDRESS (DDP, UDP 4048)")
    mac: str | None = Field(None, description="the mac of its TXT record, when it has one")
    properties: dict[str, str] = Field({}, description="its whole TXT record")


class WledDiscovery(BaseModel):
    devices: list[WledDevice] = Field(..., description="the controllers that answered, by name")
    timeout_s: float = Field(..., description="how long the browse listened")


def catalogue() -> LedCatalogue:
    """Every effect with its parameters (type, range, default) and every palette."""
    # imported here: the LED consumer is loaded only when a page asks for its catalogue
    from beatbus.consumers.led.effects import load_effects
    from beatbus.consumers.led.outputs import OUTPUTS
    from beatbus.consumers.led.palettes import PALETTES

    effects = []
    for name, cls in sorted(load_effects().items()):
        params = [LedParam(name=k, type=p.kind.__name__, default=p.default, description=p.description, min=p.min,
                           max=p.max, choices=list(p.choices) if p.choices else None)
                  for k, p in cls.schema().items()]
        effects.append(LedEffect(name=name, description=cls.description, params=params))
    palettes = [LedPalette(name=n, colors=["#" + "".join(f"{round(float(c) * 255):02x}" for c in stop) for stop in pal])
                for n, pal in PALETTES.items()]
    return LedCatalogue(effects=effects, palettes=palettes, outputs=sorted(OUTPUTS))


# -- the consumers ----------------------------------------------------------------------------
class LedSetups:
    """Read the LED consumers' setups and send them commands (one per request; cheap to make)."""

    def __init__(self, bus: Bus, *, timeout_s: float = REPLY_TIMEOUT_S):
        self.bus, self.timeout_s = bus, timeout_s

    def consumers(self) -> dict[str, dict]:
        """``{name: setup}`` of the consumers heartbeated within ``keys.LED_DEVICE_MAX_AGE_S`` (older
        ones are pruned: they died without saying so)."""
        cutoff = time.time() - keys.LED_DEVICE_MAX_AGE_S
        pipe = self.bus.pipeline()
        pipe.zrangebyscore(keys.LED_CONSUMERS, "-inf", f"({cutoff}")
        pipe.zremrangebyscore(keys.LED_CONSUMERS, "-inf", f"({cutoff}")
        pipe.zrangebyscore(keys.LED_CONSUMERS, cutoff, "+inf")
        stale, _, live = pipe.execute()
        if stale:
            self.bus.redis.hdel(keys.LED_SETUP, *stale)
        names = sorted(n.decode() if isinstance(n, bytes) else n for n in live)
        docs = self.bus.redis.hmget(keys.LED_SETUP, names) if names else []
        return {n: orjson.loads(d) for n, d in zip(names, docs) if d}

    # -- whom to ask -----------------------------------------------------------------------
    def _live(self, consumer: str | None) -> dict[str, dict]:
        live = self.consumers()
        if not live:
            raise HTTPException(504, "no LED consumer answered: none runs on this broker "
                                     "(start one: beatbus consume led)")
        if consumer is not None:
            if consumer not in live:
                raise HTTPException(404, f"no LED consumer {consumer!r} runs (running: {', '.join(live)})")
            return {consumer: live[consumer]}
        return live

    def pick(self, consumer: str | None) -> str:
        """The consumer a new device or preset goes to: the one named, else the only one running."""
        live = self._live(consumer)
        if len(live) > 1:
            raise HTTPException(409, f"{len(live)} LED consumers run ({', '.join(live)}): name one with ?consumer=")
        return next(iter(live))

    def owner(self, consumer: str | None, *, device: str | None = None, preset: str | None = None) -> str:
        """The consumer that has ``device`` (or ``preset``)."""
        live = self._live(consumer)
        if device is not None:
            have = [n for n, doc in live.items() if any(d.get("name") == device for d in doc.get("devices", ()))]
            what = f"LED device {device!r} (see GET /api/led/devices)"
        else:
            have = [n for n, doc in live.items() if preset in doc.get("presets", {})]
            what = f"LED preset {preset!r} (see GET /api/led/presets)"
        if not have:
            raise HTTPException(404, f"no {what}")
        if len(have) > 1:
            raise HTTPException(409, f"{what} exists in LED consumers {', '.join(have)}: name one with ?consumer=")
        return have[0]

    # -- asking ------------------------------------------------------------------------------
    def command(self, consumer: str, action: str, *, device: str | None = None, preset: str | None = None,
                fields: dict[str, Any] | None = None) -> dict:
        """Send a command and wait for the answer: the consumer's new setup, else HTTPException."""
        request_id = uuid.uuid4().hex
        cmd = LedCommand(id=request_id, consumer=consumer, action=action, device=device, preset=preset,
                         fields=fields or {}, issued_at=time.time())
        self.bus.publish(keys.LED_COMMANDS, cmd, maxlen=COMMANDS_MAXLEN)
        reply = self.bus.redis.blpop([keys.led_reply(request_id)], timeout=self.timeout_s)
        if reply is None:
            raise HTTPException(504, f"no LED consumer answered: {consumer} did not answer within "
                                     f"{self.timeout_s:g} s")
        answer = orjson.loads(reply[1])
        if not answer.get("ok"):
            raise HTTPException(int(answer.get("status") or 422), str(answer.get("error") or "refused"))
        return answer["setup"]

    def presets(self) -> list[dict]:
        return [{"consumer": n, "name": p, "devices": looks}
                for n, doc in self.consumers().items() for p, looks in sorted(doc.get("presets", {}).items())]
