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

Setup commands (:class:`~beatbus.schemas.LedCommand` on ``bb:led:commands``, written by the API for
the consumer they name) add, change, enable, disable and remove devices and save or apply presets
(:mod:`consumers.led.setup`). The reader thread applies one between frames: a new device (or one
whose output URL or pixel count changed) gets its own render thread, a changed one is reconfigured
by its thread before its next frame, and every other device's thread runs on untouched. The setup is
saved (when the consumer has a store) and the answer is written to ``bb:led:reply:{id}``. A command
that is not valid is answered with one line, never raised; a malformed entry is counted and
dead-lettered like any other.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, Reader, note_back, note_reconnect
from beatbus.config import Settings
from beatbus.errors import ConfigError
from beatbus.log import get_logger
from beatbus.metrics import BUS_LAG
from beatbus.runtime import Service
from beatbus.schemas import BeatEvent, ControlEvent, Event, LedCommand, StreamEnd

from .config import Device, LedConfig, check_reachable, load_led_toml
from .metrics import SETUP_COMMANDS, forget_device
from .outputs import Output
from .preview import PreviewRelay
from .render import DeviceRunner
from .setup import LedSetup, SetupError, SetupStore, apply_command, resolve_setup, seed_digest, seed_setup
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
DEFAULT_CONSUMER = "led"
STOP_OLD_S = 1.0        # wait for a replaced device's thread to let go of its output (web:// name, ws:// port)


@dataclass
class LedPlan:
    """A validated LED setup: global config + devices, ready to run.

    ``setup`` holds every device (enabled or not) and the presets; ``devices`` are its enabled ones.
    ``store``: where the setup is saved (None: changes are live only).
    """
    config: LedConfig
    devices: list[Device]
    source: str
    setup: LedSetup = dataclasses.field(default_factory=LedSetup)
    consumer: str = DEFAULT_CONSUMER
    store: SetupStore | None = None
    seeded: bool = False    # setup seeded from the flags / TOML, not saved yet: the consumer saves it on start


def _load_setup(cfg: LedConfig, store: SetupStore | None) -> tuple[LedSetup, bool]:
    """The saved setup when it was seeded from these flags / TOML, else a new one seeded from them.

    The second value says the setup is new: the consumer writes it when it starts, so a start that is
    refused (no broker, a bad flag found later) leaves the saved file as it was.
    """
    if store is None:
        return seed_setup(cfg), False
    saved = store.load()
    if saved is not None and saved.seed == seed_digest(cfg):
        log.info("LED setup loaded", extra={"path": str(store.path), "devices": len(saved.devices),
                                            "presets": len(saved.presets)})
        return saved, False
    return seed_setup(cfg, presets=saved.presets if saved is not None else None), True


def save_seeded(plan: LedPlan) -> None:
    """Write a setup just seeded from the flags / TOML, keeping a different saved one beside it."""
    store = plan.store
    if store is None or not plan.seeded:
        return
    try:
        prev = store.keep_previous()
        if prev is not None:
            log.warning("the flags / TOML name other LED devices than the saved setup was seeded from: starting "
                        "again from them", extra={"path": str(store.path), "previous": str(prev)})
        store.save(plan.setup)
    except OSError as exc:
        raise ConfigError(f"LED setup {store.path}: cannot save it ({exc.strerror or exc})") from None
    plan.seeded = False
    log.info("LED setup seeded from the flags / TOML", extra={"path": str(store.path), "devices": len(plan.setup.devices)})


def plan_led(settings: Settings, *, outputs: Iterable[str] = (), effect: str | None = None,
             pixels: int | None = None, fps: float | None = None, offset_ms: float | None = None,
             output_latency_ms: float | None = None, source: str | None = None,
             effect_config: dict[str, Any] | None = None, config: LedConfig | str | Path | None = None,
             check: str | bool = "warn", name: str = DEFAULT_CONSUMER, store: SetupStore | None = None) -> LedPlan:
    """Merge a TOML/``LedConfig`` with flag values and validate everything.

    Arguments left None keep the config's value. ``outputs`` add devices to the config's.
    ``name`` names the consumer (setup commands name it). With a ``store`` the devices are the
    saved setup's, seeded from the flags / TOML when nothing (or another seed) was saved; then no
    devices at all is allowed too (they can be added from the dashboard).
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
    if store is None and not cfg.devices:
        raise ConfigError("no LED outputs: give --output URL (e.g. ddp://192.168.1.50) or [[led.devices]]")
    keys.check_name(name, "LED consumer name")
    setup, seeded = _load_setup(cfg, store)
    try:
        devices = resolve_setup(setup, cfg)
    except ConfigError as exc:
        raise ConfigError(f"LED setup {store.path}: {exc} (fix or delete the file)" if store else str(exc)) from None
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
    return LedPlan(config=cfg, devices=devices, source=keys.check_source(cfg.source or settings.source),
                   setup=setup, consumer=name, store=store, seeded=seeded)


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
        self._outputs, self._record = outputs or {}, record
        self.led_setup, self.consumer, self.store = plan.setup, plan.consumer, plan.store
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.sensitivity: float | None = None          # from a control event: applies to new effects too
        # replaced as a whole (never changed in place): other threads iterate the list they got
        self.runners = [self._runner(d) for d in plan.devices]
        self.streams = [keys.stream(self.source, k) for k in
                        (keys.StreamKind.BEATS, keys.StreamKind.INTENSITY, keys.StreamKind.SECTIONS,
                         keys.StreamKind.HARMONY)]
        self.control_stream = keys.stream(self.source, keys.StreamKind.CONTROL)
        self.reader: Reader | None = None
        self.preview = PreviewRelay(bus, self.runners, self.source, consumer=self.consumer, describe=self.describe)
        self.events = 0
        self._backoff = Backoff()
        self._next_lease_check = 0.0

    def _runner(self, device: Device) -> DeviceRunner:
        cfg = self.plan.config
        return DeviceRunner(self._tuned(device), self.state, self.timing, output=self._outputs.get(device.name),
                            ambient=cfg.ambient_effect, ambient_config=cfg.ambient_config,
                            late_limit_s=cfg.late_limit_ms / 1000.0, record=self._record)

    def _tuned(self, device: Device) -> Device:
        """``device`` with the live sensitivity of the control events, if one was set."""
        if self.sensitivity is None:
            return device
        return dataclasses.replace(device, effect_config={**device.effect_config, "beat_sensitivity": self.sensitivity})

    # -- calibration ----------------------------------------------------------------
    def tap(self, t: float | None = None) -> float | None:
        """The user tapped a beat at wall time ``t`` (default now); returns the learned offset (s) if any."""
        t = time.time() if t is None else t
        return self.timing.tap(t, self.state.nearest_beat(t))

    # -- service --------------------------------------------------------------------
    def setup(self) -> None:
        save_seeded(self.plan)
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        for r in self.runners:          # lights first: they never wait for the broker
            r.start()
        self.preview.start()
        self._connect()

    def _connect(self) -> bool:
        try:
            self.reader = Reader(self.bus, [*self.streams, self.control_stream, keys.LED_COMMANDS],
                                 block_ms=self.settings.block_ms)
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "LED reader start")
            return False
        note_back("LED reader start")
        return True

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
            note_back("read LED events")
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
            if stream == keys.LED_COMMANDS:
                self._command(stream, entry_id, fields)
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
            self.sensitivity = ev.sensitivity
            for r in self.runners:
                r.effect.config["beat_sensitivity"] = ev.sensitivity
        log.info("LED control applied", extra={"offset_ms": round(self.timing.offset_s * 1000, 1),
                                               "effects_enabled": self.state.effects_enabled})

    # -- setup commands ------------------------------------------------------------
    def describe(self) -> dict:
        """The setup as ``GET /api/led/devices`` shows it: every device (with whether it runs and its
        output is up) and the presets."""
        running = {r.device.name: r for r in self.runners}
        devices = []
        for record in self.led_setup.devices:
            r = running.get(record.name)
            devices.append({**msgspec.to_builtins(record), "running": r is not None,
                            "output_up": r.health.up if r is not None else None})
        return {"consumer": self.consumer, "source": self.source, "instance": self.instance,
                "saved_to": str(self.store.path) if self.store else None, "devices": devices,
                "presets": msgspec.to_builtins(self.led_setup.presets), "updated_at": time.time()}

    def _command(self, stream: str, entry_id: str, fields: dict) -> None:
        cmd = self.bus.decode(stream, entry_id, fields, LedCommand)     # malformed: counted and dead-lettered
        if cmd is None or cmd.consumer != self.consumer:
            return
        try:
            self.apply(cmd)
            answer = {"ok": True, "status": 200, "setup": self.describe()}
            SETUP_COMMANDS.labels("applied").inc()
            log.info("LED setup changed", extra={"action": cmd.action, "device": cmd.device, "preset": cmd.preset})
        except SetupError as exc:
            answer = {"ok": False, "status": exc.status, "error": str(exc)}
            SETUP_COMMANDS.labels("refused").inc()
            log.info("LED setup command refused", extra={"action": cmd.action, "error": str(exc)})
        except OSError as exc:
            answer = {"ok": False, "status": 503,
                      "error": f"LED consumer {self.consumer} cannot save its setup to {self.store.path}: "
                               f"{exc.strerror or exc}"}
            SETUP_COMMANDS.labels("failed").inc()
            log.warning("LED setup not saved: the change was not applied", extra={"error": str(exc)})
        try:
            pipe = self.bus.pipeline()
            pipe.hset(keys.LED_SETUP, self.consumer, orjson.dumps(self.describe()))
            pipe.lpush(keys.led_reply(cmd.id), orjson.dumps(answer))
            pipe.expire(keys.led_reply(cmd.id), keys.LED_REPLY_TTL_S)
            pipe.execute()
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "answer an LED setup command")
        else:
            note_back("answer an LED setup command")

    def apply(self, cmd: LedCommand) -> LedSetup:
        """Validate ``cmd``, save the new setup, then apply it between frames; returns it.

        Raises
        ------
        SetupError
            The command is not valid (nothing changed).
        OSError
            The setup could not be saved (nothing changed).
        """
        setup = apply_command(self.led_setup, cmd, self.plan.config)
        try:
            devices = resolve_setup(setup, self.plan.config)
        except ConfigError as exc:
            raise SetupError(422, str(exc)) from None
        if self.store is not None:
            self.store.save(setup)
        self.led_setup = setup
        self._run_devices(devices)
        return setup

    def _run_devices(self, devices: list[Device]) -> None:
        """Make the running devices ``devices``: start new ones, reconfigure changed ones, stop the rest."""
        old = {r.device.name: r for r in self.runners}
        runners = []
        for device in devices:
            r = old.pop(device.name, None)
            if r is not None and (r.device.spec, r.device.pixels) == (device.spec, device.pixels):
                r.reconfigure(self._tuned(device))
                runners.append(r)
                continue
            if r is not None:               # another output or pixel count: a new output and thread
                # a shorter strip must clear the pixels it no longer drives; a longer one covers them all
                r.stop(STOP_OLD_S, blank=r.device.spec != device.spec or device.pixels < r.device.pixels)
            runners.append(self._runner(device).start())
        for r in old.values():              # removed or disabled: the thread blanks the strip and ends
            r.stop(STOP_OLD_S)
            forget_device(r.device.name)
        self.runners = runners
        self.preview.set_runners(runners)

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
