"""Loopback peers for the LED tests: real UDP/TCP sockets that record what arrives."""
from __future__ import annotations

import socket
import threading
import time


class UdpCapture:
    """A UDP socket on 127.0.0.1 that records ``(arrival wall time, datagram)``."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
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
            except (TimeoutError, OSError):
                continue
            self.packets.append((time.time(), data))

    def wait_for(self, n: int, timeout: float = 3.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.packets) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return [p for _, p in self.packets]

    def since(self, t: float) -> list[tuple[float, bytes]]:
        """``(arrived, payload)`` of the datagrams that arrived at or after wall time ``t``."""
        return [p for p in list(self.packets) if p[0] >= t]

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
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.settimeout(0.05)
            with conn:
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
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


def parse_ddp(packet: bytes) -> dict:
    """A DDP packet per the 3waylabs spec (10-byte header, big-endian), without our encoder."""
    flags, seq, dtype, dest = packet[0], packet[1] & 0x0F, packet[2], packet[3]
    offset = int.from_bytes(packet[4:8], "big")
    length = int.from_bytes(packet[8:10], "big")
    return {"version": flags >> 6, "push": bool(flags & 0x01), "seq": seq, "type": dtype, "dest": dest,
            "offset": offset, "length": length, "data": packet[10:10 + length]}


class BeatbusProcess:
    """A real ``beatbus`` command in a subprocess, its output in files (no pipe to fill up)."""

    def __init__(self, tmp, *args: str, env: dict | None = None, name: str = "proc"):
        import os
        import subprocess
        import sys

        from .paths import ROOT

        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k != "REDIS_URL"}
        full_env.update(env or {})
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        self._out, self._err = open(self.out_path, "wb"), open(self.err_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", *args], cwd=ROOT, env=full_env,
                                     stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def stdout(self) -> bytes:
        return self.out_path.read_bytes()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_stderr(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            err = self.stderr
            if text in err:
                return err
            if not self.alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in stderr (rc={self.proc.poll()}):\n{self.stderr}")

    def stop(self, timeout: float = 20.0) -> int:
        import signal

        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.alive():
                self.proc.kill()
                self.proc.wait()
            self._out.close()
            self._err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
