"""``beatbus consume terminal --sources A B`` as a user runs it: whose beat each line is, and each
source's own count in its closing line."""
from __future__ import annotations

import time

from beatbus import keys
from beatbus.schemas import StreamEnd

from support.events import beat_event
from support.procs import spawn, stop


def _reading(bus) -> bool:
    return any(c.get("cmd") == "xread" for c in bus.redis.client_list())


def test_several_sources_are_told_apart_and_counted_apart(broker, bus):
    proc = spawn("consume", "terminal", "--sources", "alpha", "be", "--exit-on-end",
                 env={"REDIS_URL": broker.url, "NO_COLOR": "1"})
    try:
        deadline = time.monotonic() + 30
        while not _reading(bus) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert _reading(bus), "the terminal consumer never started reading"
        for source, n in (("alpha", 3), ("be", 2)):
            stream = keys.stream(source, keys.StreamKind.BEATS)
            for i in range(n):
                bus.publish(stream, beat_event(i, source=source), maxlen=1000)
            bus.publish(stream, StreamEnd(source=source, timestamp=2.0), maxlen=1000)
        proc.wait(timeout=10)           # both streams ended: it exits by itself
    finally:
        rc, out, err = stop(proc)
    assert rc == 0, err
    lines = out.splitlines()
    beats = [ln for ln in lines if "BPM" in ln]
    assert [ln.split()[0] for ln in beats] == ["alpha"] * 3 + ["be"] * 2, out
    assert any(ln.startswith("-- alpha: end of stream") and ln.endswith(", 3 beats") for ln in lines), out
    assert any(ln.startswith("-- be: end of stream") and ln.endswith(", 2 beats") for ln in lines), out


def test_a_flood_of_malformed_entries_is_counted_whole_and_logged_once(broker, bus):
    """A bad writer's 50 entries: every one dead-lettered, one log line (state changes, not packets)."""
    proc = spawn("consume", "terminal", "--sources", "mal", "--exit-on-end", env={"REDIS_URL": broker.url})
    try:
        deadline = time.monotonic() + 30
        while not _reading(bus) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        stream = keys.stream("mal", keys.StreamKind.BEATS)
        for i in range(50):
            bus.redis.xadd(stream, {"data": f"garbage{i}"})
        deadline = time.monotonic() + 20
        while bus.redis.xlen(keys.dead_letter(stream)) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bus.redis.xlen(keys.dead_letter(stream)) == 50
        bus.publish(stream, StreamEnd(source="mal", timestamp=1.0), maxlen=1000)
        proc.wait(timeout=10)
    finally:
        rc, _out, err = stop(proc)
    assert rc == 0, err
    assert sum("malformed entry dead-lettered" in line for line in err.splitlines()) == 1, err
