"""Web preview: the latest frame of each device, for a browser canvas.

Two ways to get frames to a page:

- In process: :data:`HUB` (a :class:`FrameHub`) holds the latest frame of every ``web://``
  and ``ws://`` device. An ASGI app in the same process (the API of ``beatbus run``)
  serves it with ``async for frame in HUB.frames(name): await websocket.send_bytes(frame)``.
- Across processes: ``ws://127.0.0.1:8765`` also starts :class:`PreviewServer`, a small
  RFC 6455 WebSocket server (server-to-client only) on that address.

Messages: first a text message ``{"type": "hello", "device", "pixels", "fps", "format": "rgb8"}``,
then one binary message per frame: the RGB bytes, 3 per pixel. Slow clients get the
newest frame and skip the rest.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import select
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator

import orjson

from beatbus.log import get_logger

from ..params import Param
from .base import Output

__all__ = ["FrameHub", "HUB", "WebOutput", "PreviewServer", "ws_frame", "ws_accept"]

log = get_logger("led.web")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class FrameHub:
    """Latest-frame pub/sub between render threads and preview clients (thread-safe)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frames: dict[str, tuple[int, bytes]] = {}
        self.meta: dict[str, dict] = {}

    def register(self, name: str, **meta) -> None:
        with self._cond:
            self.meta[name] = dict(meta)

    def unregister(self, name: str) -> None:
        """Forget a closed device, so the preview lists only live ones."""
        with self._cond:
            self.meta.pop(name, None)
            self._frames.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self.meta)

    def publish(self, name: str, frame: bytes) -> None:
        with self._cond:
            seq = self._frames.get(name, (0, b""))[0] + 1
            self._frames[name] = (seq, frame)
            self._cond.notify_all()

    def latest(self, name: str) -> tuple[int, bytes] | None:
        return self._frames.get(name)

    def wait(self, name: str, after: int, timeout: float) -> tuple[int, bytes] | None:
        """Block until a frame newer than sequence ``after`` exists (or ``timeout`` s)."""
        with self._cond:
            self._cond.wait_for(lambda: self._frames.get(name, (0,))[0] > after, timeout)
            cur = self._frames.get(name)
            return cur if cur is not None and cur[0] > after else None

    async def frames(self, name: str, *, max_fps: float = 30.0) -> AsyncIterator[bytes]:
        """Yield each new frame of ``name``, at most ``max_fps`` per second (for ASGI handlers)."""
        seen = 0
        while True:
            cur = self._frames.get(name)
            if cur is not None and cur[0] != seen:
                seen = cur[0]
                yield cur[1]
            await asyncio.sleep(1.0 / max_fps)


HUB = FrameHub()


def ws_accept(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


class PreviewServer:
    """A minimal WebSocket server that streams one hub channel to every client.

    Parameters
    ----------
    hub, name : FrameHub, str
        Channel to stream.
    host, port : str, int
        Address to bind (port 0 picks one; see :attr:`port`).
    max_fps : float
        Frames per second sent to each client at most.
    """

    def __init__(self, hub: FrameHub, name: str, host: str, port: int, *, max_fps: float = 30.0):
        self.hub, self.name, self.max_fps = hub, name, max_fps
        self._stop = threading.Event()
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.port = self.sock.getsockname()[1]
        self.clients = 0
        self._thread = threading.Thread(target=self._accept, name=f"ws-preview:{self.port}", daemon=True)

    def start(self) -> PreviewServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True, name="ws-preview-client").start()

    def _handshake(self, conn: socket.socket) -> bool:
        conn.settimeout(5.0)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk or len(data) > 16384:
                return False
            data += chunk
        lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        key = headers.get("sec-websocket-key")
        if not lines[0].startswith("GET ") or headers.get("upgrade", "").lower() != "websocket" or not key:
            conn.sendall(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {ws_accept(key)}\r\n\r\n").encode())
        return True

    def _client_closed(self, conn: socket.socket) -> bool:
        """Handle pending client frames: answer ping, notice close. True when the client left."""
        while select.select([conn], [], [], 0)[0]:
            head = conn.recv(2)
            if len(head) < 2:
                return True
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", conn.recv(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", conn.recv(8))[0]
            mask = conn.recv(4) if head[1] & 0x80 else b"\x00\x00\x00\x00"
            body = bytearray(conn.recv(n, socket.MSG_WAITALL)) if n else bytearray()
            for i in range(len(body)):
                body[i] ^= mask[i % 4]
            if opcode == OP_CLOSE:
                conn.sendall(ws_frame(OP_CLOSE, bytes(body[:2])))
                return True
            if opcode == OP_PING:
                conn.sendall(ws_frame(OP_PONG, bytes(body)))
        return False

    def _serve(self, conn: socket.socket) -> None:
        self.clients += 1
        try:
            if not self._handshake(conn):
                return
            meta = {"type": "hello", "device": self.name, "format": "rgb8", **self.hub.meta.get(self.name, {})}
            conn.sendall(ws_frame(OP_TEXT, orjson.dumps(meta)))
            seq, min_gap, last = 0, 1.0 / self.max_fps, 0.0
            while not self._stop.is_set():
                if self._client_closed(conn):
                    return
                cur = self.hub.wait(self.name, seq, timeout=0.5)
                if cur is None:
                    continue
                wait = last + min_gap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                    cur = self.hub.latest(self.name) or cur
                seq, last = cur[0], time.monotonic()
                conn.sendall(ws_frame(OP_BINARY, cur[1]))
        except OSError:
            pass                         # the client went away
        finally:
            self.clients -= 1
            conn.close()


class WebOutput(Output):
    """``web://NAME`` publishes frames to :data:`HUB` under NAME; ``ws://HOST:PORT`` publishes
    under the device's name and also serves them on HOST:PORT."""

    scheme = "web"
    transport = "local"
    default_fps = 30.0
    PARAMS = {"max_fps": Param(30.0, "Frames per second sent to each preview client at most", 1.0, 200.0)}

    def __init__(self, spec, pixels, *, hub: FrameHub = HUB, channel: str | None = None):
        super().__init__(spec, pixels)
        self.hub, self.channel = hub, channel
        self.server: PreviewServer | None = None

    @property
    def hub_name(self) -> str:
        """The hub channel: explicit, else NAME of ``web://NAME``, else the device's name."""
        if self.channel:
            return self.channel
        return self.spec.host if self.spec.scheme == "web" and self.spec.host else self.device_name

    def open(self) -> None:
        max_fps = self.params.get("max_fps", 30.0)
        self.hub.register(self.hub_name, pixels=self.pixels, fps=max_fps)
        if self.spec.scheme == "ws" and self.server is None:
            self.server = PreviewServer(self.hub, self.hub_name, self.spec.host, self.spec.port,
                                        max_fps=max_fps).start()
            log.info("LED preview served", extra={"url": f"ws://{self.spec.host}:{self.server.port}/",
                                                  "device": self.hub_name})

    def send(self, frame: bytes) -> None:
        self.hub.publish(self.hub_name, frame)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.hub.unregister(self.hub_name)
