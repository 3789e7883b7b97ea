"""DDP (Distributed Display Protocol, UDP 4048), as WLED and many controllers receive it.

Header (10 bytes, big-endian): flags (0x40 version 1, 0x01 push on the last packet of a
frame), sequence (1-15, one per frame), data type (0x0B = RGB 8-bit), destination id
(1 = display), data offset (u32, bytes), data length (u16). At most 1440 data bytes
(480 RGB pixels) per packet: larger frames are split, the push flag on the last.
"""
from __future__ import annotations

import struct

from ..params import Param
from .base import UdpOutput

__all__ = ["DdpOutput", "HEADER", "MAX_DATA"]

HEADER = struct.Struct(">BBBBIH")
MAX_DATA = 1440
VERSION_1, PUSH = 0x40, 0x01
RGB8 = 0x0B


class DdpOutput(UdpOutput):
    scheme = "ddp"
    default_port = 4048
    PARAMS = {"dest": Param(1, "DDP destination id (1 = display, 255 = all)", 1, 255)}

    def __init__(self, spec, pixels):
        super().__init__(spec, pixels)
        self.seq = 0

    def encode(self, frame: bytes) -> list[bytes]:
        self.seq = self.seq % 15 + 1
        dest = self.params.get("dest", 1)
        packets = []
        for off in range(0, len(frame), MAX_DATA):
            chunk = frame[off:off + MAX_DATA]
            flags = VERSION_1 | (PUSH if off + MAX_DATA >= len(frame) else 0)
            packets.append(HEADER.pack(flags, self.seq, RGB8, dest, off, len(chunk)) + chunk)
        return packets
