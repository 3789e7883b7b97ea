"""Broker outages are logged as state changes: once down (reminded every minute), once back, per call."""
import logging

import pytest

from beatbus import bus


@pytest.fixture
def records(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(bus.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(bus, "_broker_outages", {})
    got: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = got.append
    logger = logging.getLogger("beatbus.bus")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield got, clock
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def said(got):
    return [(r.getMessage().split(";")[0], r.during) for r in got]


def test_an_outage_is_said_once_reminded_each_minute_and_said_back_once(records):
    got, clock = records
    err = ConnectionError("refused")
    for _ in range(100):                            # a daemon retrying many times a second
        bus.note_reconnect(err, "read audio")
    assert said(got) == [("broker unavailable", "read audio")]
    clock[0] += 61
    bus.note_reconnect(err, "read audio")
    assert len(got) == 2                            # the reminder
    bus.note_back("read audio")
    bus.note_back("read audio")
    assert said(got)[2:] == [("broker back", "read audio")]
    bus.note_reconnect(err, "read audio")           # a new outage is said at once
    assert len(got) == 4


def test_outages_are_per_call_and_a_call_that_never_failed_is_not_said_back(records):
    got, _ = records
    bus.note_back("publish beats")
    assert got == []
    bus.note_reconnect(ConnectionError("slot 42 down"), "publish beats")
    bus.note_back("read audio")                     # another call (another slot) answering
    assert said(got) == [("broker unavailable", "publish beats")]
    bus.note_back("publish beats")
    assert said(got)[1:] == [("broker back", "publish beats")]


def test_many_readers_waiting_on_one_node_say_it_once_and_back_when_the_last_reads(records):
    got, _ = records
    waiters, err = bus._Waiters(), ConnectionError("refused")
    node = "read sources on 127.0.0.1:7001"
    for who in range(67):                           # a master's 67 sources, a reader thread each
        waiters.failed(err, node, who)
    assert said(got) == [("broker unavailable", node)]
    for who in range(66):
        waiters.ok(who)
    waiters.ok("never failed")
    assert len(got) == 1                            # one source still waits
    waiters.ok(66)
    assert said(got)[1:] == [("broker back", node)]


def test_a_reader_whose_slot_moved_leaves_no_outage_behind(records):
    got, _ = records
    waiters, err = bus._Waiters(), ConnectionError("refused")
    old, new = "read sources on 127.0.0.1:7001", "read sources on 127.0.0.1:7004"
    waiters.failed(err, old, "a")
    waiters.failed(err, new, "a")                   # the slot map moved it (a failover)
    waiters.ok("a")
    assert said(got) == [("broker unavailable", old), ("broker unavailable", new), ("broker back", new)]
    waiters.failed(err, old, "b")                   # the old node's next outage is said, not taken as still on
    assert said(got)[3:] == [("broker unavailable", old)]
    waiters.gone("b")                               # a reader that closed waits on nothing
    assert "b" not in waiters.what_of
