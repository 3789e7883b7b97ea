"""Issue #20 item 6: the LED outputs stay correct while they are reconfigured live through the REST API.

Its own small deployment (not the package's ``stack``, which other tests share in random order):
redis-server, then the real `beatbus` commands as processes: ``process`` (the dsp backend), ``consume
led`` seeded with one DDP device, ``api`` (no keys: loopback only), and a click producer. Every change
goes through the routes (``POST``/``PATCH``/``DELETE /api/led/devices``, presets) and is checked on the
wire by receivers the consumer does not share: the `sacn` package's E1.31 receiver, and the parsers of
tests/support/protocols.py for DDP, Art-Net, OPC and WLED. Meanwhile the seed DDP device must never
miss more than a few frames, whatever happens to the others.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from beatbus import keys
from beatbus.bus import Bus

from .deployment import http_json
from support.daemons import Daemon, daemon_env
from support.listeners import OpcCapture, SacnCapture, UdpCapture
from support.procs import RedisServer, eventually, free_port, wait_for
from support.protocols import WLED_DNRGB, WLED_DRGB, parse_artdmx, parse_ddp, parse_wled

pytestmark = pytest.mark.e2e

SOURCE = "reconf"
CONSUMER = "lights"
MIN_FPS = 20                # loose floor for a 60 fps device (the default) on two shared cores
# The seed DDP device may miss at most MAX_GAP_FRAMES frame periods in a row (400 ms: a change that
# restarted or blocked the other devices stalls them for a second or more). It runs at 15 fps: at
# 60 fps three periods are 50 ms, and a loaded 2-core machine stalls a thread for up to ~130 ms
# now and then (kernel arrival times, between changes too), once 318 ms under a CPU hog (session 10).
DDP_FPS, DDP_MIN_FPS, MAX_GAP_FRAMES = 15.0, 7, 6
START_TIMEOUT_S = 120
WAIT_S = 20.0               # generous: a loaded CI machine only makes a change slower
GONE_S = 1.0                # a removed device's receiver hears nothing after this
SACN_U1, SACN_U2 = 1, 7
WARM = (255, 190, 120)      # the one stop of the warm_white palette

# Static looks whose bytes are known: a one-colour gradient, and a rainbow laid along the strip.
WARM_LOOK = {"bpm_sync": False, "speed": 0.0, "pulse": 0.0, "level": 1.0, "color_palette": "warm_white"}
RAINBOW_LOOK = {"bpm_sync": False, "speed": 0.0, "pulse": 0.0, "level": 1.0, "color_palette": "rainbow"}
# A rainbow scrolling one cycle a second: every frame differs (the sACN receiver reports changes only).
SCROLL_LOOK = {"bpm_sync": False, "speed": 1.0, "pulse": 0.0, "level": 1.0, "color_palette": "rainbow"}

Frames = Callable[[float], list[tuple[float, bytes]]]


@dataclass
class Rig:
    """What the module fixture started."""
    tmp: Path
    env: dict[str, str]
    led_args: list[str]
    api_url: str
    bus: Bus
    daemons: dict[str, Daemon]
    ddp: UdpCapture
    sacn: SacnCapture
    artnet: UdpCapture
    opc: OpcCapture
    wled: UdpCapture
    stopped: list[Daemon] = field(default_factory=list)
    requests: list[tuple[float, str]] = field(default_factory=list)     # (sent, "METHOD path")

    def start_led(self, tag: str) -> Daemon:
        d = Daemon(f"led-{tag}", self.led_args, env=self.env, workdir=self.tmp / "logs").start()
        self.daemons["led"] = d
        return d

    def tails(self, lines: int = 15) -> str:
        out = []
        for d in [*self.stopped, *self.daemons.values()]:
            tail = "\n".join(d.stderr().splitlines()[-lines:]) or "(empty)"
            out.append(f"--- {d.describe()}\n{tail}")
        return "\n".join(out)

    # -- the wire, as (arrival wall time, frame bytes) --------------------------------
    def ddp_frames(self, since: float) -> list[tuple[float, bytes]]:
        out = []
        for t, raw in self.ddp.since(since):
            p = parse_ddp(raw)
            assert p.offset == 0 and p.push, f"DDP: a frame under 1440 bytes is one pushed packet ({p})"
            out.append((t, p.data))
        return out

    def sacn_frames(self, universe: int) -> Frames:
        return lambda since: [(t, bytes(p.dmxData)) for t, p in self.sacn.since(since) if p.universe == universe]

    def artnet_frames(self, since: float) -> list[tuple[float, bytes]]:
        out = []
        for t, raw in self.artnet.since(since):
            p = parse_artdmx(raw)
            assert p.universe == 0, f"Art-Net universe {p.universe}"
            out.append((t, p.data))
        return out

    def opc_frames(self, since: float) -> list[tuple[float, bytes]]:
        out = []
        for t, m in self.opc.since(since):
            assert (m.channel, m.command) == (0, 0), (m.channel, m.command)
            out.append((t, m.data))
        return out

    def wled_frames(self, protocol: int) -> Frames:
        def frames(since: float) -> list[tuple[float, bytes]]:
            out = []
            for t, raw in self.wled.since(since):
                p = parse_wled(raw)
                if p.protocol != protocol:
                    continue
                assert sorted(p.pixels) == list(range(len(p.pixels))), "WLED: not the whole strip from pixel 0"
                out.append((t, b"".join(bytes(p.pixels[i]) for i in range(len(p.pixels)))))
            return out
        return frames


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)      # Linux; Python's socket module lacks the name


class StampedUdpCapture(UdpCapture):
    """:class:`UdpCapture` stamping each datagram with the kernel's arrival time (``SO_TIMESTAMPNS``), so
    a pause of this test process (GIL, GC) does not read as a gap in what the sender sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def _run(self):
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(65535, 64)
            except (TimeoutError, OSError):
                continue
            stamp = next((struct.unpack("qq", d[:16]) for level, kind, d in ancdata
                          if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)), None)
            self.packets.append((stamp[0] + stamp[1] * 1e-9 if stamp else time.time(), data))


def _need(binary: str) -> None:
    if not shutil.which(binary):
        pytest.skip(f"{binary} not installed (install.sh installs it)")


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Rig:
    _need("redis-server")
    tmp = tmp_path_factory.mktemp("led-reconfigure")
    (tmp / "logs").mkdir()
    with contextlib.ExitStack() as cleanup:
        redis = RedisServer(tmp).start()
        cleanup.callback(redis.stop)
        bus = Bus.connect(redis.url, name="led-reconfigure-observer")
        cleanup.callback(bus.close)
        ddp, artnet, wled, opc = StampedUdpCapture(), UdpCapture(), UdpCapture(), OpcCapture()
        sacn = SacnCapture([SACN_U1, SACN_U2])
        for part in (ddp, artnet, wled, opc, sacn):
            cleanup.callback(part.close)
        api_port = free_port()
        # no metrics ports: the fixed 'auto' ones may be taken by another deployment on this machine
        env = daemon_env(REDIS_URL=redis.url, BEATBUS_STATE_DIR=str(tmp / "state"), BEATBUS_METRICS_ADDR="off")
        led_args = ["consume", "led", "--source", SOURCE, "--name", CONSUMER, "--effect", "beat_flash",
                    "--output", f"ddp://127.0.0.1:{ddp.port}?name=ddp1&pixels=100&fps={DDP_FPS:g}"]
        rig = Rig(tmp, env, led_args, f"http://127.0.0.1:{api_port}", bus, {}, ddp, sacn, artnet, opc, wled)
        roles = {"processor": ["process", "--backend", "dsp"],
                 "api": ["api", "--port", str(api_port)],
                 "producer": ["produce", "click", "--bpm", "120", "--source", SOURCE]}
        readers = [rig.start_led("1")]
        cleanup.callback(lambda: rig.daemons["led"].stop())
        for name in ("processor", "api"):
            rig.daemons[name] = d = Daemon(name, roles[name], env=env, workdir=tmp / "logs").start()
            cleanup.callback(d.stop)
            readers.append(d)
        ready = wait_for(lambda: all(d.poll_ready() for d in readers) or not all(d.alive() for d in readers),
                         START_TIMEOUT_S)
        assert ready and all(d.alive() for d in readers), f"a daemon did not start:\n{rig.tails()}"
        rig.daemons["producer"] = d = Daemon("producer", roles["producer"], env=env, workdir=tmp / "logs").start()
        cleanup.callback(d.stop)
        # beats flow: the effects draw the music, not the ambient look
        eventually(lambda: bus.redis.xlen(keys.stream(SOURCE, "beats")) >= 4, 60,
                   what=lambda: f"beats on {SOURCE}\n{rig.tails()}")
        yield rig
        problems = [f"{d.describe()}: {d.stop_problem}" for d in [*rig.stopped, *rig.daemons.values()]
                    if d.stop_problem]
    assert not problems, "daemons did not stop cleanly on SIGTERM:\n" + "\n".join(problems)


# -- REST --------------------------------------------------------------------------------------
def _api(rig: Rig, method: str, path: str, doc: dict | None = None) -> dict:
    """The JSON answer of a 200 (a 429 of the rate limit is retried)."""
    rig.requests.append((time.time(), f"{method} {path}"))
    answer: list = []

    def call() -> bool:
        answer[:] = [http_json(method, rig.api_url + path, doc)]
        return answer[0][0] != 429

    eventually(call, WAIT_S, what=f"{method} {path} past the rate limit", interval=0.2)
    status, body = answer[0]
    assert status == 200, f"{method} {path} {json.dumps(doc)} -> {status}: {body}\n{rig.tails()}"
    return json.loads(body)


def _device(setup: dict, name: str) -> dict | None:
    return next((d for d in setup["devices"] if d["name"] == name), None)


def _post(rig: Rig, doc: dict) -> float:
    """Add a device; returns the wall time the request was sent."""
    t = time.time()
    setup = _api(rig, "POST", "/api/led/devices", doc)
    assert setup["consumer"] == CONSUMER and _device(setup, doc["name"])["running"], setup
    return t


def _patch(rig: Rig, name: str, doc: dict) -> float:
    t = time.time()
    setup = _api(rig, "PATCH", f"/api/led/devices/{name}", doc)
    got = _device(setup, name)
    for key, value in doc.items():
        if key != "effect_config":
            assert got[key] == value, f"PATCH {name} {key}={value!r}: the setup says {got[key]!r}"
    return t


# -- the wire --------------------------------------------------------------------------------
def _frame(frames: Frames, since: float, ok: Callable[[bytes], bool], what: str) -> tuple[float, bytes]:
    """The newest frame after ``since`` that is ``ok``, waited for: (arrived, frame)."""
    def newest():
        return next(((t, f) for t, f in reversed(frames(since)) if ok(f)), None)

    def show():
        got = frames(since)
        return f"{what}: {len(got)} frames since, the newest {got[-1][1][:24].hex() if got else None}"

    return eventually(newest, WAIT_S, what=show, interval=0.05)


def _steady(frames: Frames, since: float, ok: Callable[[bytes], bool], what: str) -> bytes:
    """A frame after ``since`` that is ``ok`` and the same as the one before it (a static look), waited for."""
    def newest():
        got = frames(since)[-2:]
        return len(got) == 2 and got[0][1] == got[1][1] and ok(got[1][1]) and got[1][1]

    return eventually(newest, WAIT_S, what=what, interval=0.05)


def _fps(frames: Frames, since: float, ok: Callable[[bytes], bool], what: str, window: float = 1.0) -> float:
    """Frames per second that are ``ok``, over ``window`` s from the first such frame after ``since``."""
    first = eventually(lambda: next((t for t, f in frames(since) if ok(f)), None), WAIT_S,
                       what=f"a first frame of {what}", interval=0.05)
    eventually(lambda: any(t >= first + window for t, _f in frames(first)), WAIT_S,
               what=f"{what}: frames {window:g} s after the first", interval=0.05)
    rate = sum(1 for t, f in frames(first) if t < first + window and ok(f)) / window
    print(f"{what}: {rate:.0f} frames/s")
    return rate


def _whole(pixels: int, slots: int | None = None) -> Callable[[bytes], bool]:
    """A frame of ``pixels`` lit RGB pixels; ``slots``: the frame is padded to it with zeros (DMX)."""
    def ok(f: bytes) -> bool:
        if len(f) != (slots or 3 * pixels):
            return False
        return any(f[3 * pixels - 3:3 * pixels]) and not any(f[3 * pixels:])
    return ok


def _uniform(color: tuple[int, int, int], pixels: int) -> Callable[[bytes], bool]:
    """Every pixel ``color`` (+-1: float rounding)."""
    def ok(f: bytes) -> bool:
        return len(f) == 3 * pixels and all(abs(f[i] - color[i % 3]) <= 1 for i in range(len(f)))
    return ok


def _scaled(color: tuple[int, int, int], brightness: float) -> tuple[int, int, int]:
    return tuple(int(c / 255 * brightness * 255 + 0.5) for c in color)


def _pixels(f: bytes) -> list[bytes]:
    return [f[i:i + 3] for i in range(0, len(f), 3)]


def _assert_gone(rig: Rig, frames: Frames, sent: float, what: str, others: dict[str, Frames]) -> None:
    """Nothing reaches ``frames`` later than GONE_S after ``sent``, while every one of ``others`` goes on."""
    after = sent + GONE_S
    for name, other in others.items():
        eventually(lambda other=other: len(other(after + 0.5)) >= 5, WAIT_S,
                   what=f"{name} to keep getting frames after {what}", interval=0.05)
    late = frames(after)
    assert not late, f"{what}: {len(late)} frames arrived later than {GONE_S:g} s after the request"


def _longest_gap(times: list[float]) -> tuple[float, float]:
    """The longest time between two frames, and when it began."""
    return max(((b - a, a) for a, b in zip(times, times[1:])), default=(0.0, 0.0))


# -- the walk ------------------------------------------------------------------------------------
def test_every_output_follows_live_reconfiguration_through_the_api(rig):
    try:
        _walk(rig)
    except BaseException:
        print(rig.tails())          # shown under the failure
        raise


def _walk(rig: Rig) -> None:  # noqa: PLR0915  (one ordered story: each step builds on the last)
    ddp, artnet, opc = rig.ddp_frames, rig.artnet_frames, rig.opc_frames
    sacn1, sacn2 = rig.sacn_frames(SACN_U1), rig.sacn_frames(SACN_U2)
    drgb, dnrgb = rig.wled_frames(WLED_DRGB), rig.wled_frames(WLED_DNRGB)
    setup = _api(rig, "GET", "/api/led/devices")
    assert [d["name"] for c in setup["consumers"] for d in c["devices"]] == ["ddp1"], setup
    began = time.time()
    assert _fps(ddp, began, lambda f: len(f) == 300, "the seed DDP device") >= DDP_MIN_FPS
    gap_from = time.time()

    # 1. add one device of every other protocol: each gets whole frames at its frame rate at once
    t = _post(rig, {"name": "sacn1", "output": f"sacn://127.0.0.1:{rig.sacn.port}?universe={SACN_U1}",
                    "pixels": 60, "effect": "gradient", "effect_config": SCROLL_LOOK})
    assert _fps(sacn1, t, _whole(60, 512), "sACN universe 1 (the sacn package's receiver)") >= MIN_FPS
    assert SACN_U1 in rig.sacn.available
    t = _post(rig, {"name": "artnet1", "output": f"artnet://127.0.0.1:{rig.artnet.port}?universe=0", "pixels": 50})
    assert _fps(artnet, t, lambda f: len(f) == 150, "Art-Net") >= MIN_FPS
    t = _post(rig, {"name": "opc1", "output": f"opc://127.0.0.1:{rig.opc.port}", "pixels": 40,
                    "effect": "gradient", "effect_config": RAINBOW_LOOK})
    assert _fps(opc, t, lambda f: len(f) == 120, "OPC") >= MIN_FPS
    t = _post(rig, {"name": "wled1", "output": f"wled://127.0.0.1:{rig.wled.port}?mode=drgb", "pixels": 30})
    assert _fps(drgb, t, lambda f: len(f) == 90, "WLED DRGB") >= MIN_FPS

    # meanwhile the seed device went on drawing its beat_flash: whole, one colour (or dark) frames
    t = time.time()
    odd = [f.hex()[:24] for _t, f in ddp(gap_from) if _t < t and not (len(f) == 300 and f[:3] * 100 == f)]
    assert not odd, f"DDP frames that are not a whole beat_flash while devices were added: {odd[:3]}"

    # 2. effect: beat_flash -> a static one-colour gradient, exact on the wire
    t = _patch(rig, "ddp1", {"effect": "gradient", "effect_config": WARM_LOOK})
    _frame(ddp, t, _uniform(WARM, 100), "DDP in warm white")
    # 3. brightness: every channel capped, the colour scaled
    t = _patch(rig, "ddp1", {"brightness": 0.3})
    capped, _f = _frame(ddp, t, _uniform(_scaled(WARM, 0.3), 100), "DDP in warm white at 0.3")
    eventually(lambda: len(ddp(capped)) >= 5, WAIT_S, what="DDP frames after the brightness change")
    over = [max(f) for _t, f in ddp(capped) if max(f) > 255 * 0.3 + 1]
    assert not over, f"DDP frames over the brightness cap 0.3 (channels up to {max(over)})"

    # 4. pixel count: the frame length changes on the wire, per protocol
    warm = _uniform(_scaled(WARM, 0.3), 150)
    t = _patch(rig, "ddp1", {"pixels": 150})
    _frame(ddp, t, warm, "DDP frames of 150 pixels (450 bytes)")
    steady_from = time.time()
    t = _patch(rig, "sacn1", {"pixels": 100})
    _frame(sacn1, t, _whole(100, 512), "sACN: 300 lit slots")
    t = _patch(rig, "artnet1", {"pixels": 80})
    _frame(artnet, t, lambda f: len(f) == 240, "Art-Net data length 240")
    t = _patch(rig, "opc1", {"pixels": 64})
    _frame(opc, t, lambda f: len(f) == 192, "OPC length 192")
    t = _patch(rig, "wled1", {"pixels": 45})
    _frame(drgb, t, lambda f: len(f) == 135, "WLED DRGB of 45 pixels")

    # 5. reverse, then segments: the pixel order on the wire (a static rainbow along the OPC strip)
    forward = _steady(opc, time.time(), lambda f: len(f) == 192, "a steady OPC frame of 64 pixels")
    px = _pixels(forward)
    assert len(set(px)) > 8, f"the rainbow gradient is not one: {forward.hex()}"
    t = _patch(rig, "opc1", {"reverse": True})
    _frame(opc, t, lambda f: f == b"".join(reversed(px)), "the OPC strip reversed")
    t = _patch(rig, "opc1", {"reverse": False, "segments": [{"start": 0, "stop": 32, "reverse": False},
                                                             {"start": 32, "stop": 64, "reverse": True}]})
    segmented = b"".join(px[:32] + px[32:][::-1])
    _frame(opc, t, lambda f: f == segmented, "OPC: the first half forward, the second reversed")

    # 6. frame rate: packets per second follow (loosely: beat frames come on top)
    t = _patch(rig, "artnet1", {"fps": 15.0})
    rate = _fps(artnet, t + 0.3, lambda f: len(f) == 240, "Art-Net at 15 fps", window=2.0)
    assert 7 <= rate <= 22, f"Art-Net at fps=15: {rate:.1f} packets/s"

    # 7. the output URL, in place: another sACN universe; the WLED protocol DRGB -> DNRGB
    t = _patch(rig, "sacn1", {"output": f"sacn://127.0.0.1:{rig.sacn.port}?universe={SACN_U2}"})
    assert _fps(sacn2, t, _whole(100, 512), f"sACN universe {SACN_U2}") >= MIN_FPS
    late = [x for x, _f in sacn1(t + GONE_S) if any(_f)]
    assert not late, f"sACN universe {SACN_U1} still lit {len(late)} times after the move"
    t = _patch(rig, "wled1", {"output": f"wled://127.0.0.1:{rig.wled.port}?mode=dnrgb"})
    assert _fps(dnrgb, t, lambda f: len(f) == 135, "WLED DNRGB") >= MIN_FPS
    assert not drgb(t + GONE_S), "WLED DRGB packets after the move to DNRGB"

    # 8. delete: its receiver hears nothing within a second, the others go on
    t = time.time()
    setup = _api(rig, "DELETE", "/api/led/devices/artnet1")
    assert _device(setup, "artnet1") is None, setup
    _assert_gone(rig, artnet, t, "DELETE artnet1", {"DDP": ddp, "sACN": sacn2, "OPC": opc, "WLED": dnrgb})

    # while the others changed, the seed device showed its own look in every frame (never blank:
    # an unrelated change restarts no other device)
    t = time.time()
    odd = [f.hex()[:24] for _t, f in ddp(steady_from) if _t < t and not warm(f)]
    assert not odd, f"{len(odd)} DDP frames left warm white while other devices changed: {odd[:3]}"

    # 9. a preset: saved, the effects changed, applied: the saved looks are back on the wire
    setup = _api(rig, "POST", "/api/led/presets", {"name": "show"})
    assert setup["presets"]["show"]["ddp1"]["effect"] == "gradient", setup["presets"]
    t = _patch(rig, "ddp1", {"effect": "beat_flash"})
    _patch(rig, "opc1", {"effect": "beat_flash"})
    _frame(ddp, t, lambda f: len(f) == 450 and not warm(f), "DDP no longer warm white")
    _frame(opc, t, lambda f: len(f) == 192 and f != segmented, "OPC no longer the rainbow")
    t = time.time()
    setup = _api(rig, "POST", "/api/led/presets/show/apply")
    assert _device(setup, "ddp1")["effect"] == "gradient", setup
    _frame(ddp, t, warm, "DDP warm white again (the preset's effect, at the device's brightness)")
    _frame(opc, t, lambda f: f == segmented, "OPC's rainbow again")

    # the seed device never stalled while it and the others were added, changed and removed
    gap_to = time.time()
    times = [t for t, _f in ddp(gap_from) if t < gap_to]
    gap, at = _longest_gap(times)
    near = min(rig.requests, key=lambda r: abs(r[0] - at))
    print(f"DDP: {len(times) / (gap_to - gap_from):.0f} frames/s over {gap_to - gap_from:.0f} s of changes, "
          f"longest gap {gap * 1000:.0f} ms")
    assert gap <= MAX_GAP_FRAMES / DDP_FPS, \
        f"DDP went {gap * 1000:.0f} ms without a frame, {at - near[0]:+.2f} s from {near[1]}"

    # 10. restart the consumer with the same flags: the setup made through the API comes back
    expected = ["ddp1", "sacn1", "opc1", "wled1"]
    old = rig.daemons["led"]
    old.stop()
    rig.stopped.append(old)
    assert old.stop_problem is None, old.stop_problem
    t = time.time()
    rig.start_led("2")
    eventually(lambda: rig.daemons["led"].poll_ready() or not rig.daemons["led"].alive(), START_TIMEOUT_S,
               what="the LED consumer to start again")
    assert rig.daemons["led"].alive(), rig.tails()
    setup = _api(rig, "GET", "/api/led/devices")
    ours = [c for c in setup["consumers"] if c["consumer"] == CONSUMER]
    assert [d["name"] for c in ours for d in c["devices"]] == expected, ours
    _frame(ddp, t, warm, "DDP after the restart: 150 warm white pixels at 0.3 (not the seed's 100)")
    assert _fps(ddp, t, lambda f: len(f) == 450, "DDP after the restart") >= DDP_MIN_FPS
    assert _fps(sacn2, t, _whole(100, 512), f"sACN universe {SACN_U2} after the restart") >= MIN_FPS
    _frame(opc, t, lambda f: f == segmented, "OPC after the restart: the segmented rainbow")
    assert _fps(dnrgb, t, lambda f: len(f) == 135, "WLED DNRGB after the restart") >= MIN_FPS
    assert not artnet(t), "the deleted Art-Net device came back with the restart"
