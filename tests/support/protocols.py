"""LED wire formats parsed from ../shared/docs/led-protocols.md alone.

Written from the document, not from consumers/led (which this suite checks), so an encoder and
its test cannot share a misreading. Every parser raises ValueError naming what is wrong.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["DdpPacket", "parse_ddp", "ddp_frames", "ArtDmx", "parse_artdmx", "OpcMessage", "parse_opc",
           "WledPacket", "parse_wled"]


# -- DDP (UDP 4048): 10-byte header ------------------------------------------------------------
DDP_VERSION_1 = 0x40
DDP_FLAG_TIMECODE, DDP_FLAG_STORAGE, DDP_FLAG_REPLY, DDP_FLAG_QUERY, DDP_FLAG_PUSH = 0x10, 0x08, 0x04, 0x02, 0x01
DDP_MAX_DATA = 1440


@dataclass(frozen=True)
class DdpPacket:
    flags: int
    sequence: int
    data_type: int
    destination: int
    offset: int
    data: bytes

    @property
    def push(self) -> bool:
        return bool(self.flags & DDP_FLAG_PUSH)

    @property
    def version(self) -> int:
        return self.flags & 0xC0


def parse_ddp(pkt: bytes) -> DdpPacket:
    if len(pkt) < 10:
        raise ValueError(f"DDP packet of {len(pkt)} bytes is shorter than its 10-byte header")
    flags, seq, data_type, dest, offset, length = struct.unpack(">BBBBIH", pkt[:10])
    header = 14 if flags & DDP_FLAG_TIMECODE else 10
    data = pkt[header:]
    if len(data) != length:
        raise ValueError(f"DDP length field says {length} data bytes, the packet carries {len(data)}")
    if length > DDP_MAX_DATA:
        raise ValueError(f"DDP packet carries {length} data bytes (at most {DDP_MAX_DATA})")
    return DdpPacket(flags, seq & 0x0F, data_type, dest, offset, data)


def ddp_frames(packets: list[DdpPacket]) -> list[bytes]:
    """Whole frames: data placed at each packet's offset, a frame ends at a packet with push set."""
    frames, buf = [], bytearray()
    for p in packets:
        end = p.offset + len(p.data)
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[p.offset:end] = p.data
        if p.push:
            frames.append(bytes(buf))
            buf = bytearray()
    return frames


# -- Art-Net ArtDmx (UDP 6454): 18-byte header ---------------------------------------------------
ARTNET_ID = b"Art-Net\x00"
ARTNET_OP_DMX = 0x5000
ARTNET_PROTOCOL = 14


@dataclass(frozen=True)
class ArtDmx:
    sequence: int
    physical: int
    sub_uni: int
    net: int
    data: bytes

    @property
    def universe(self) -> int:
        """The 15-bit Port-Address: Net, then SubUni (subnet << 4 | universe)."""
        return self.net << 8 | self.sub_uni


def parse_artdmx(pkt: bytes) -> ArtDmx:
    if len(pkt) < 18:
        raise ValueError(f"ArtDmx packet of {len(pkt)} bytes is shorter than its 18-byte header")
    if pkt[:8] != ARTNET_ID:
        raise ValueError(f"Art-Net id is {pkt[:8]!r}, not {ARTNET_ID!r}")
    opcode = struct.unpack("<H", pkt[8:10])[0]              # the one little-endian field
    if opcode != ARTNET_OP_DMX:
        raise ValueError(f"Art-Net OpCode 0x{opcode:04x} is not ArtDmx (0x5000)")
    version = struct.unpack(">H", pkt[10:12])[0]
    if version != ARTNET_PROTOCOL:
        raise ValueError(f"Art-Net protocol version {version}, expected {ARTNET_PROTOCOL}")
    seq, physical, sub_uni, net = pkt[12], pkt[13], pkt[14], pkt[15]
    length = struct.unpack(">H", pkt[16:18])[0]
    if length % 2 or not 2 <= length <= 512:
        raise ValueError(f"ArtDmx length {length} must be even and 2-512")
    data = pkt[18:]
    if len(data) != length:
        raise ValueError(f"ArtDmx length field says {length}, the packet carries {len(data)}")
    return ArtDmx(seq, physical, sub_uni, net, data)


# -- Open Pixel Control (TCP 7890) ---------------------------------------------------------------
OPC_SET_PIXELS = 0


@dataclass(frozen=True)
class OpcMessage:
    channel: int
    command: int
    data: bytes


def parse_opc(stream: bytes) -> tuple[list[OpcMessage], bytes]:
    """The whole messages at the start of a TCP byte stream, and the incomplete rest."""
    msgs, pos = [], 0
    while len(stream) - pos >= 4:
        channel, command, length = struct.unpack(">BBH", stream[pos:pos + 4])
        if len(stream) - pos - 4 < length:
            break
        msgs.append(OpcMessage(channel, command, stream[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return msgs, stream[pos:]


# -- WLED UDP realtime (UDP 21324) ---------------------------------------------------------------
WLED_WARLS, WLED_DRGB, WLED_DRGBW, WLED_DNRGB = 1, 2, 3, 4
WLED_MAX_LEDS = {WLED_WARLS: 255, WLED_DRGB: 490, WLED_DRGBW: 367, WLED_DNRGB: 489}


@dataclass(frozen=True)
class WledPacket:
    protocol: int
    timeout_s: int
    pixels: dict[int, tuple[int, ...]]         # LED index -> (R, G, B) or (R, G, B, W)


def parse_wled(pkt: bytes) -> WledPacket:
    if len(pkt) < 2:
        raise ValueError(f"WLED packet of {len(pkt)} bytes has no header")
    proto, timeout, body = pkt[0], pkt[1], pkt[2:]
    if proto == WLED_WARLS:
        width, first, items = 4, 0, body
    elif proto in (WLED_DRGB, WLED_DRGBW):
        width, first, items = (3 if proto == WLED_DRGB else 4), 0, body
    elif proto == WLED_DNRGB:
        if len(body) < 2:
            raise ValueError("WLED DNRGB packet has no start index")
        width, first, items = 3, struct.unpack(">H", body[:2])[0], body[2:]
    else:
        raise ValueError(f"WLED realtime protocol {proto} is not WARLS, DRGB, DRGBW or DNRGB")
    if len(items) % width:
        raise ValueError(f"WLED protocol {proto}: {len(items)} data bytes are not whole {width}-byte items")
    count = len(items) // width
    if count > WLED_MAX_LEDS[proto]:
        raise ValueError(f"WLED protocol {proto} carries {count} LEDs (at most {WLED_MAX_LEDS[proto]})")
    if proto == WLED_WARLS:
        pixels = {items[i]: tuple(items[i + 1:i + 4]) for i in range(0, len(items), 4)}
    else:
        pixels = {first + i // width: tuple(items[i:i + width]) for i in range(0, len(items), width)}
    return WledPacket(proto, timeout, pixels)
