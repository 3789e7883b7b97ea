"""WLED UDP realtime (UDP 21324): WARLS, DRGB, DRGBW and DNRGB.

Byte 0 is the protocol, byte 1 the seconds WLED stays in realtime mode after the last
packet (0 releases it at once). Then WARLS ``[index, R, G, B]...`` (255 LEDs), DRGB
``R, G, B...`` (490), DRGBW ``R, G, B, W...`` (367), or DNRGB a u16 start index then
``R, G, B...`` (489 per packet; longer strips take several packets).
"""
from __future__ import annotations

import numpy as np

from ..params import Param
from .base import UdpOutput

__all__ = ["WledOutput", "PROTOCOLS", "LIMITS"]

PROTOCOLS = {"warls": 1, "drgb": 2, "drgbw": 3, "dnrgb": 4}
LIMITS = {"warls": 255, "drgb": 490, "drgbw": 367, "dnrgb": 0xFFFF + 489}
DNRGB_PER_PACKET = 489


class WledOutput(UdpOutput):
    scheme = "wled"
    default_port = 21324
    PARAMS = {
        "mode": Param("drgb", "Realtime protocol (dnrgb for more than 490 LEDs)", choices=tuple(PROTOCOLS)),
        "timeout": Param(2, "Seconds WLED stays in realtime mode after the last packet (255 = until released)",
                         1, 255),
    }

    def __init__(self, spec, pixels):
        super().__init__(spec, pixels)
        self.mode = self.params.get("mode", "drgb")
        self.timeout = self.params.get("timeout", 2)
        self.proto = PROTOCOLS[self.mode]

    @classmethod
    def max_pixels(cls, params) -> int:
        return LIMITS[params.get("mode", "drgb")]

    def encode(self, frame: bytes) -> list[bytes]:
        head = bytes((self.proto, self.timeout))
        if self.mode == "drgb":
            return [head + frame]
        rgb = np.frombuffer(frame, dtype=np.uint8).reshape(-1, 3)
        if self.mode == "warls":
            idx = np.arange(len(rgb), dtype=np.uint8)[:, None]
            return [head + np.hstack([idx, rgb]).tobytes()]
        if self.mode == "drgbw":
            w = rgb.min(axis=1, keepdims=True)           # white channel takes the common part
            return [head + np.hstack([rgb - w, w]).tobytes()]
        step = DNRGB_PER_PACKET * 3
        return [head + (i // 3).to_bytes(2, "big") + frame[i:i + step] for i in range(0, len(frame), step)]

    def release_packets(self) -> list[bytes]:
        return [bytes((self.proto, 0)) + (b"\x00\x00" if self.mode == "dnrgb" else b"")]
