"""LED configuration: output URLs, devices (from flags or a TOML file), validated before start.

Output URLs::

    ddp://host[:4048][?dest=1]
    sacn://host[:5568]?universe=1[&priority=100&source_name=beatbus]   (host "multicast" for 239.255.x.y)
    artnet://host[:6454]?universe=0
    opc://host[:7890][?channel=0]
    wled://host[:21324]?mode=drgb|dnrgb|drgbw|warls[&timeout=2]
    terminal://[?width=80]          web://NAME          ws://127.0.0.1:8765

Any URL may also carry device keys: ``pixels``, ``fps``, ``brightness``, ``reverse``,
``output_latency_ms``, ``effect``, ``name`` (e.g. ``ddp://10.0.0.5?pixels=300&fps=90``).

TOML (``--config FILE``; beatbus's own settings then go in a ``[beatbus]`` table)::

    [led]
    effect = "beat_flash"            # default effect of every device
    offset_ms = 0
    [led.effect_config]              # defaults for every device's effect
    color_palette = "fire"

    [[led.devices]]
    output = "ddp://192.168.1.50"
    pixels = 300
    fps = 60
    output_latency_ms = 25
    brightness = 0.8
    segments = [{start = 0, stop = 150}, {start = 150, stop = 300, reverse = true}]
    [led.devices.effect_config]
    decay = 0.3

Every problem is a one-line :class:`~beatbus.errors.ConfigError` naming the device and key.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec

from beatbus import keys
from beatbus.config import stage_table
from beatbus.errors import ConfigError
from beatbus.schemas import LED_DEVICE_PATTERN

from .effects import get_effect
from .outputs import MAX_PIXELS, OUTPUTS, OutputSpec, check_pixels
from .params import Param, validate_config

__all__ = ["SegmentConfig", "DeviceConfig", "LedConfig", "Device", "parse_output_url", "load_led_toml",
           "resolve_devices", "resolve_device", "device_record", "strip_device_keys", "check_reachable",
           "DEVICE_URL_KEYS"]

M = msgspec.Meta
DEFAULT_WS_PORT = 8765


class SegmentConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A pixel range ``[start, stop)`` of the device that shows the next part of the effect."""
    start: Annotated[int, M(ge=0)]
    stop: Annotated[int, M(ge=1)]
    reverse: bool = False


class DeviceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One LED device: where frames go and how they are drawn (None: the global default)."""
    output: str
    name: str = ""
    pixels: Annotated[int, M(ge=1, le=MAX_PIXELS)] | None = None
    fps: Annotated[float, M(ge=1, le=200)] | None = None
    effect: str | None = None
    effect_config: dict[str, Any] = {}
    brightness: Annotated[float, M(ge=0, le=1)] = 1.0
    reverse: bool = False
    output_latency_ms: Annotated[float, M(ge=0, le=2000)] | None = None
    segments: list[SegmentConfig] = []
    enabled: bool = True                 # false: configured, but no frames are sent


class LedConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Global LED settings plus the device list."""
    source: Annotated[str, M(pattern=keys.NAME_PATTERN)] | None = None
    effect: str = "beat_flash"
    effect_config: dict[str, Any] = {}
    ambient_effect: str = "ambient"
    ambient_config: dict[str, Any] = {}
    pixels: Annotated[int, M(ge=1, le=MAX_PIXELS)] = 60
    fps: Annotated[float, M(ge=1, le=200)] | None = None
    offset_ms: Annotated[float, M(ge=-2000, le=2000)] = 0.0
    output_latency_ms: Annotated[float, M(ge=0, le=2000)] = 0.0
    silence_timeout_s: Annotated[float, M(gt=0, le=3600)] = 3.0
    coast_s: Annotated[float, M(gt=0, le=3600)] = 10.0
    fade_s: Annotated[float, M(gt=0, le=60)] = 1.0
    late_limit_ms: Annotated[float, M(ge=0, le=500)] = 60.0
    smooth_beats: Annotated[int, M(ge=0, le=32)] = 8
    devices: list[DeviceConfig] = []


# URL query keys that configure the device rather than the protocol
DEVICE_URL_KEYS: dict[str, Param] = {
    "name": Param("", "Device name (metrics label, preview channel)"),
    "pixels": Param(60, "Pixels on the device", 1, MAX_PIXELS),
    "fps": Param(60.0, "Frames per second", 1.0, 200.0),
    "brightness": Param(1.0, "Brightness cap", 0.0, 1.0),
    "reverse": Param(False, "Draw the strip from the other end"),
    "output_latency_ms": Param(0.0, "Delay from send to light (ms)", 0.0, 2000.0),
    "effect": Param("", "Effect name"),
}


def strip_device_keys(url: str) -> str:
    """``url`` without its device keys (``pixels``, ``effect``...): the saved setup keeps them as fields,
    so an edit of a field is not overridden by the URL."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in DEVICE_URL_KEYS]
    return f"{base}?{urlencode(kept)}" if kept else base


def parse_output_url(url: str) -> tuple[OutputSpec, dict[str, Any]]:
    """Split an output URL into its protocol spec and the device keys it carries.

    Raises
    ------
    ConfigError
        Unknown scheme, missing host, bad port, unknown or out-of-range parameter.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"output {url!r} is not a URL like ddp://HOST or sacn://HOST?universe=1 "
                          f"(schemes: {', '.join(OUTPUTS)})")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"output {url}: {exc}") from None
    scheme = parts.scheme.lower()
    cls = OUTPUTS.get(scheme)
    if cls is None:
        raise ConfigError(f"output {url}: unknown scheme {scheme!r} (known: {', '.join(OUTPUTS)})")
    host = parts.hostname or ""
    if cls.transport != "local" or scheme == "ws":
        if not host:
            raise ConfigError(f"output {url}: a host is required, e.g. {scheme}://192.168.1.50")
        if port is None:
            port = DEFAULT_WS_PORT if scheme == "ws" else cls.default_port
        elif port == 0 and scheme != "ws":
            raise ConfigError(f"output {url}: port 0 is not a destination (only ws:// may bind port 0)")
    if parts.path not in ("", "/"):
        raise ConfigError(f"output {url}: unexpected path {parts.path!r}; parameters go after '?'")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"output {url}: malformed query {parts.query!r}") from None
    proto_raw, device = {}, {}
    for key, value in query:
        if key in DEVICE_URL_KEYS:
            device[key] = DEVICE_URL_KEYS[key].convert(key, value, f"output {url}")
        elif key in cls.PARAMS:
            proto_raw[key] = value
        else:
            known = sorted([*cls.PARAMS, *DEVICE_URL_KEYS])
            raise ConfigError(f"output {url}: unknown parameter {key!r} (known: {', '.join(known)})")
    params = validate_config(cls.PARAMS, proto_raw, f"output {url}")
    return OutputSpec(url=url, scheme=scheme, host=host, port=port, params=params), device


def _convert(doc: Any, kind: type, where: str):
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_led_toml(path: str | Path) -> LedConfig:
    """The ``[led]`` table of a TOML file (an empty config when it has none)."""
    return _convert(stage_table(path, "led"), LedConfig, f"config file {path} [led]")


@dataclass
class Device:
    """A validated device, ready for a render loop."""
    name: str
    spec: OutputSpec
    pixels: int
    fps: float
    effect: str
    effect_config: dict[str, Any]
    brightness: float
    reverse: bool
    output_latency_ms: float
    segments: list[SegmentConfig]

    @property
    def length(self) -> int:
        """Length of the strip the effect draws: the segments' total, or every pixel."""
        return sum(s.stop - s.start for s in self.segments) if self.segments else self.pixels


def _check_segments(segments: list[SegmentConfig], pixels: int, where: str) -> None:
    spans = sorted((s.start, s.stop) for s in segments)
    for start, stop in spans:
        if not start < stop <= pixels:
            raise ConfigError(f"{where}: segment [{start}, {stop}) must satisfy start < stop <= pixels ({pixels})")
    for (a0, a1), (b0, _) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ConfigError(f"{where}: segments [{a0}, {a1}) and [{b0}, ...) overlap")


def _merged(dc: DeviceConfig) -> tuple[OutputSpec, dict[str, Any]]:
    """The parsed URL, and ``dc``'s keys overridden by the device keys its URL carries."""
    spec, url_keys = parse_output_url(dc.output)
    return spec, {**msgspec.structs.asdict(dc), **{k: v for k, v in url_keys.items() if v != ""}}


def _default_name(spec: OutputSpec) -> str:
    # web://NAME is a preview device called NAME; others are scheme:host unless named
    return spec.host if spec.scheme == "web" and spec.host else f"{spec.scheme}:{spec.host}" if spec.host else spec.scheme


def device_name(dc: DeviceConfig) -> str:
    """The name ``dc`` gets: its own (or its URL's ``name=``), else its default from the URL."""
    spec, merged = _merged(dc)
    return merged["name"] or _default_name(spec)


def resolve_device(dc: DeviceConfig, config: LedConfig, *, name: str | None = None, shared: bool = True) -> Device:
    """Validate one device (URL, limits, effect, segments); ``config`` fills what it leaves None.

    ``name`` replaces the device's own; ``shared``: the keys of ``config.effect_config`` that the
    device's effect knows are its defaults (a saved device is complete: False).

    Raises
    ------
    ConfigError
        The first problem found, naming the device.
    """
    spec, merged = _merged(dc)
    cls = OUTPUTS[spec.scheme]
    name = name or merged["name"] or _default_name(spec)
    if not re.match(LED_DEVICE_PATTERN, name):
        raise ConfigError(f"device name {name!r} must be 1-64 of A-Z a-z 0-9 _ . : # @ -")
    where = f"device {name}"
    pixels = merged["pixels"] or config.pixels
    check_pixels(cls, spec.params, pixels, spec.url)
    effect = merged["effect"] or config.effect
    effect_cls = get_effect(effect)
    defaults = {k: v for k, v in config.effect_config.items() if k in effect_cls.schema()} if shared else {}
    try:
        effect_config = effect_cls.validate({**defaults, **dc.effect_config})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    segments = list(dc.segments)
    _check_segments(segments, pixels, where)
    return Device(
        name=name, spec=spec, pixels=pixels, fps=float(merged["fps"] or config.fps or cls.default_fps),
        effect=effect, effect_config=effect_config, brightness=float(merged["brightness"]),
        reverse=bool(merged["reverse"]),
        output_latency_ms=float(config.output_latency_ms if merged["output_latency_ms"] is None
                                else merged["output_latency_ms"]),
        segments=segments)


def device_record(device: Device, *, enabled: bool = True) -> DeviceConfig:
    """A device as the saved setup keeps it: every key explicit, the URL without device keys, and
    only the effect values that differ from the effect's defaults (a later default still applies)."""
    schema = get_effect(device.effect).schema()
    return DeviceConfig(output=strip_device_keys(device.spec.url), name=device.name, pixels=device.pixels,
                        fps=device.fps, effect=device.effect,
                        effect_config={k: v for k, v in device.effect_config.items() if v != schema[k].default},
                        brightness=device.brightness, reverse=device.reverse,
                        output_latency_ms=device.output_latency_ms, segments=list(device.segments), enabled=enabled)


def resolve_devices(config: LedConfig, *, allow_empty: bool = False) -> list[Device]:
    """Validate every device of ``config`` (URL, limits, effect, segments) into :class:`Device`.

    Two devices that would share a name get ``#2``, ``#3``... ``allow_empty``: no devices is
    not an error (the LED consumer, whose devices may come from the dashboard).

    Raises
    ------
    ConfigError
        The first problem found, naming the device.
    """
    if not config.devices and not allow_empty:
        raise ConfigError("no LED outputs: give --output URL (e.g. ddp://192.168.1.50) or [[led.devices]]")
    get_effect(config.ambient_effect).validate(config.ambient_config)
    devices: list[Device] = []
    names: set[str] = set()
    known_keys: set[str] = set()
    for dc in config.devices:
        spec, merged = _merged(dc)
        name = base = merged["name"] or _default_name(spec)
        n = 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.add(name)
        device = resolve_device(dc, config, name=name)
        known_keys.update(get_effect(device.effect).schema())
        devices.append(device)
    unknown = sorted(set(config.effect_config) - known_keys)
    if unknown and config.devices:
        raise ConfigError(f"effect_config key {unknown[0]!r} is not a key of any device's effect "
                          f"(known: {', '.join(sorted(known_keys))})")
    return devices


def check_reachable(device: Device) -> None:
    """Fail before start for a host that does not resolve, has no route, or refuses TCP.

    UDP protocols are connectionless: a host that resolves and is routable passes.
    """
    spec = device.spec
    cls = OUTPUTS[spec.scheme]
    if cls.transport == "local":
        return
    if spec.scheme in ("sacn", "e131") and spec.host == "multicast":
        return
    kind = socket.SOCK_STREAM if cls.transport == "tcp" else socket.SOCK_DGRAM
    try:
        info = socket.getaddrinfo(spec.host, spec.port, type=kind)
    except socket.gaierror as exc:
        raise ConfigError(f"output {spec.url}: cannot resolve host {spec.host!r} ({exc.strerror})") from None
    family, _, _, _, addr = info[0]
    try:
        with socket.socket(family, kind) as s:
            s.settimeout(2.0)
            s.connect(addr)
    except OSError as exc:
        what = "connect to" if cls.transport == "tcp" else "route to"
        raise ConfigError(f"output {spec.url}: cannot {what} {spec.host}:{spec.port} "
                          f"({exc.strerror or exc})") from None
