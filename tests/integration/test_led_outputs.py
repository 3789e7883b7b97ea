"""LED protocols, byte by byte: every packet parsed back from a real loopback socket."""
import asyncio
import base64
import io
import os
import socket
import struct
import time
import uuid

import numpy as np
import orjson

from beatbus.console import console
from beatbus.consumers.led.config import parse_output_url
from beatbus.consumers.led.outputs import FrameHub, create_output
from beatbus.consumers.led.outputs.terminal import TerminalOutput, render_line
from beatbus.consumers.led.outputs.web import HUB, ws_accept

from support.led import TcpCapture, UdpCapture


def _frame(pixels: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, pixels * 3, dtype=np.uint8).tobytes()


def _output(url: str, pixels: int):
    spec, _ = parse_output_url(url)
    out = create_output(spec, pixels)
    out.open()
    return out


def test_ddp_multi_packet_frames_push_on_last_and_sequence():
    with UdpCapture() as cap:
        out = _output(f"ddp://127.0.0.1:{cap.port}", 1000)            # 3000 bytes -> 1440 + 1440 + 120
        frames = [_frame(1000, i) for i in range(16)]
        for f in frames:
            out.send(f)
        packets = cap.wait_for(48)
        out.close()
    assert len(packets) == 48
    for k, frame in enumerate(frames):
        group = packets[3 * k:3 * k + 3]
        data = b""
        for j, pkt in enumerate(group):
            flags, seq, dtype, dest, offset, length = struct.unpack(">BBBBIH", pkt[:10])
            assert flags & 0xC0 == 0x40                                  # version 1
            assert flags & 0x01 == (1 if j == 2 else 0)                  # push only on the last packet
            assert flags & 0x3E == 0                                     # no timecode/storage/reply/query
            assert seq == k % 15 + 1                                     # 1..15, one per frame, 0 never used
            assert dtype == 0x0B and dest == 1
            assert offset == 1440 * j and length == len(pkt) - 10 == (1440 if j < 2 else 120)
            data += pkt[10:]
        assert data == frame


def test_ddp_single_packet_frame_and_destination_param():
    with UdpCapture() as cap:
        out = _output(f"ddp://127.0.0.1:{cap.port}?dest=255", 480)      # exactly 1440 bytes: one packet
        out.send(_frame(480))
        (pkt,) = cap.wait_for(1)
        out.close()
    assert pkt[0] == 0x41 and pkt[3] == 255 and struct.unpack(">IH", pkt[4:10]) == (0, 1440)


def _parse_e131(pkt: bytes) -> dict:
    n = len(pkt)
    assert struct.unpack(">HH", pkt[0:4]) == (0x0010, 0x0000)
    assert pkt[4:16] == b"ASC-E1.17\x00\x00\x00"
    assert struct.unpack(">H", pkt[16:18])[0] == 0x7000 | (n - 16)
    assert struct.unpack(">I", pkt[18:22])[0] == 0x00000004
    assert struct.unpack(">H", pkt[38:40])[0] == 0x7000 | (n - 38)
    assert struct.unpack(">I", pkt[40:44])[0] == 0x00000002
    assert struct.unpack(">H", pkt[115:117])[0] == 0x7000 | (n - 115)
    assert pkt[117] == 0x02 and pkt[118] == 0xA1
    assert struct.unpack(">HH", pkt[119:123]) == (0x0000, 0x0001)
    count = struct.unpack(">H", pkt[123:125])[0]
    assert pkt[125] == 0x00 and count == n - 125                       # slots + start code
    return {"cid": pkt[22:38], "name": pkt[44:108], "priority": pkt[108],
            "sync": struct.unpack(">H", pkt[109:111])[0], "seq": pkt[111], "options": pkt[112],
            "universe": struct.unpack(">H", pkt[113:115])[0], "data": pkt[126:]}


def test_e131_splits_universes_at_170_pixels_field_by_field():
    with UdpCapture() as cap:
        out = _output(f"sacn://127.0.0.1:{cap.port}?universe=7&priority=150", 400)   # 170 + 170 + 60
        f1, f2 = _frame(400, 1), _frame(400, 2)
        out.send(f1)
        out.send(f2)
        packets = cap.wait_for(6)
        out.close()                                                     # 3 x stream-terminated per universe
        closing = cap.wait_for(6 + 9)[6:]
    parsed = [_parse_e131(p) for p in packets]
    assert [p["universe"] for p in parsed] == [7, 8, 9, 7, 8, 9]
    assert [len(p["data"]) for p in parsed] == [510, 510, 180] * 2
    assert b"".join(p["data"] for p in parsed[:3]) == f1 and b"".join(p["data"] for p in parsed[3:]) == f2
    assert [p["seq"] for p in parsed] == [1, 1, 1, 2, 2, 2]             # per-universe sequence
    assert len({p["cid"] for p in parsed}) == 1 and uuid.UUID(bytes=parsed[0]["cid"]).version == 5
    assert parsed[0]["name"] == b"beatbus".ljust(64, b"\x00")
    assert all(p["priority"] == 150 and p["sync"] == 0 and p["options"] == 0 for p in parsed)
    ends = [_parse_e131(p) for p in closing]
    assert len(ends) == 9 and all(e["options"] & 0x40 for e in ends)
    assert sorted(e["universe"] for e in ends) == [7, 7, 7, 8, 8, 8, 9, 9, 9]


def test_artnet_artdmx_header_port_address_and_even_length():
    with UdpCapture() as cap:
        out = _output(f"artnet://127.0.0.1:{cap.port}?universe=300", 171)   # 510 + 3 (padded to 4)
        frame = _frame(171)
        for _ in range(256):
            out.send(frame)
            time.sleep(0.0005)                 # loopback UDP drops bursts; pace like a render loop
        packets = cap.wait_for(512, timeout=5)
        out.close()
    assert len(packets) == 512
    first, second = packets[0], packets[1]
    for pkt, uni, data in ((first, 300, frame[:510]), (second, 301, frame[510:] + b"\x00")):
        assert pkt[0:8] == b"Art-Net\x00"
        assert pkt[8:10] == b"\x00\x50"                    # OpCode 0x5000, little-endian
        assert pkt[10:12] == b"\x00\x0e"                   # protocol version 14
        assert pkt[12] == 1 and pkt[13] == 0               # sequence starts at 1; physical 0
        assert pkt[14] == uni & 0xFF and pkt[15] == uni >> 8   # SubUni, Net (300 = net 1, subuni 44)
        assert struct.unpack(">H", pkt[16:18])[0] == len(data) and pkt[18:] == data
    seqs = [p[12] for p in packets[0::2]]
    assert seqs[:255] == list(range(1, 256)) and seqs[255] == 1   # wraps past 0


def test_opc_frames_over_tcp():
    with TcpCapture() as srv:
        out = _output(f"opc://127.0.0.1:{srv.port}?channel=3", 50)
        frames = [_frame(50, i) for i in range(3)]
        for f in frames:
            out.send(f)
        data = srv.wait_for(3 * 154)
        out.close()
    for k in range(3):
        msg = data[k * 154:(k + 1) * 154]
        assert msg[0] == 3 and msg[1] == 0 and struct.unpack(">H", msg[2:4])[0] == 150
        assert msg[4:] == frames[k]


def test_wled_drgb_dnrgb_warls_drgbw_and_release():
    with UdpCapture() as cap:
        drgb = _output(f"wled://127.0.0.1:{cap.port}?mode=drgb&timeout=5", 10)
        f10 = _frame(10)
        drgb.send(f10)
        dnrgb = _output(f"wled://127.0.0.1:{cap.port}?mode=dnrgb", 1000)
        f1000 = _frame(1000, 3)
        dnrgb.send(f1000)
        warls = _output(f"wled://127.0.0.1:{cap.port}?mode=warls", 3)
        warls.send(bytes([10, 20, 30, 40, 50, 60, 70, 80, 90]))
        drgbw = _output(f"wled://127.0.0.1:{cap.port}?mode=drgbw", 2)
        drgbw.send(bytes([200, 100, 50, 10, 10, 10]))
        drgb.close()
        dnrgb.close()
        packets = cap.wait_for(8)
    assert packets[0] == bytes([2, 5]) + f10
    starts, data = [], b""
    for pkt in packets[1:4]:
        assert pkt[0] == 4 and pkt[1] == 2
        starts.append(struct.unpack(">H", pkt[2:4])[0])
        assert len(pkt) - 4 <= 489 * 3
        data += pkt[4:]
    assert starts == [0, 489, 978] and data == f1000
    assert packets[4] == bytes([1, 2, 0, 10, 20, 30, 1, 40, 50, 60, 2, 70, 80, 90])
    assert packets[5] == bytes([3, 2, 150, 50, 0, 50, 0, 0, 0, 10])     # W takes the common part
    assert packets[6] == bytes([2, 0]) and packets[7] == bytes([4, 0, 0, 0])   # timeout 0 releases


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_preview_draws_truecolor_blocks_on_a_status_line_and_nothing_into_a_pipe():
    spec, _ = parse_output_url("terminal://?width=2")
    frame = bytes([255, 0, 0, 255, 0, 0, 0, 0, 255, 0, 0, 255])
    tty = _Tty()
    out = TerminalOutput(spec, 4, stream=tty)
    out.send(frame)
    assert tty.getvalue() == "\r\x1b[K\x1b[38;2;255;0;0m█\x1b[38;2;0;0;255m█\x1b[0m"
    console(tty).line("beat")                  # a printed line goes above the strip, which is redrawn
    assert tty.getvalue().endswith("\r\x1b[Kbeat\n\x1b[38;2;255;0;0m█\x1b[38;2;0;0;255m█\x1b[0m")
    assert render_line(bytes([0, 0, 0, 200, 200, 200]), 1) == "\x1b[38;2;100;100;100m█\x1b[0m"
    pipe = io.StringIO()
    out = TerminalOutput(spec, 4, stream=pipe)
    out.open()
    out.send(frame)
    out.close()
    assert pipe.getvalue() == ""


def _ws_client(port: int) -> socket.socket:
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    assert f"Sec-WebSocket-Accept: {ws_accept(key)}".encode() in head
    return s


def _ws_read(s: socket.socket) -> tuple[int, bytes]:
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            assert chunk, "server closed"
            buf += chunk
        return buf

    b0, b1 = exact(2)
    assert b0 & 0x80 and not b1 & 0x80                   # final, unmasked (server frames)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    return b0 & 0x0F, exact(n)


def test_websocket_preview_streams_latest_frames():
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="    # RFC 6455 example
    spec, _ = parse_output_url("ws://127.0.0.1:0")
    out = create_output(spec, 100, name="ws-preview-test")     # as the LED consumer builds it from the URL
    out.open()
    try:
        client = _ws_client(out.server.port)
        op, hello = _ws_read(client)
        assert op == 0x1 and orjson.loads(hello) == {"type": "hello", "device": "ws-preview-test",
                                                     "format": "rgb8", "pixels": 100, "fps": 30.0}
        frame = _frame(100)
        out.send(frame)
        op, data = _ws_read(client)
        assert op == 0x2 and data == frame                  # 300 bytes: 16-bit length form
        mask = b"\x01\x02\x03\x04"
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(struct.pack(">H", 1000)))
        client.sendall(bytes([0x88, 0x80 | 2]) + mask + body)   # masked close from the client
        op, data = _ws_read(client)
        assert op == 0x8 and data == struct.pack(">H", 1000)
        client.close()
        plain = socket.create_connection(("127.0.0.1", out.server.port), timeout=3)
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert plain.recv(100).startswith(b"HTTP/1.1 426")
        plain.close()
    finally:
        out.close()
        HUB.meta.pop("ws-preview-test", None)              # the process-wide registry outlives the output


def test_frame_hub_async_feed_for_the_api():
    hub = FrameHub()

    async def consume():
        it = hub.frames("d", max_fps=200).__aiter__()
        hub.publish("d", b"\x01\x02\x03")
        first = await asyncio.wait_for(it.__anext__(), 1)
        hub.publish("d", b"\x04\x05\x06")
        hub.publish("d", b"\x07\x08\x09")                    # only the newest is delivered
        second = await asyncio.wait_for(it.__anext__(), 1)
        return first, second

    assert asyncio.run(consume()) == (b"\x01\x02\x03", b"\x07\x08\x09")
    assert hub.wait("d", 2, timeout=0.01) == (3, b"\x07\x08\x09") and hub.wait("d", 3, timeout=0.01) is None
