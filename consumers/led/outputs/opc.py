"""Open Pixel Control (TCP 7890): ``[channel, command 0, length u16 BE] + RGB`` per frame."""
from __future__ import annotations

import socket
import struct

from ..params import Param
from .base import Output, resolve

__all__ = ["OpcOutput"]

SET_PIXELS = 0


class OpcOutput(Output):
    scheme = "opc"
    default_port = 7890
    transport = "tcp"
    PARAMS = {"channel": Param(0, "OPC channel (0 = broadcast to all)", 0, 255)}
    CONNECT_TIMEOUT_S = 2.0
    SEND_TIMEOUT_S = 0.5

    def __init__(self, spec, pixels):
        super().__init__(spec, pixels)
        self.sock: socket.socket | None = None

    @classmethod
    def max_pixels(cls, params) -> int:
        return 0xFFFF // 3

    def open(self) -> None:
        if self.sock is not None:
            return
        family, addr = resolve(self.spec.host, self.spec.port, socket.SOCK_STREAM)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.CONNECT_TIMEOUT_S)
            sock.connect(addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.SEND_TIMEOUT_S)     # a stuck peer errors out instead of stalling
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def encode(self, frame: bytes) -> bytes:
        return struct.pack(">BBH", self.params.get("channel", 0), SET_PIXELS, len(frame)) + frame

    def send(self, frame: bytes) -> None:
        if self.sock is None:
            self.open()
        self.sock.sendall(self.encode(frame))

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
