"""A loopback UDP receiver on its own thread, for the benches that measure what arrives on the wire.

Each datagram is handed to :meth:`LoopbackUdp.on_packet` with its arrival time: the kernel's
receive timestamp (``SO_TIMESTAMPNS``), not the moment this thread got the GIL, since the receiver
shares its process with what it measures.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

__all__ = ["LoopbackUdp"]

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)     # Linux; SCM_TIMESTAMPNS has the same number


class LoopbackUdp:
    """Bound to 127.0.0.1 on a free port (``port``); ``start()`` / ``stop()`` run the receiving thread."""

    name = "udp-receiver"

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)

    def on_packet(self, data: bytes, arrival: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
            except (TimeoutError, OSError):
                continue
            arrival = time.time()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= 16:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    arrival = sec + nsec / 1e9
            self.on_packet(data, arrival)
