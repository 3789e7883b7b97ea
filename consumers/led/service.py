"""The LED consumer daemon: a bus reader that updates the state, and one render thread per device.

The reader is a fan-out XREAD from ``$`` on the source's beats, intensity, sections and
control streams (a stale beat is worse than a missed one). It never blocks the lights:
the render threads start first and draw ambient until beats arrive, keep going through
broker outages (on the last tempo, then ambient), and stop only at :meth:`drain`.
A :class:`~consumers.led.preview.PreviewRelay` thread lists the devices in the broker and
relays the frames of watched ones to the dashboard of ``beatbus api``.

Control events (``type: control`` on ``bb:{source}:control``, published by the API) set
``led_offset_ms`` (the global offset), ``effects_enabled`` (false: ambient only) and
``sensitivity`` (every effect's ``beat_sensitivity``); other fields are for other stages.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, Reader, note_reconnect
from beatbus.config import Settings
from beatbus.errors import ConfigError
from beatbus.log import get_logger
from beatbus.metrics import BUS_LAG
from beatbus.runtime import Service
from beatbus.schemas import BeatEvent, ControlEvent, Event, StreamEnd

from .config import Device, LedConfig, check_reachable, load_led_toml, resolve_devices
from .outputs import Output
from .preview import PreviewRelay
from .render import DeviceRunner
from .state import LedState
from .timing import LightTiming

__all__ = ["LedService", "LedPlan", "plan_led", "build_led_service", "CHECK_MODES"]

log = get_logger("led")
LEASE_CHECK_S = 1.0
# With Python's default 5 ms GIL switch interval, a render thread waking for its deadline
# can wait up to 5 ms behind a busy thread of the same process (e.g. the beat processor
# under `beatbus run`); 1 ms bounds that wait at the cost of a few more thread switches.
SWITCH_INTERVAL_S = 0.001
# Reachability check of output hosts at start. "warn" by default: a controller that boots
# after the host (or a DNS name not resolvable yet) must not stop the daemon; the render
# thread retries it with backoff. "strict" exits instead; "off" skips the check.
CHECK_MODES = ("warn", "strict", "off")


@dataclass
class LedPlan:
    """A validated LED setup: global config + devices, ready to run."""
    config: LedConfig
    devices: list[Device]
    source: str


def plan_led(settings: Settings, *, outputs: Iterable[str] = (), effect: str | None = None,
             pixels: int | None = None, fps: float | None = None, offset_ms: float | None = None,
             output_latency_ms: float | None = None, source: str | None = None,
             effect_config: dict[str, Any] | None = None, config: LedConfig | str | Path | None = None,
             check: str | bool = "warn") -> LedPlan:
    """Merge a TOML/``LedConfig`` with flag values and validate everything.

    Arguments left None keep the config's value. ``outputs`` add devices to the config's.
    ``check`` (one of :data:`CHECK_MODES`; True = "strict", False = "off"): whether every
    output host must resolve and be routable (TCP: accept a connection), with "warn" only
    logging the ones that are not (yet).

    Raises
    ------
    ConfigError
        One line naming the device/key and the problem.
    """
    base = load_led_toml(config) if isinstance(config, (str, Path)) else (config or LedConfig())
    doc = msgspec.structs.asdict(base)
    doc["devices"] = [msgspec.structs.asdict(d) for d in base.devices]
    for d in doc["devices"]:
        d["segments"] = [msgspec.structs.asdict(s) for s in d["segments"]]
    for key, val in (("effect", effect), ("pixels", pixels), ("fps", fps), ("offset_ms", offset_ms),
                     ("output_latency_ms", output_latency_ms), ("source", source)):
        if val is not None:
            doc[key] = val
    doc["effect_config"] = {**base.effect_config, **(effect_config or {})}
    doc["devices"] += [{"output": url} for url in outputs]
    try:
        cfg = msgspec.convert(doc, LedConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"LED config: {exc}") from None
    devices = resolve_devices(cfg)
    mode = ("strict" if check else "off") if isinstance(check, bool) else check
    if mode not in CHECK_MODES:
        raise ConfigError(f"check {check!r} must be one of {', '.join(CHECK_MODES)}")
    for d in devices if mode != "off" else ():
        try:
            check_reachable(d)
        except ConfigError as exc:
            if mode == "strict":
                raise
            log.warning("output not reachable yet; starting anyway and retrying it with backoff",
                        extra={"device": d.name, "error": str(exc)})
    return LedPlan(config=cfg, devices=devices, source=keys.check_source(cfg.source or settings.source))


class LedService(Service):
    """Read beat/intensity/section events for one source and drive every device.

    Parameters
    ----------
    plan : LedPlan
        From :func:`plan_led`.
    outputs : dict, optional
        ``{device name: Output}`` replacing the URL's output (tests, benchmarks).
    exit_on_end : bool
        Finish when the source's stream ends.
    record : bool
        Render threads keep a trace of frame deadlines (benchmarks).
    """

    name = "led"

    def __init__(self, bus: Bus, *, settings: Settings, plan: LedPlan, outputs: dict[str, Output] | None = None,
                 exit_on_end: bool = False, record: bool = False):
        super().__init__()
        self.bus, self.settings, self.plan = bus, settings, plan
        cfg = plan.config
        self.source = plan.source
        self.exit_on_end = exit_on_end
        self.state = LedState(silence_timeout_s=cfg.silence_timeout_s, coast_s=cfg.coast_s, fade_s=cfg.fade_s,
                              smooth_beats=cfg.smooth_beats)
        self.timing = LightTiming(cfg.offset_ms / 1000.0)
        self.runners = [DeviceRunner(d, self.state, self.timing, output=(outputs or {}).get(d.name),
                                     ambient=cfg.ambient_effect, ambient_config=cfg.ambient_config,
                                     late_limit_s=cfg.late_limit_ms / 1000.0, record=record)
                        for d in plan.devices]
        self.streams = [keys.stream(self.source, k) for k in
                        (keys.StreamKind.BEATS, keys.StreamKind.INTENSITY, keys.StreamKind.SECTIONS)]
        self.control_stream = keys.stream(self.source, keys.StreamKind.CONTROL)
        self.reader: Reader | None = None
        self.preview = PreviewRelay(bus, self.runners, self.source)
        self.events = 0
        self._backoff = Backoff()
        self._next_lease_check = 0.0

    # -- calibration ----------------------------------------------------------------
    def tap(self, t: float | None = None) -> float | None:
        """The user tapped a beat at wall time ``t`` (default now); returns the learned offset (s) if any."""
        t = time.time() if t is None else t
        return self.timing.tap(t, self.state.nearest_beat(t))

    # -- service --------------------------------------------------------------------
    def setup(self) -> None:
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        for r in self.runners:          # lights first: they never wait for the broker
            r.start()
        self.preview.start()
        self._connect()

    def _connect(self) -> bool:
        try:
            self.reader = Reader(self.bus, [*self.streams, self.control_stream], block_ms=self.settings.block_ms)
            return True
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "LED reader start")
            return False

    def _check_processor(self) -> None:
        now = time.monotonic()
        if now < self._next_lease_check:
            return
        self._next_lease_check = now + LEASE_CHECK_S
        self.state.set_processor_alive(self.bus.get_many([keys.lease(self.source, keys.Role.BEAT)])[0] is not None)

    def step(self, stop: threading.Event) -> bool:
        for r in self.runners:
            if r.error is not None:
                raise r.error                  # the CLI prints it as one line and exits non-zero
        try:
            if self.reader is None and not self._connect():
                raise ConnectionError("broker unavailable")
            self._check_processor()
            entries = self.reader.read(count=200)
            self._backoff.reset()
        except (*BROKER_ERRORS, ConnectionError) as exc:
            if self.reader is not None:
                note_reconnect(exc, "read LED events")
            self.state.set_processor_alive(False)     # can't tell: coast on the last tempo
            self._backoff.wait(stop)
            return True
        ended = False
        for stream, entry_id, fields in entries:
            if stream == self.control_stream:
                self._control(stream, entry_id, fields)
                continue
            ev = self.bus.decode(stream, entry_id, fields, Event)
            if ev is None:
                continue
            self.events += 1
            self.state.apply(ev)
            if isinstance(ev, BeatEvent):
                BUS_LAG.labels("beats").set(max(0.0, time.time() - ev.emitted_at))
            elif isinstance(ev, StreamEnd):
                ended = True
        return not (ended and self.exit_on_end)

    def _control(self, stream: str, entry_id: str, fields: dict) -> None:
        ev = self.bus.decode(stream, entry_id, fields, ControlEvent, shared=True)   # others' messages skipped
        if ev is None:
            return
        if ev.led_offset_ms is not None:
            self.timing.set_offset(ev.led_offset_ms / 1000.0)
        if ev.effects_enabled is not None:
            self.state.effects_enabled = ev.effects_enabled
        if ev.sensitivity is not None:
            for r in self.runners:
                r.effect.config["beat_sensitivity"] = ev.sensitivity
        log.info("LED control applied", extra={"offset_ms": round(self.timing.offset_s * 1000, 1),
                                               "effects_enabled": self.state.effects_enabled})

    def drain(self) -> None:
        for r in self.runners:
            r.stop()
        self.preview.stop()


def build_led_service(bus: Bus, settings: Settings, *, outputs: Iterable[str] = (), effect: str | None = None,
                      pixels: int | None = None, source: str | None = None, fps: float | None = None,
                      offset_ms: float | None = None, output_latency_ms: float | None = None,
                      effect_config: dict[str, Any] | None = None, config: LedConfig | str | Path | None = None,
                      check: str | bool = "warn", exit_on_end: bool = False) -> LedService:
    """Validate and build the LED consumer, e.g. for ``beatbus run ... --led ddp://127.0.0.1``.

    Example
    -------
    >>> svc = build_led_service(bus, settings, outputs=["ddp://127.0.0.1:4048"], effect="beat_flash",
    ...                         pixels=60)                                  # doctest: +SKIP
    >>> run_services([svc, processor, producer])                            # doctest: +SKIP

    Raises
    ------
    ConfigError
        Bad URL, unknown effect or palette, pixel count out of the protocol's range,
        unreachable host (with ``check="strict"``): before anything starts.
    """
    plan = plan_led(settings, outputs=outputs, effect=effect, pixels=pixels, fps=fps, offset_ms=offset_ms,
                    output_latency_ms=output_latency_ms, source=source, effect_config=effect_config,
                    config=config, check=check)
    return LedService(bus, settings=settings, plan=plan, exit_on_end=exit_on_end)
