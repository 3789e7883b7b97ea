"""Loopback peers for the LED tests: real UDP/TCP sockets that record what arrives."""
from __future__ import annotations

import socket
import threading
import time


class UdpCapture:
    """A UDP socket on 127.0.0.1 that records ``(arrival wall time, datagram)``."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.packets: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (socket.timeout, OSError):
                continue
            self.packets.append((time.time(), data))

    def wait_for(self, n: int, timeout: float = 3.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.packets) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return [p for _, p in self.packets]

    def close(self):
        self._stop.set()
        self._thread.join(1)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TcpCapture:
    """A TCP server on 127.0.0.1 that accepts connections and records the bytes received."""

    def __init__(self, port: int = 0):
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.data = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.settimeout(0.05)
            with conn:
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    self.data += chunk

    def wait_for(self, n_bytes: int, timeout: float = 3.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.data) < n_bytes and time.monotonic() < deadline:
            time.sleep(0.005)
        return bytes(self.data)

    def close(self):
        self._stop.set()
        self._thread.join(1)
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
