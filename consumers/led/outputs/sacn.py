"""E1.31 / sACN (UDP 5568): DMX512 universes of 170 RGB pixels, written here from ANSI E1.31-2018.

Packet: a 126-byte header (root, framing and DMP layers) + up to 512 slots. The frame is
split across consecutive universes starting at ``universe``; each universe has its own
sequence number. ``sacn://multicast?universe=1`` sends to 239.255.{hi}.{lo} per universe.
Closing sends three "stream terminated" packets per universe, as the standard asks.
"""
from __future__ import annotations

import socket
import struct
import uuid

from ..params import Param
from .base import UdpOutput, resolve

__all__ = ["SacnOutput", "PIXELS_PER_UNIVERSE", "multicast_group"]

PIXELS_PER_UNIVERSE = 170
ACN_ID = b"ASC-E1.17\x00\x00\x00"
VECTOR_ROOT_DATA, VECTOR_FRAMING_DATA, VECTOR_DMP_SET = 0x00000004, 0x00000002, 0x02
OPT_TERMINATED = 0x40
MAX_UNIVERSE = 63999


def multicast_group(universe: int) -> str:
    return f"239.255.{universe >> 8}.{universe & 0xFF}"


class SacnOutput(UdpOutput):
    scheme = "sacn"
    default_port = 5568
    PARAMS = {
        "universe": Param(1, "First universe; 170 RGB pixels per universe", 1, MAX_UNIVERSE),
        "priority": Param(100, "E1.31 priority (receivers follow the highest)", 0, 200),
        "source_name": Param("beatbus", "Source name shown by receivers (UTF-8, up to 63 bytes)"),
    }

    def __init__(self, spec, pixels):
        super().__init__(spec, pixels)
        self.first = self.params.get("universe", 1)
        self.count = -(-self.pixels // PIXELS_PER_UNIVERSE)
        self.seq = {u: 0 for u in self.universes}
        # stable per host and URL, so a receiver sees the same source after a restart
        self.cid = uuid.uuid5(uuid.NAMESPACE_URL, f"beatbus:{socket.gethostname()}:{spec.url}").bytes
        self.source_name = self.params.get("source_name", "beatbus").encode()[:63].ljust(64, b"\x00")
        self.multicast = spec.host == "multicast"
        self._addrs: dict[int, tuple] = {}

    @property
    def universes(self) -> range:
        return range(self.first, self.first + self.count)

    @classmethod
    def max_pixels(cls, params) -> int:
        return (MAX_UNIVERSE - params.get("universe", 1) + 1) * PIXELS_PER_UNIVERSE

    def open(self) -> None:
        if not self.multicast:
            return super().open()
        if self.sock is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
        sock.settimeout(0.1)
        self._addrs = {u: resolve(multicast_group(u), self.spec.port)[1] for u in self.universes}
        self.sock = sock

    def packet(self, universe: int, data: bytes, *, options: int = 0) -> bytes:
        """One E1.31 data packet for ``universe`` carrying ``data`` (<= 512 slots)."""
        self.seq[universe] = (self.seq[universe] + 1) % 256
        n = len(data)
        total = 126 + n
        root = struct.pack(">HH12sHI16s", 0x0010, 0x0000, ACN_ID, 0x7000 | (total - 16), VECTOR_ROOT_DATA, self.cid)
        framing = struct.pack(">HI64sBHBBH", 0x7000 | (total - 38), VECTOR_FRAMING_DATA, self.source_name,
                              self.params.get("priority", 100), 0, self.seq[universe], options, universe)
        dmp = struct.pack(">HBBHHHB", 0x7000 | (total - 115), VECTOR_DMP_SET, 0xA1, 0x0000, 0x0001, n + 1, 0x00)
        return root + framing + dmp + data

    def encode_universes(self, frame: bytes, *, options: int = 0) -> list[tuple[int, bytes]]:
        step = PIXELS_PER_UNIVERSE * 3
        return [(u, self.packet(u, frame[i * step:(i + 1) * step], options=options))
                for i, u in enumerate(self.universes)]

    def encode(self, frame: bytes) -> list[bytes]:
        return [p for _, p in self.encode_universes(frame)]

    def send(self, frame: bytes) -> None:
        if not self.multicast:
            return super().send(frame)
        if self.sock is None:
            self.open()
        for u, packet in self.encode_universes(frame):
            self.sock.sendto(packet, self._addrs[u])

    def close(self) -> None:
        if self.sock is not None:
            blank = bytes(self.pixels * 3)
            try:
                for _ in range(3):
                    for u, packet in self.encode_universes(blank, options=OPT_TERMINATED):
                        if self.multicast:
                            self.sock.sendto(packet, self._addrs[u])
                        else:
                            self.sock.send(packet)
            except OSError:
                pass
        super().close()
