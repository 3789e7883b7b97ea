"""What stands at the other end of the pipeline: LED receivers and the error generator's test double.

Each records what arrived with its wall-clock arrival time (``time.time()``, the clock of the events'
``system_time``), from its own thread.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sacn

from .led import UdpCapture
from .procs import free_port
from .protocols import OpcMessage, parse_opc

__all__ = ["UdpCapture", "OpcCapture", "SacnCapture", "ErrorGeneratorDouble", "free_udp_port"]


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


class OpcCapture:
    """An Open Pixel Control server (TCP): every whole message, as ``(arrived, OpcMessage)``."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.messages: list[tuple[float, OpcMessage]] = []
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"opc-capture:{self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        rest = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                msgs, rest = parse_opc(rest + chunk)
                now = time.time()
                self.messages.extend((now, m) for m in msgs)

    def since(self, t: float) -> list[tuple[float, OpcMessage]]:
        return [m for m in list(self.messages) if m[0] >= t]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()


class SacnCapture:
    """The `sacn` package's E1.31 receiver (unicast on 127.0.0.1:port): packets as ``(arrived, DataPacket)``.

    Its callback runs when a universe's data changes (the package drops repeats and
    out-of-sequence packets), which a flashing effect does on every frame.
    """

    def __init__(self, universes: list[int]) -> None:
        self.port = free_udp_port()
        self.packets: list[tuple[float, object]] = []
        self.available: list[int] = []
        self.receiver = sacn.sACNreceiver(bind_address="127.0.0.1", bind_port=self.port)
        self.receiver.register_listener("availability", self._on_availability)
        for u in universes:
            self.receiver.register_listener("universe", self._on_packet, universe=u)
        self.receiver.start()

    def _on_availability(self, universe: int, changed: str) -> None:
        if changed == "available":
            self.available.append(universe)

    def _on_packet(self, packet) -> None:
        self.packets.append((time.time(), packet))

    def since(self, t: float) -> list[tuple[float, object]]:
        return [p for p in list(self.packets) if p[0] >= t]

    def close(self) -> None:
        self.receiver.stop()


@dataclass
class Trigger:
    arrived: float
    idempotency_key: str | None
    body: dict = field(default_factory=dict)


class ErrorGeneratorDouble:
    """A **test double** of the external error-generator service (written in Go, not part of beatbus).

    It speaks the trigger contract from the README (``POST /api/rhythm-trigger`` with a JSON body and
    an ``Idempotency-Key`` header, answered 200) and records every request. Written here rather than
    using ``beatbus dev error-generator``, so the contract is checked by code the trigger consumer
    does not share.
    """

    PATH = "/api/rhythm-trigger"

    def __init__(self) -> None:
        self.triggers: list[Trigger] = []
        self.bad_requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, doc: dict) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802  (stdlib naming)
                self._answer(200 if self.path == "/health" else 404, {"status": "ok"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != owner.PATH:
                    owner.bad_requests.append(f"POST {self.path}")
                    return self._answer(404, {"error": "unknown path"})
                try:
                    doc = json.loads(body)
                except ValueError:
                    owner.bad_requests.append(f"not JSON: {body[:80]!r}")
                    return self._answer(400, {"error": "not JSON"})
                owner.triggers.append(Trigger(time.time(), self.headers.get("Idempotency-Key"), doc))
                self._answer(200, {"status": "ok"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="error-generator-double",
                                        daemon=True)
        self._thread.start()

    def since(self, t: float) -> list[Trigger]:
        return [tr for tr in list(self.triggers) if tr.arrived >= t]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
