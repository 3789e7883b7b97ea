"""Every daemon starts, stays up, and logs like a daemon: state changes once, never per beat or packet."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

# A healthy minute: a start line or three, "metrics served", a source adopted, an output that is
# offline said once. A line per beat (2/s), per trigger or per LED packet (60/s) blows through it.
MAX_LINES = 25


def test_every_daemon_is_ready_and_still_running(stack):
    stack.wait_steady(5)
    problems = [f"{d.describe()}: {'never sent READY=1' if d.ready_at is None else 'died'}"
                for d in stack.daemons.values() if d.ready_at is None or not d.alive()]
    assert not problems, "\n".join(problems)


def test_no_daemon_logs_a_traceback_or_floods(stack):
    stack.wait_steady(20)
    problems = []
    for d in stack.daemons.values():
        lines = d.stderr().splitlines()
        if any("Traceback" in ln for ln in lines):
            problems.append(f"{d.name}: a traceback in its log")
        if len(lines) > MAX_LINES:
            problems.append(f"{d.name}: {len(lines)} log lines in a healthy run (> {MAX_LINES}); "
                            f"most frequent: {_most_frequent(lines)}")
    assert not problems, "\n".join(problems)


def test_an_offline_led_controller_is_said_once(stack):
    """Item 3: an output with nothing listening is reported when it goes down, not on every frame."""
    stack.wait_steady(20)
    lines = [ln for ln in stack.daemons["led"].stderr().splitlines() if "offline" in ln]
    assert lines, "the offline output was never reported"
    assert len(lines) <= 3, f"{len(lines)} lines about the offline output; the first:\n" + "\n".join(lines[:5])


def _most_frequent(lines: list[str]) -> str:
    """The commonest message, without its leading timestamp."""
    counts: dict[str, int] = {}
    for ln in lines:
        msg = ln.split(" ", 1)[-1][:100]
        counts[msg] = counts.get(msg, 0) + 1
    msg, n = max(counts.items(), key=lambda kv: kv[1])
    return f"{n}x {msg!r}"
