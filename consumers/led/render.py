"""The per-device render loop: a fixed frame rate plus frames exactly on predicted beats.

One :class:`DeviceRunner` thread per device, so a slow or failing output never holds up
another device, and no device ever waits on the broker (the bus reader only updates
:class:`~consumers.led.state.LedState`). Each loop iteration:

1. picks the next deadline: the next regular frame (absolute schedule ``t0 + k / fps``,
   so errors never accumulate) or, if earlier, the send deadline of the next predicted
   beat (:func:`~consumers.led.timing.next_wake`);
2. just before it, renders the effect for the deadline's *display* time (send + output
   latency - offset), crossfaded with the ambient effect when the music stops, and maps
   it onto the device (segments, reverse, brightness cap);
3. sends it at the deadline; a send error closes the output and retries it with backoff
   (:class:`~consumers.led.health.OutputHealth`: down and back are each logged once).

:meth:`DeviceRunner.reconfigure` changes a running device (effect, brightness, reverse, segments,
output latency, frame rate): the new effect and pixel map are built by the caller and swapped in by
the render thread between two frames, so the device never misses one.

A render loop that dies on an unexpected error records it in :attr:`DeviceRunner.error`;
the service then stops the process with one line naming the device (never a silent exit 0).
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import numpy as np

from beatbus.errors import BeatbusError
from beatbus.log import get_logger

from .config import Device
from .effects import create_effect
from .health import OutputHealth
from .metrics import AMBIENT, FRAMES, FRAMES_SKIPPED, SEND_LATENESS
from .outputs import Output, create_output
from .state import LedState, RenderContext
from .timing import MIN_GAP_S, LightTiming, OnsetGate, display_time, next_wake, send_deadline

__all__ = ["PixelMap", "DeviceRunner", "RenderThreadDied", "compose", "clock_offset"]

log = get_logger("led.render")


class RenderThreadDied(BeatbusError):
    """A device's render loop stopped on an unexpected error (a bug: the process must not carry on silently)."""


def compose(music: np.ndarray, ambient: np.ndarray | None, mix: float) -> np.ndarray:
    """Crossfade the music effect into the ambient one (``mix`` 0 = music, 1 = ambient)."""
    if ambient is None or mix <= 0.0:
        return music
    if mix >= 1.0:
        return ambient
    return music * (1.0 - mix) + ambient * mix


class PixelMap:
    """Effect strip (float RGB) -> the device's frame bytes: segments, reverse, brightness cap."""

    def __init__(self, device: Device):
        self.pixels = device.pixels
        src = np.arange(device.length)
        if device.reverse:
            src = src[::-1]
        if device.segments:
            dst = np.concatenate([np.arange(s.start, s.stop)[::-1] if s.reverse else np.arange(s.start, s.stop)
                                  for s in device.segments])
        else:
            dst = np.arange(device.pixels)
        self.identity = not device.reverse and not device.segments
        self.src, self.dst = src, dst
        self.scale = np.float32(device.brightness * 255.0)
        self.buf = np.zeros((device.pixels, 3), dtype=np.uint8)

    def frame(self, rgb: np.ndarray) -> bytes:
        vals = (np.clip(rgb, 0.0, 1.0) * self.scale + np.float32(0.5)).astype(np.uint8)
        if self.identity:
            return vals.tobytes()
        self.buf[self.dst] = vals[self.src]
        return self.buf.tobytes()


def clock_offset(wall: Callable[[], float] = time.time, last: float | None = None) -> float:
    """Wall minus monotonic time from two reads close together. A thread preempted between the
    reads (a timeslice: several ms on a loaded machine) would move a beat frame by as much, so a
    pair more than 0.2 ms apart is read again; after three tries ``last`` is kept (the offset
    changes only as NTP slews the wall clock)."""
    for _ in range(3):
        m0 = time.monotonic()
        w = wall()
        m1 = time.monotonic()
        if m1 - m0 < 0.0002:
            return w - (m0 + m1) / 2
    return last if last is not None else w - (m0 + m1) / 2


class DeviceRunner:
    """Render and send one device's frames in its own thread.

    Parameters
    ----------
    device : Device
        Validated device (see :func:`~consumers.led.config.resolve_devices`).
    state : LedState
        Shared state, updated by the bus reader.
    timing : LightTiming
        Shared global offset (manual or tap-calibrated).
    output : Output, optional
        Defaults to the device's URL; tests and benchmarks may pass their own.
    ambient : str, ambient_config : dict
        The effect shown when the music stops.
    late_limit_s : float
        A beat whose first frame would be later than this after its onset does not flash.
    record : bool
        Keep ``(deadline, sent, kind)`` monotonic times of recent frames in :attr:`trace`.
    """

    def __init__(self, device: Device, state: LedState, timing: LightTiming, *, output: Output | None = None,
                 ambient: str = "ambient", ambient_config: dict | None = None, late_limit_s: float = 0.06,
                 record: bool = False, wall: Callable[[], float] = time.time):
        self.device, self.state, self.timing, self.wall = device, state, timing, wall
        self._ambient_name, self._ambient_config = ambient, ambient_config
        self.effect = create_effect(device.effect, device.length, device.effect_config)
        self.ambient = create_effect(ambient, device.length, ambient_config) if ambient else None
        self.gate = OnsetGate(late_limit_s)
        self.map = PixelMap(device)
        self.output = output or create_output(device.spec, device.pixels, name=device.name)
        self.latency_s = device.output_latency_ms / 1000.0
        self.frame_dt = 1.0 / device.fps
        self.stats = {"frames": 0, "beat_frames": 0, "skipped": 0, "errors": 0, "cpu_s": 0.0}
        self.health = OutputHealth(device.name, self.output.label)
        self.error: RenderThreadDied | None = None
        self.last_frame: bytes | None = None       # the newest rendered frame (for the preview relay)
        self._opened = False
        self._blank = True
        self.trace: collections.deque | None = collections.deque(maxlen=100000) if record else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: tuple | None = None          # (device, effect, ambient, map) for the next frame
        self._pending_lock = threading.Lock()
        self._m_frames = FRAMES.labels(device.name, "regular")
        self._m_beats = FRAMES.labels(device.name, "beat")
        self._m_late = SEND_LATENESS.labels(device.name)

    # -- one frame ------------------------------------------------------------------
    def render(self, t_display: float) -> tuple[bytes, RenderContext]:
        """Render the frame seen at ``t_display`` (wall s) and encode it to device bytes."""
        ctx = self.state.context(t_display, self.device.length, self.gate)
        mix = ctx.ambient if self.ambient is not None else 0.0
        music = self.effect.follow_harmony(self.effect.render(ctx), ctx) if mix < 1.0 else None
        amb = self.ambient.render(ctx) if self.ambient is not None and mix > 0.0 else None
        return self.map.frame(compose(music, amb, mix) if music is not None else amb), ctx

    # -- live changes -----------------------------------------------------------------
    def reconfigure(self, device: Device) -> None:
        """Draw ``device`` from the next frame on: same output and pixel count, anything else may change.

        The effect is kept (with its state) when its name, values and length are unchanged.
        """
        with self._pending_lock:
            cur = self._pending[0] if self._pending is not None else self.device
            same = (device.effect, device.effect_config, device.length) == (cur.effect, cur.effect_config, cur.length)
            effect = (self._pending[1] if self._pending is not None else self.effect) if same else \
                create_effect(device.effect, device.length, device.effect_config)
            ambient = create_effect(self._ambient_name, device.length, self._ambient_config) \
                if self._ambient_name and device.length != cur.length else \
                (self._pending[2] if self._pending is not None else self.ambient)
            self._pending = (device, effect, ambient, PixelMap(device))
        if self._thread is None or not self._thread.is_alive():
            self._swap()                      # not running: at once

    def _swap(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.device, self.effect, self.ambient, self.map = pending
            self.latency_s = self.device.output_latency_ms / 1000.0
            self.frame_dt = 1.0 / self.device.fps

    # -- thread ---------------------------------------------------------------------
    def start(self) -> DeviceRunner:
        self._thread = threading.Thread(target=self._run, name=f"led:{self.device.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0, *, blank: bool = True) -> None:
        """End the render thread; its last frame turns the strip off unless ``blank`` is False (a longer
        strip on the same output takes over at once: a black frame would only flicker)."""
        self._blank = blank
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _send(self, frame: bytes) -> None:
        try:
            if not self._opened:
                self.output.open()
                self._opened = True
            self.output.send(frame)
            self.health.sent()
        except OSError as exc:
            self.stats["errors"] += 1
            self._opened = False
            try:
                self.output.close()
            except OSError:
                pass
            self.health.failed(exc, self._stop)

    def _run(self) -> None:
        cpu0 = time.thread_time()
        next_regular = time.monotonic()
        beat_send: float | None = None
        beat_onset = 0.0
        render_s = 0.0005                   # running estimate of render + encode time
        wall_minus_mono = clock_offset(self.wall)
        try:
            while not self._stop.is_set():
                if self._pending is not None:          # a change: between two frames
                    self._swap()
                now = time.monotonic()
                due, is_beat = next_wake(next_regular, beat_send, now)
                # Render just ahead of the deadline for the deadline's display time, then
                # send at the deadline: the send is not delayed by the render.
                margin = min(2.0 * render_s + 0.0003, self.frame_dt / 2)
                if due - margin > now:
                    time.sleep(due - margin - now)
                start = time.monotonic()
                wall_minus_mono = clock_offset(self.wall, wall_minus_mono)
                offset = self.timing.offset_s
                t_disp = display_time(max(due, start) + wall_minus_mono, self.latency_s, offset)
                if is_beat:
                    t_disp = max(t_disp, beat_onset + 1e-6)     # never a hair before the onset
                frame, ctx = self.render(t_disp)
                self.last_frame = frame
                done = time.monotonic()
                render_s += 0.1 * ((done - start) - render_s)
                if due > done:
                    time.sleep(due - done)
                sent = time.monotonic()
                self._send(frame)
                self.stats["frames"] += 1
                (self._m_beats if is_beat else self._m_frames).inc()
                self._m_late.observe(max(0.0, sent - due))
                if self.trace is not None:
                    self.trace.append((due, sent, is_beat))
                AMBIENT.set(ctx.ambient)
                if ctx.has_beat and ctx.ambient < 1.0:
                    beat_onset = ctx.next_beat_time
                    beat_send = send_deadline(beat_onset, self.latency_s, offset) - wall_minus_mono
                else:
                    beat_send = None
                if is_beat:
                    self.stats["beat_frames"] += 1
                    if next_regular - due < MIN_GAP_S:
                        next_regular += self.frame_dt
                else:
                    next_regular += self.frame_dt
                    behind = time.monotonic() - next_regular
                    if behind > self.frame_dt:        # fell behind: skip, don't burst to catch up
                        missed = int(behind // self.frame_dt)
                        next_regular += missed * self.frame_dt
                        self.stats["skipped"] += missed
                        FRAMES_SKIPPED.labels(self.device.name).inc(missed)
                self.stats["cpu_s"] = time.thread_time() - cpu0
        except Exception as exc:   # a bug: recorded for the service, which ends the process
            self.error = RenderThreadDied(f"LED device {self.device.name} ({self.output.label}): render thread "
                                          f"died: {type(exc).__name__}: {exc}")
            log.debug("render thread traceback", exc_info=exc, extra={"device": self.device.name})
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        # best effort, and never a second error over the one that ended the loop
        if self._opened and self._blank:
            try:
                self.output.send(bytes(self.device.pixels * 3))      # lights off
            except Exception:  # noqa: BLE001 - best effort, see above
                pass
        try:
            self.output.close()
        except Exception:  # noqa: BLE001 - best effort, see above
            pass
