"""`beatbus consume trigger` posts the error generator's contract, once per trigger, on the beat; the
API's rhythm mode runs for its duration and cleans up after itself."""
from __future__ import annotations

import json
import statistics

import pytest

from .deployment import CLICK_BPM, RHYTHM_MODE_S, http_json

pytestmark = pytest.mark.e2e

WINDOW_S = 10.0


def test_triggers_reach_the_error_generator_on_the_beat(stack):
    start = stack.rhythm_mode_at + RHYTHM_MODE_S + 1.0       # the trigger consumer alone from here
    stack.wait_steady(start - stack.steady_at + WINDOW_S)
    got = [t for t in stack.error_generator.since(start) if t.arrived < start + WINDOW_S]
    assert not stack.error_generator.bad_requests, stack.error_generator.bad_requests
    # the sparsest pattern (intro: the downbeat of every other bar) fires once in 8 beats
    assert len(got) >= WINDOW_S / 60 * CLICK_BPM / 8, f"{len(got)} triggers in {WINDOW_S} s"
    keys = [t.idempotency_key for t in got]
    assert all(keys) and len(set(keys)) == len(keys), "a trigger without an Idempotency-Key, or one sent twice"
    for t in got:
        body = t.body
        assert body["trigger"] == "rhythm" and body["error_type"] and body["section"], body
        assert isinstance(body["beat"], int) and abs(body["tempo"] - CLICK_BPM) < 3, body
    # due on a beat and never stale: sent within max_age (0.5 s) of its beat, plus at most the 0.5 s POST timeout
    beats = [b["system_time"] for b in stack.beats()]
    delays = [min((t.arrived - b for b in beats if b <= t.arrived + 0.1), default=99.0) for t in got]
    print(f"{len(got)} triggers in {WINDOW_S:.0f} s, {statistics.median(delays) * 1000:.0f} ms after their beat "
          f"(median), {max(delays) * 1000:.0f} ms at most")
    assert statistics.median(delays) < 0.2 and max(delays) < 1.0, [round(d, 3) for d in delays]


def test_rhythm_mode_ends_by_itself_and_leaves_nothing_behind(stack):
    """Item 5: rhythm mode left its consumer group on the beat stream, lagging for ever (an alert)."""
    status, body = stack.rhythm_mode
    assert status == 200, body
    stack.wait_steady(stack.rhythm_mode_at - stack.steady_at + RHYTHM_MODE_S + 2)
    status, body = http_json("GET", f"{stack.api_url}/api/rhythm-mode")
    assert status == 200 and json.loads(body)["active"] is False, body
    assert stack.beat_groups() == stack.groups_before_rhythm_mode
