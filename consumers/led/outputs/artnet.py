"""Art-Net 4 ArtDmx (UDP 6454): 170 RGB pixels per universe (port-address).

Header (18 bytes): "Art-Net\\0", OpCode 0x5000 little-endian, protocol version 14
(big-endian), sequence (1-255 per universe; 0 would disable reordering), physical port,
SubUni (low byte of the 15-bit port-address), Net (its high 7 bits), data length
(big-endian, even, 2-512).
"""
from __future__ import annotations

import struct

from ..params import Param
from .base import UdpOutput

__all__ = ["ArtnetOutput", "PIXELS_PER_UNIVERSE"]

PIXELS_PER_UNIVERSE = 170
ID = b"Art-Net\x00"
OP_DMX = 0x5000
PROTOCOL_VERSION = 14
MAX_PORT_ADDRESS = 32767


class ArtnetOutput(UdpOutput):
    scheme = "artnet"
    default_port = 6454
    PARAMS = {"universe": Param(0, "First port-address (15 bits: net, subnet, universe); 170 RGB pixels each",
                                0, MAX_PORT_ADDRESS)}

    def __init__(self, spec, pixels):
        super().__init__(spec, pixels)
        self.first = self.params.get("universe", 0)
        self.count = -(-self.pixels // PIXELS_PER_UNIVERSE)
        self.seq = {u: 0 for u in range(self.first, self.first + self.count)}

    @classmethod
    def max_pixels(cls, params) -> int:
        return (MAX_PORT_ADDRESS - params.get("universe", 0) + 1) * PIXELS_PER_UNIVERSE

    def packet(self, universe: int, data: bytes) -> bytes:
        if len(data) % 2:
            data += b"\x00"          # ArtDmx lengths are even
        self.seq[universe] = self.seq[universe] % 255 + 1
        return (ID + struct.pack("<H", OP_DMX) + struct.pack(">H", PROTOCOL_VERSION)
                + bytes((self.seq[universe], 0, universe & 0xFF, (universe >> 8) & 0x7F))
                + struct.pack(">H", len(data)) + data)

    def encode(self, frame: bytes) -> list[bytes]:
        step = PIXELS_PER_UNIVERSE * 3
        return [self.packet(self.first + i, frame[i * step:(i + 1) * step]) for i in range(self.count)]
