"""Reference receiver: a **test double** of the external error-generator service (written in Go).

It is not the error generator. It stands in for it in local demos, tests and benchmarks
(``beatbus dev error-generator --port 9090``), speaking the same trigger contract:

``POST /api/rhythm-trigger``
    Body: a :class:`schemas.TriggerRequest` JSON object; header ``Idempotency-Key``.
    200 ``{"status": "ok"}``; 400 with a message for an invalid body; or the injected fault.
``GET /received``
    Every request it got, oldest first: ``{"arrived_at": unix_s, "idempotency_key",
    "status", "body"}`` (failed attempts included, so retries can be counted).
``DELETE /received``
    Forget them.
``POST /control``
    Fault injection: ``{"status": 503, "count": 2, "delay_ms": 50}`` answers the next
    ``count`` triggers (null: all until changed) with ``status`` after ``delay_ms``;
    ``{"status": null, "delay_ms": 0}`` heals it. ``GET /control`` shows the fault.
``GET /health``
    ``{"status": "ok"}``.

A plain threading HTTP/1.1 server (keep-alive, TCP_NODELAY): no framework, so it measures
the trigger client and not itself.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from beatbus.errors import BeatbusError, ConfigError, SchemaError
from beatbus.schemas import TriggerRequest, decode

__all__ = ["ReferenceReceiver", "TRIGGER_PATH"]

TRIGGER_PATH = "/api/rhythm-trigger"
MAX_BODY = 64 * 1024


class _Fault:
    def __init__(self) -> None:
        self.status: int | None = None
        self.count: int | None = None
        self.delay_ms = 0.0

    def as_dict(self) -> dict:
        return {"status": self.status, "count": self.count, "delay_ms": self.delay_ms}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive: the client reuses connections
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format, *args) -> None:  # noqa: A002  (stdlib signature)
        pass

    def _send(self, status: int, doc) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": f"body larger than {MAX_BODY} bytes"})
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802  (stdlib naming)
        if self.path == "/received":
            self._send(200, self.server.owner.received())
        elif self.path == "/control":
            self._send(200, self.server.owner.fault.as_dict())
        elif self.path == "/health":
            self._send(200, {"status": "ok", "service": "reference-error-generator (test double)"})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_DELETE(self) -> None:  # noqa: N802
        if self.path == "/received":
            self._send(200, {"cleared": self.server.owner.clear()})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.time()
        body = self._body()
        if body is None:
            return
        if self.path == TRIGGER_PATH:
            self._trigger(arrived, body)
        elif self.path == "/control":
            try:
                doc = json.loads(body or b"{}")
                self.server.owner.set_fault(status=doc.get("status"), count=doc.get("count"),
                                            delay_ms=doc.get("delay_ms", 0.0))
            except (ValueError, AttributeError, BeatbusError) as exc:
                self._send(400, {"error": str(exc)})
                return
            self._send(200, self.server.owner.fault.as_dict())
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def _trigger(self, arrived: float, body: bytes) -> None:
        owner = self.server.owner
        status, delay = owner.take_fault()
        if delay:
            time.sleep(delay)
        parsed = None
        if status is None:
            try:
                decode(body, TriggerRequest)          # the contract: schemas/json/TriggerRequest
                parsed = json.loads(body)
                status, reply = 200, {"status": "ok"}
            except SchemaError as exc:
                status, reply = 400, {"error": str(exc)}
        else:
            reply = {"error": f"injected fault {status}"}
        owner.record({"arrived_at": arrived, "idempotency_key": self.headers.get("Idempotency-Key"),
                      "status": status, "body": parsed})
        self._send(status, reply)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # the stdlib's listen backlog is 5: a burst of new connections from the trigger client's pool
    # (32 by default) overflowed it and the kernel reset some (ReadError), which opened the client's
    # breaker; Go's net/http listens with the system's limit, as this does
    request_queue_size = socket.SOMAXCONN
    owner: ReferenceReceiver


class ReferenceReceiver:
    """The test double, in a background thread.

    Parameters
    ----------
    host : str
        Address to bind (loopback by default).
    port : int
        0 picks a free port.

    Examples
    --------
    >>> with ReferenceReceiver() as rx:                         # doctest: +SKIP
    ...     rx.set_fault(status=503, count=2)
    ...     print(rx.url, rx.received())
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.fault = _Fault()
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ReferenceReceiver:
        try:
            self._server = _Server((self.host, self.port), _Handler)
        except OSError as exc:
            raise ConfigError(f"reference receiver cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from None
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="reference-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections (the port can be reused by :meth:`start`)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ReferenceReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- records and faults ------------------------------------------------------------
    def record(self, doc: dict) -> None:
        with self._lock:
            self._records.append(doc)

    def received(self) -> list[dict]:
        with self._lock:
            return list(self._records)

    def clear(self) -> int:
        with self._lock:
            n = len(self._records)
            self._records.clear()
            return n

    def set_fault(self, *, status: int | None = None, count: int | None = None, delay_ms: float = 0.0) -> None:
        """Answer the next ``count`` triggers (None: all) with ``status`` after ``delay_ms``."""
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ConfigError(f"status={status!r} must be an HTTP status code (100-599) or null")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ConfigError(f"count={count!r} must be a non-negative integer or null")
        if not isinstance(delay_ms, (int, float)) or not 0 <= delay_ms <= 60000:
            raise ConfigError(f"delay_ms={delay_ms!r} must be between 0 and 60000")
        with self._lock:
            self.fault.status, self.fault.count, self.fault.delay_ms = status, count, float(delay_ms)

    def take_fault(self) -> tuple[int | None, float]:
        """The (status, delay s) for the next trigger; consumes one of ``count``."""
        with self._lock:
            f = self.fault
            status = f.status
            if status is not None and f.count is not None:
                if f.count <= 0:
                    status = None
                else:
                    f.count -= 1
            return status, f.delay_ms / 1000.0

