"""The LED commands as users run them: real `beatbus` processes, checked from outside.

E1.31 through the `sacn` package's receiver, DDP through a parser written from the spec
(tests/led_support.py), the dashboard's LED feed through the `websockets` client, metrics
through prometheus_client's text parser, the terminal preview through a pipe and a pty.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import httpx
import orjson
import pytest
import sacn
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from support.led import BeatbusProcess, TcpCapture, UdpCapture, parse_ddp
from support.listeners import free_udp_port
from support.paths import ROOT
from support.procs import free_port

COMMON = ("--metrics-addr", "off", "--log-level", "info")


def _wait(cond, timeout: float, what: str, proc: BeatbusProcess | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"; stderr:\n{proc.stderr}" if proc else ""))


class SacnReceiver:
    """The `sacn` package's E1.31 receiver on a loopback port, recording universe 1."""

    def __init__(self, port: int):
        self.receiver = sacn.sACNreceiver(bind_address="127.0.0.1", bind_port=port)
        self.packets: list = []
        self.receiver.register_listener("universe", self.packets.append, universe=1)
        self.receiver.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.receiver.stop()


def _check_sacn(packets, pixels: int, source_name: str = "beatbus"):
    assert packets, "no E1.31 packet received"
    data = [p for p in packets if not p.option_StreamTerminated]
    assert data
    for p in data:
        assert p.universe == 1 and p.priority == 100 and p.sourceName == source_name
        dmx = p.dmxData
        assert len(dmx) >= pixels * 3 and all(0 <= v <= 255 for v in dmx)
        assert not any(dmx[pixels * 3:])                   # nothing past the strip
    assert any(any(p.dmxData[:pixels * 3]) for p in data)   # the ambient effect lights the strip


# -- issue 15 item 1: sACN sends nothing ---------------------------------------------------
def test_consume_led_sends_e131_that_the_sacn_package_receives(broker, tmp_path):
    port = free_udp_port()
    with SacnReceiver(port) as rx:
        with BeatbusProcess(tmp_path, "consume", "led", "--output",
                            f"sacn://127.0.0.1:{port}?universe=1&source_name=stage%20left",
                            "--pixels", "20", "--fps", "30", "--redis-url", broker.url, *COMMON) as proc:
            _wait(lambda: len(rx.packets) >= 5, 20, "E1.31 packets", proc)
            assert proc.alive()
            rc = proc.stop()
        time.sleep(0.3)
    assert rc == 0, proc.stderr
    _check_sacn(rx.packets, 20, "stage left")
    assert "Traceback" not in proc.stderr


def test_run_with_an_sacn_led_output_drives_the_receiver(tmp_path):
    port = free_udp_port()
    with SacnReceiver(port) as rx:
        proc = BeatbusProcess(tmp_path, "run", "--click", "120", "--duration", "4", "--backend", "dsp",
                              "--led", f"sacn://127.0.0.1:{port}?universe=1", "--pixels", "30", *COMMON)
        rc = proc.proc.wait(60)
        proc.stop()
    assert rc == 0, proc.stderr
    assert len(rx.packets) >= 10, proc.stderr
    _check_sacn(rx.packets, 30)


# -- issue 15 items 3 and 15: a controller that is down or boots late ----------------------
def _metric(text: str, name: str, device: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("device") == device:
                return sample.value
    return None


def test_a_late_ddp_controller_is_logged_once_retried_with_backoff_and_then_driven(broker, tmp_path):
    port = free_udp_port()
    # metrics port 0: the daemon binds a free one and logs it (a port picked here could be taken meanwhile)
    with BeatbusProcess(tmp_path, "consume", "led", "--output", f"ddp://127.0.0.1:{port}", "--pixels", "20",
                        "--fps", "60", "--redis-url", broker.url, "--metrics-addr", "127.0.0.1:0",
                        "--log-level", "info") as proc:
        proc.wait_for_stderr("output down")
        metrics_port = int(re.search(r"http://127\.0\.0\.1:(\d+)/metrics", proc.stderr)[1])
        time.sleep(4.0)                                     # nothing listens: ICMP refusals every few frames
        down_log = proc.stderr
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        with UdpCapture(port) as cap:                       # the controller boots
            packets = cap.wait_for(20, timeout=15)
            proc.wait_for_stderr("output back", timeout=15)
            assert proc.alive()
            rc = proc.stop()
    assert rc == 0, proc.stderr
    # one line per state change, not one per packet (it was ~30 lines a second)
    output_lines = [ln for ln in down_log.splitlines() if "beatbus.led" in ln and "output" in ln]
    assert len(output_lines) == 1 and "output down" in output_lines[0], down_log
    assert proc.stderr.count("output back") == 1 and proc.stderr.count("output down") == 1, proc.stderr
    assert _metric(metrics, "beatbus_led_output_errors_total", "ddp:127.0.0.1") >= 2
    assert _metric(metrics, "beatbus_led_output_up", "ddp:127.0.0.1") == 0
    # valid DDP frames: version 1, RGB 8-bit, display, one packet per 20-pixel frame with push
    assert len(packets) >= 20
    for p in packets:
        ddp = parse_ddp(p)
        assert (ddp["version"], ddp["type"], ddp["dest"], ddp["offset"], ddp["length"], ddp["push"]) == \
            (1, 0x0B, 1, 0, 60, True)
        assert 1 <= ddp["seq"] <= 15 and len(ddp["data"]) == 60


def test_a_late_opc_server_is_a_warning_not_an_exit(broker, tmp_path):
    port = free_port()
    with BeatbusProcess(tmp_path, "consume", "led", "--output", f"opc://127.0.0.1:{port}", "--pixels", "10",
                        "--fps", "30", "--redis-url", broker.url, *COMMON) as proc:
        proc.wait_for_stderr("not reachable yet")
        time.sleep(2.0)
        assert proc.alive(), proc.stderr                  # it exited 2 before: systemd gave up on it
        with TcpCapture(port) as srv:
            data = srv.wait_for(34 * 3, timeout=15)
        assert proc.alive()
    assert len(data) >= 34 * 3 and data[:4] == bytes([0, 0, 0, 30]), proc.stderr
    strict = subprocess.run([sys.executable, "-m", "beatbus.cli", "consume", "led", "--output",
                             f"opc://127.0.0.1:{free_port()}", "--check", "strict", "--redis-url", broker.url,
                             *COMMON], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert strict.returncode == 2
    assert strict.stderr.strip().splitlines()[-1].startswith("beatbus: error: output opc://127.0.0.1:")


# -- issue 15 item 4: the LED preview in the dashboard, whichever process renders -----------
def test_the_api_lists_and_streams_frames_rendered_by_a_separate_led_consumer(broker, tmp_path):
    api_port = free_port()
    with UdpCapture() as cap, \
            BeatbusProcess(tmp_path, "consume", "led", "--output", "web://strip", "--output",
                           f"ddp://127.0.0.1:{cap.port}", "--pixels", "12", "--fps", "30",
                           "--redis-url", broker.url, *COMMON, name="led") as led, \
            BeatbusProcess(tmp_path, "api", "--port", str(api_port), "--redis-url", broker.url, "--no-generate",
                           *COMMON, name="api") as api:
        base = f"http://127.0.0.1:{api_port}"

        def listed():
            try:
                return set(httpx.get(f"{base}/api/led/devices", timeout=2).json()["devices"])
            except httpx.HTTPError:
                return None
        devices = _wait(lambda: (d := listed()) and {"strip", "ddp:127.0.0.1"} <= d and d, 30, "devices", api)
        assert devices == {"strip", "ddp:127.0.0.1"}
        frames = []
        with ws_connect(f"ws://127.0.0.1:{api_port}/ws/led/ddp:127.0.0.1", open_timeout=5) as ws:
            hello = orjson.loads(ws.recv(timeout=5))
            while len(frames) < 10:
                frames.append(ws.recv(timeout=5))
        time.sleep(0.2)
        rendered = {parse_ddp(p)["data"] for _, p in cap.packets}
        with ws_connect(f"ws://127.0.0.1:{api_port}/ws/led/strip", open_timeout=5) as ws:
            strip_hello = orjson.loads(ws.recv(timeout=5))
            strip_frame = ws.recv(timeout=5)
            assert led.stop() == 0                      # the consumer goes: the feed ends, the list empties
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=10)
        _wait(lambda: listed() == set(), 10, "the devices to leave the list", api)
    assert hello == {"type": "hello", "device": "ddp:127.0.0.1", "format": "rgb8", "pixels": 12, "fps": 30.0,
                     "source": "default", "output": "ddp"}
    assert all(isinstance(f, bytes) and len(f) == 36 for f in frames)
    assert all(f in rendered for f in frames)           # byte for byte what went out to the strip
    assert len(set(frames)) > 1                         # live frames, not one snapshot
    assert strip_hello["pixels"] == 12 and strip_hello["output"] == "web" and len(strip_frame) == 36


def test_run_with_a_web_led_output_serves_the_dashboard_and_prints_its_url(tmp_path):
    proc = BeatbusProcess(tmp_path, "run", "--click", "120", "--duration", "8", "--backend", "dsp",
                          "--led", "web://strip", "--pixels", "8", *COMMON)
    try:
        err = proc.wait_for_stderr("LED preview", timeout=30)
        url = re.search(r"LED preview of strip in the dashboard: (http://\S+)", err).group(1)
        assert url.endswith("/?led=strip")
        base = url.split("/?")[0]
        page = httpx.get(url, timeout=5)
        assert page.status_code == 200 and "led-canvas" in page.text
        assert "strip" in httpx.get(f"{base}/api/led/devices", timeout=5).json()["devices"]
        with ws_connect(base.replace("http", "ws") + "/ws/led/strip", open_timeout=5) as ws:
            hello = orjson.loads(ws.recv(timeout=5))
            frame = ws.recv(timeout=5)
        assert hello["pixels"] == 8 and len(frame) == 24
        assert proc.proc.wait(30) == 0, proc.stderr
    finally:
        proc.stop()


def test_consume_led_serves_its_ws_output_to_a_websocket_client(broker, tmp_path):
    """`--output ws://HOST:PORT`: the LED consumer itself serves its frames, to the `websockets` client."""
    port = free_port()
    with BeatbusProcess(tmp_path, "consume", "led", "--output", f"ws://127.0.0.1:{port}", "--pixels", "12",
                        "--fps", "30", "--redis-url", broker.url, *COMMON, name="led") as led:
        def connected():
            try:
                return ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=2)
            except OSError:
                return None
        with _wait(connected, 30, "the ws:// output to listen", led) as ws:
            hello = orjson.loads(ws.recv(timeout=5))
            frames = [ws.recv(timeout=5) for _ in range(10)]
        assert led.stop() == 0, led.stderr
    assert hello["type"] == "hello" and hello["format"] == "rgb8" and hello["pixels"] == 12
    assert all(isinstance(f, bytes) and len(f) == 36 for f in frames)
    assert len(set(frames)) > 1                         # live frames, not one snapshot
    assert "Traceback" not in led.stderr


# -- issue 15 item 11: terminal:// --------------------------------------------------------
_RUN_TERMINAL = ("run", "--click", "120", "--duration", "3", "--backend", "dsp", "--led", "terminal://",
                 "--pixels", "200", *COMMON)


def test_terminal_preview_writes_nothing_of_the_strip_into_a_pipe(tmp_path):
    proc = BeatbusProcess(tmp_path, *_RUN_TERMINAL)
    rc = proc.proc.wait(60)
    proc.stop()
    out = proc.stdout
    assert rc == 0, proc.stderr
    assert b"\x1b" not in out and len(out) < 2000, out[:300]      # was 431 KB for 12 s
    assert out.count(b" BPM ") >= 3


class _Screen:
    """What a terminal shows: enough of VT100 for \\r, \\n, CSI K (erase line) and SGR (colours)."""

    def __init__(self, cols: int):
        self.cols, self.lines, self.row, self.col = cols, [[]], 0, 0

    def feed(self, text: str) -> None:
        for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|.", text, re.S):
            line = self.lines[self.row]
            if token == "\r":
                self.col = 0
            elif token == "\n":
                self.row += 1
                if self.row == len(self.lines):
                    self.lines.append([])
            elif token.startswith("\x1b["):
                if token.endswith("K"):
                    del line[self.col:]
                elif not token.endswith("m"):
                    raise AssertionError(f"unexpected escape {token!r}")
            else:
                if self.col >= self.cols:           # autowrap
                    self.row, self.col = self.row + 1, 0
                    if self.row == len(self.lines):
                        self.lines.append([])
                    line = self.lines[self.row]
                line.extend(" " * (self.col - len(line)))
                line[self.col:self.col + 1] = [token]
                self.col += 1

    def text(self) -> list[str]:
        return ["".join(line).rstrip() for line in self.lines]


def test_terminal_preview_in_a_pty_keeps_beat_lines_whole_and_the_strip_on_its_own_line():
    cols = 100
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", *_RUN_TERMINAL], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    raw = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:                       # EIO: the child closed the pty
                    break
                if not chunk:
                    break
                raw += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(30)
    assert proc.returncode == 0
    screen = _Screen(cols)
    screen.feed(raw.decode("utf-8"))
    lines = [ln for ln in screen.text() if ln]
    beat_re = re.compile(r"^\s+\d+\.\d\ds\s+\d+\.\d\s+\d+\.\d BPM  conf \d\.\d\d  [·●] ?█{1,24}$")
    beats = [ln for ln in lines if "BPM" in ln]
    assert len(beats) >= 3 and all(beat_re.match(ln) for ln in beats), "\n".join(lines)
    strip_lines = [ln for ln in lines if ln.count("█") > 30]
    assert not strip_lines, "\n".join(lines)          # the strip was cleared at exit, never left in a beat line
    assert b"\x1b[38;2;" in raw                       # the strip was drawn (truecolour) on the terminal
