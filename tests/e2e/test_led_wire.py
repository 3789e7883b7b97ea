"""Every LED output of one `beatbus consume led`, received by parsers and receivers we did not write.

E1.31 through the `sacn` package's receiver; DDP, Art-Net, OPC and WLED through tests/e2e/protocols.py
(written from ../shared/docs/led-protocols.md). Each device gets whole frames at its frame rate, and
the frames flash on the click's beats (effect beat_flash: the whole strip lights on a beat and fades).
"""
from __future__ import annotations

import statistics

import pytest

from .deployment import ARTNET_UNIVERSE, CLICK_BPM, DDP_PIXELS, PIXELS, SACN_UNIVERSE
from support.protocols import WLED_DRGB, ddp_frames, parse_artdmx, parse_ddp, parse_wled

pytestmark = pytest.mark.e2e

WARMUP_S, WINDOW_S = 3.0, 8.0
MIN_FPS = 30            # the default is 60 on every output; two shared cores may skip some
BEAT_S = 60.0 / CLICK_BPM


def _window(stack, capture) -> tuple[float, list]:
    stack.wait_steady(WARMUP_S + WINDOW_S)
    start = stack.steady_at + WARMUP_S
    return start, [p for p in capture.since(start) if p[0] < start + WINDOW_S]


def _fps(times: list[float]) -> float:
    return len(times) / WINDOW_S


def _flash_onsets(times: list[float], levels: list[float]) -> list[float]:
    """Times where the strip lights up: dark (a flash fades within half a beat) to lit, weak beats too."""
    if not levels:
        return []
    lit = 0.15 * max(levels)
    return [t for t, a, b in zip(times[1:], levels, levels[1:]) if a <= lit < b]


def _assert_flashes_on_beats(times: list[float], levels: list[float], beats: list[dict], name: str) -> None:
    onsets = _flash_onsets(times, levels)
    assert len(onsets) >= WINDOW_S / BEAT_S * 0.8, f"{name}: {len(onsets)} flashes in {WINDOW_S} s at {CLICK_BPM} BPM"
    gap = statistics.median(b - a for a, b in zip(onsets, onsets[1:]))
    assert abs(gap - BEAT_S) < 0.05, f"{name}: flashes {gap:.3f} s apart, beats {BEAT_S:.3f} s"
    beat_times = [b["system_time"] for b in beats]
    # flashes are scheduled on the predicted beat: light within the 45 ms a viewer tolerates (ITU-R BT.1359)
    offsets = [min((t - bt for bt in beat_times), key=abs) for t in onsets]
    late = statistics.median(offsets)
    print(f"{name}: {len(times) / WINDOW_S:.0f} frames/s, flashes {gap * 1000:.0f} ms apart, "
          f"{late * 1000:+.0f} ms from the beat (median)")
    assert -0.030 < late < 0.045, f"{name}: a flash arrives {late * 1000:+.0f} ms from its beat (median)"


def _uniform_rgb(data: bytes, pixels: int) -> bool:
    """beat_flash lights the whole strip in one colour: every pixel equals the first."""
    return data[:3] * pixels == data[:3 * pixels]


def test_ddp_frames_are_whole_at_frame_rate_and_flash_on_beats(stack):
    start, packets = _window(stack, stack.ddp)
    parsed = [(t, parse_ddp(p)) for t, p in packets]
    assert parsed, "no DDP packet arrived"
    for _t, p in parsed:
        assert p.version == 0x40, f"DDP version bits 0x{p.version:02x}"
        assert p.data_type in (0x0B, 0x01) and p.destination == 1, (p.data_type, p.destination)
    # a 1500-byte frame is two packets: offsets 0 and 1440, push only on the last
    assert {p.offset for _t, p in parsed} == {0, 1440}
    assert all(p.push == (p.offset == 1440) for _t, p in parsed)
    first_push = next(i for i, (_t, p) in enumerate(parsed) if p.push)
    frames = ddp_frames([p for _t, p in parsed[first_push + 1:]])
    times = [t for t, p in parsed[first_push + 1:] if p.push]
    assert frames and all(len(f) == DDP_PIXELS * 3 for f in frames), {len(f) for f in frames}
    assert all(_uniform_rgb(f, DDP_PIXELS) for f in frames)
    assert _fps(times) >= MIN_FPS, f"{_fps(times):.1f} DDP frames/s"
    _assert_flashes_on_beats(times, [sum(f[:3]) for f in frames], stack.beats(), "DDP")


def test_sacn_reaches_the_sacn_package_receiver_in_two_universes(stack):
    """Item 1: an sACN output sent nothing (its render thread died on the first frame)."""
    start, packets = _window(stack, stack.sacn)
    by_universe = {u: [(t, p) for t, p in packets if p.universe == u] for u in (SACN_UNIVERSE, SACN_UNIVERSE + 1)}
    assert all(by_universe.values()), {u: len(v) for u, v in by_universe.items()}
    assert set(stack.sacn.available) >= {SACN_UNIVERSE, SACN_UNIVERSE + 1}
    for u, got in by_universe.items():
        pixels = 170 if u == SACN_UNIVERSE else PIXELS - 170      # 170 RGB pixels fill a universe
        for _t, p in got:
            data = bytes(p.dmxData)
            assert p.priority == 100 and p.sourceName, (p.priority, p.sourceName)
            assert _uniform_rgb(data, pixels) and not any(data[3 * pixels:]), f"universe {u}: {data[:12]!r}..."
    first = by_universe[SACN_UNIVERSE]
    # the receiver reports changes only; a fading flash changes every frame
    assert _fps([t for t, _p in first]) >= MIN_FPS / 2, f"{len(first)} sACN changes in {WINDOW_S} s"
    _assert_flashes_on_beats([t for t, _p in first], [sum(p.dmxData[:3]) for _t, p in first], stack.beats(),
                             "sACN")


def test_artnet_frames_span_two_universes(stack):
    start, packets = _window(stack, stack.artnet)
    parsed = [(t, parse_artdmx(p)) for t, p in packets]
    assert parsed, "no Art-Net packet arrived"
    universes = sorted({p.universe for _t, p in parsed})
    assert universes == [ARTNET_UNIVERSE, ARTNET_UNIVERSE + 1], universes
    lengths = {u: {len(p.data) for _t, p in parsed if p.universe == u} for u in universes}
    # a universe holds whole pixels; together they hold the strip
    assert all(len(v) == 1 and next(iter(v)) % 3 == 0 for v in lengths.values()), lengths
    assert sum(next(iter(v)) for v in lengths.values()) == PIXELS * 3, lengths
    first = [(t, p) for t, p in parsed if p.universe == ARTNET_UNIVERSE]
    assert all(_uniform_rgb(p.data, len(p.data) // 3) for _t, p in first)
    assert _fps([t for t, _p in first]) >= MIN_FPS
    _assert_flashes_on_beats([t for t, _p in first], [sum(p.data[:3]) for _t, p in first], stack.beats(), "Art-Net")


def test_opc_messages_set_every_pixel(stack):
    start, messages = _window(stack, stack.opc)
    assert stack.opc.connections >= 1 and messages, "no OPC message arrived"
    assert all(m.command == 0 and len(m.data) == PIXELS * 3 for _t, m in messages), \
        {(m.command, len(m.data)) for _t, m in messages}
    assert all(_uniform_rgb(m.data, PIXELS) for _t, m in messages)
    assert _fps([t for t, _m in messages]) >= MIN_FPS
    _assert_flashes_on_beats([t for t, _m in messages], [sum(m.data[:3]) for _t, m in messages], stack.beats(),
                             "OPC")


def test_wled_drgb_packets_hold_the_strip(stack):
    start, packets = _window(stack, stack.wled)
    parsed = [(t, parse_wled(p)) for t, p in packets]
    assert parsed, "no WLED packet arrived"
    for _t, p in parsed:
        assert p.protocol == WLED_DRGB and p.timeout_s >= 1, (p.protocol, p.timeout_s)
        assert sorted(p.pixels) == list(range(PIXELS))
        assert len(set(p.pixels.values())) == 1
    assert _fps([t for t, _p in parsed]) >= MIN_FPS
    _assert_flashes_on_beats([t for t, _p in parsed], [sum(p.pixels[0]) for _t, p in parsed], stack.beats(), "WLED")
