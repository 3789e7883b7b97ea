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

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from beatbus import keys
from beatbus.config import stage_table
from beatbus.errors import ConfigError

from .effects import get_effect
from .outputs import MAX_PIXELS, OUTPUTS, OutputSpec, check_pixels
from .params import Param, validate_config

__all__ = ["SegmentConfig", "DeviceConfig", "LedConfig", "Device", "parse_output_url", "load_led_toml",
           "resolve_devices", "check_reachable", "DEVICE_URL_KEYS"]

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


def resolve_devices(config: LedConfig) -> list[Device]:
    """Validate every device of ``config`` (URL, limits, effect, segments) into :class:`Device`.

    Raises
    ------
    ConfigError
        The first problem found, naming the device.
    """
    if not config.devices:
        raise ConfigError("no LED outputs: give --output URL (e.g. ddp://192.168.1.50) or [[led.devices]]")
    get_effect(config.ambient_effect).validate(config.ambient_config)
    devices: list[Device] = []
    names: set[str] = set()
    known_keys: set[str] = set()
    for dc in config.devices:
        spec, url_keys = parse_output_url(dc.output)
        merged = {**msgspec.structs.asdict(dc), **{k: v for k, v in url_keys.items() if v != ""}}
        cls = OUTPUTS[spec.scheme]
        # web://NAME is a preview device called NAME; others are scheme:host unless named
        name = merged["name"] or (spec.host if spec.scheme == "web" and spec.host else
                                  f"{spec.scheme}:{spec.host}" if spec.host else spec.scheme)
        base, n = name, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.add(name)
        where = f"device {name}"
        pixels = merged["pixels"] or config.pixels
        check_pixels(cls, spec.params, pixels, spec.url)
        effect = merged["effect"] or config.effect
        effect_cls = get_effect(effect)
        shared = {k: v for k, v in config.effect_config.items() if k in effect_cls.schema()}
        known_keys.update(effect_cls.schema())
        try:
            effect_config = effect_cls.validate({**shared, **dc.effect_config})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        segments = list(dc.segments)
        _check_segments(segments, pixels, where)
        devices.append(Device(
            name=name, spec=spec, pixels=pixels, fps=float(merged["fps"] or config.fps or cls.default_fps),
            effect=effect, effect_config=effect_config, brightness=float(merged["brightness"]),
            reverse=bool(merged["reverse"]),
            output_latency_ms=float(config.output_latency_ms if merged["output_latency_ms"] is None
                                    else merged["output_latency_ms"]),
            segments=segments))
    unknown = sorted(set(config.effect_config) - known_keys)
    if unknown:
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
