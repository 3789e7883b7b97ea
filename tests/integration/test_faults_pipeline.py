"""Faults injected into a running pipeline of real daemons; each test states what must not be lost.

Loopback only: the broker is the embedded one or a ``redis-server`` the test starts, the error
generator is the reference receiver (its test double), every daemon a ``beatbus`` subprocess.
The processor-takeover fault (kill -9 mid-stream) is in tests/integration/test_ops_scaleout.py; a worker
killed twice mid-job and a full disk for generation output are in tests/integration/test_generate_worker.py.
"""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from beatbus import keys
from beatbus.bus import Bus
from beatbus.consumers.generate.jobqueue import GenerationQueue
from beatbus.consumers.trigger import idempotency_key
from beatbus.deploy.rq_metrics import RqCollector
from beatbus.lab.doubles.error_generator import ReferenceReceiver
from beatbus.runtime import STOP_S
from beatbus.schemas import AudioFrame, from_fields

from support.events import beat_event
from support.generate import gen_config
from support.ops import Daemons, beats, metrics, wait_until
from support.procs import free_port


@pytest.fixture
def daemons(broker, tmp_path):
    d = Daemons(broker.url, tmp_path)
    yield d
    d.stop_all()


def pending(bus, stream: str, group: str = "trigger") -> int:
    return int(bus.redis.xpending(stream, group)["pending"]) if bus.redis.exists(stream) else 0


def test_killed_trigger_consumer_in_flight_entries_are_redelivered_without_duplicate_posts(bus, daemons):
    """Must not happen: a trigger POSTed twice, or an entry left pending. Must not be lost: any
    trigger that was not in flight at the crash.

    Consumer A takes ten beats and is killed -9 while their POSTs are in flight (the receiver
    answers after 600 ms). B, started afterwards, claims A's pending entries (XAUTOCLAIM); their
    idempotency keys are claimed, so B acknowledges them without POSTing again (counted as
    ``duplicate``), then delivers ten new beats. A trigger A had claimed but not yet written to
    the socket when it died is lost, not duplicated: at most the ten in flight."""
    src = "fk"
    stream = keys.stream(src, "beats")
    with ReferenceReceiver() as rx:
        rx.set_fault(status=None, delay_ms=600)
        args = ("consume", "trigger", "--error-generator-url", rx.url, "--max-age", "30", "--timeout", "3",
                "--sources", src)
        a = daemons.start("trigger-a", *args)
        wait_until(lambda: bus.redis.exists(stream) and bus.redis.xinfo_groups(stream), 60, "A's group", daemons)
        first = [bus.publish(stream, beat_event(i, source=src), maxlen=1000) for i in range(10)]
        wait_until(lambda: pending(bus, stream) == 10, 20, "A to hold all ten", daemons)
        time.sleep(0.2)                                       # the POSTs are on the wire, answers pending
        a.send_signal(signal.SIGKILL)
        a.wait()
        b = daemons.start("trigger-b", *args, metrics=True)
        wait_until(lambda: pending(bus, stream) == 0, 60, "B to settle A's entries", daemons)
        second = [bus.publish(stream, beat_event(i, source=src), maxlen=1000) for i in range(10, 20)]
        wait_until(lambda: metrics(b.port).get("beatbus_triggers_total{outcome=delivered}") == 10
                   and pending(bus, stream) == 0, 30, "B's own ten", daemons)
        time.sleep(1.0)                                       # a duplicate would have arrived by now
        seen = [r["idempotency_key"] for r in rx.received()]
        m = metrics(b.port)
    assert len(seen) == len(set(seen))                                          # no trigger POSTed twice
    assert set(seen) >= {idempotency_key(src, i, 0) for i in second}            # B's own: all delivered
    lost = {idempotency_key(src, i, 0) for i in first} - set(seen)
    assert set(seen) - {idempotency_key(src, i, 0) for i in first + second} == set()
    assert all(r["status"] == 200 for r in rx.received())
    assert m["beatbus_triggers_total{outcome=duplicate}"] == 10          # redelivered, recognised, not re-sent
    assert pending(bus, stream) == 0
    print(f"\nin flight at kill -9: 10; reached the receiver anyway: {10 - len(lost)}; "
          f"lost (claimed, never written): {len(lost)}; duplicates POSTed: 0")


def test_broker_restart_mid_run_daemons_reconnect_and_outage_audio_is_kept(redis_server, tmp_path):
    """Must not be lost: audio captured during the outage (the producer buffers it) and the beats in it.

    Producer, processor and trigger consumer run as daemons on a redis-server that is killed
    and restarted empty on the same port. They reconnect without crashing; the frames from the
    outage reach the new broker contiguous with what followed, beats cover the outage's stream
    time, triggers resume. What the dead broker held is lost with it (no persistence), and what
    each daemon noticed is counted in its metrics."""
    d = Daemons(redis_server.url, tmp_path)
    try:
        with ReferenceReceiver() as rx:
            src = "rs"
            prod = d.start("producer", "produce", "click", "--bpm", "120", metrics=True, BEATBUS_SOURCE=src)
            proc = d.start("processor", "process", "--sources", src, metrics=True)
            trig = d.start("trigger", "consume", "trigger", "--error-generator-url", rx.url, "--max-age", "2",
                           "--sources", src, metrics=True)
            bus = Bus(redis_server.url)
            wait_until(lambda: rx.received(), 60, "the first trigger", d)
            time.sleep(1.0)
            down = time.time()
            redis_server.stop()
            time.sleep(2.0)
            redis_server.start()
            up = time.time()
            wait_until(lambda: any(r["arrived_at"] > up for r in rx.received()), 30, "triggers after the restart", d)
            wait_until(lambda: beats(bus, src, after=up + 1.0), 30, "beats after the restart", d)
            d.check()                                   # nobody crashed
            frames = [e for _, f in bus.redis.xrange(keys.stream(src, "audio"))
                      if isinstance(e := from_fields(f), AudioFrame)]
            new_beats = beats(bus, src)
            counted = {p.name: metrics(p.port) for p in (prod, proc, trig)}
            codes = {p.name: d.terminate(p) for p in (prod, proc, trig)}
    finally:
        d.stop_all()
    idx = np.array([f.sample_index for f in frames])
    assert np.all(np.diff(idx) == 441)                  # no hole in what the new broker holds
    first_wall = frames[0].wall_ns / 1e9
    assert first_wall < down + 0.5, first_wall - down   # it starts with audio captured before the outage ended
    t_down = (down - frames[0].wall_ns / 1e9) + frames[0].sample_index / 22050   # stream time of the outage
    covered = [b.timestamp for b in new_beats if t_down <= b.timestamp <= t_down + 2.0]
    assert len(covered) >= 3, (t_down, [round(b.timestamp, 2) for b in new_beats[:10]])   # 120 BPM: 4 in 2 s
    assert counted["producer"]["beatbus_frames_dropped_total{reason=broker_down}"] == 0   # exported, and none lost
    for name, m in counted.items():
        assert m["beatbus_broker_reconnects_total{}"] >= 1, name
    assert codes == {"producer": 0, "processor": 0, "trigger": 0}
    for p in (prod, proc, trig):
        log = (tmp_path / f"{p.name}.log").read_text()
        assert "Traceback" not in log, p.name
        # said once per outage of each call, not once per retry (tens of retries in 2 s)
        assert 1 <= log.count("broker unavailable") <= 4, f"{p.name}:\n{log[-3000:]}"
        # ... and the end of each outage once: every call that was noted down is said back
        assert 1 <= log.count("broker back") <= log.count("broker unavailable"), f"{p.name}:\n{log[-3000:]}"
    print(f"\noutage {up - down:.1f} s: producer buffered it (frames dropped "
          f"{counted['producer']['beatbus_frames_dropped_total{reason=broker_down}']:.0f}), "
          f"processor gaps {counted['processor'].get('beatbus_frames_dropped_total{reason=gap}', 0):.0f} frames, "
          f"reconnects " + ", ".join(f"{k} {v['beatbus_broker_reconnects_total{}']:.0f}" for k, v in counted.items()))


def test_error_generator_down_then_slow_leaves_the_pipeline_unaffected(bus, daemons):
    """Must not be lost: beats (every index once, in order, at the tempo) while the error generator
    is down and then slow; must not happen: trigger entries piling up. The circuit opens, triggers
    are dropped and counted, and once the receiver is healthy again they are delivered."""
    src = "eg"
    port = free_port()                                    # nothing listens here yet: the generator is down
    daemons.start("producer", "produce", "click", "--bpm", "120", BEATBUS_SOURCE=src)
    proc = daemons.start("processor", "process", "--sources", src, metrics=True)
    trig = daemons.start("trigger", "consume", "trigger", "--error-generator-url", f"http://127.0.0.1:{port}",
                         "--sources", src, metrics=True)
    stream = keys.stream(src, "beats")
    state = lambda: metrics(trig.port).get("beatbus_trigger_circuit_state{}")          # noqa: E731
    wait_until(lambda: state() == 2, 90, "the circuit to open", daemons)
    down_at = time.time()
    time.sleep(4.0)
    assert pending(bus, stream) <= 2                      # dropped and acknowledged, not piling up
    rx = ReferenceReceiver(port=port).start()             # back, but slower than the 0.5 s timeout
    try:
        rx.set_fault(status=None, delay_ms=1500)
        slow_at = time.time()
        time.sleep(5.0)
        assert pending(bus, stream) <= 4
        rx.set_fault(status=None, delay_ms=0)             # healthy again
        healed = time.time()
        wait_until(lambda: any(r["status"] == 200 and r["arrived_at"] > healed + 0.1 for r in rx.received()), 30,
                   "a trigger delivered after healing", daemons)
        wait_until(lambda: state() == 0, 10, "the circuit to close", daemons)
    finally:
        rx.stop()
    counts = metrics(trig.port)
    lag = metrics(proc.port).get("beatbus_bus_lag_seconds{kind=audio}")
    run = [b for b in beats(bus, src) if b.emitted_at > down_at - 2]
    indices = [b.beat for b in run]
    assert indices == list(range(indices[0], indices[0] + len(indices)))      # none lost, none repeated
    span = run[-1].timestamp - run[0].timestamp
    assert abs(len(run) - 1 - span * 2.0) <= 1, (len(run), span)             # 120 BPM all along
    assert all(abs(b.bpm - 120) < 3 for b in run)
    assert lag is not None and lag < 0.5
    assert counts["beatbus_triggers_total{outcome=circuit_open}"] > 0
    assert counts.get("beatbus_trigger_attempts_total{result=error}", 0) >= 5   # refused, then timed out
    print(f"\nbeats {len(run)} over {span:.1f} s of stream while the generator was down "
          f"{slow_at - down_at:.0f} s and slow {healed - slow_at:.0f} s; outcomes: "
          + ", ".join(f"{k.split('=')[1][:-1]} {v:.0f}" for k, v in counts.items()
                      if k.startswith("beatbus_triggers_total{")))


def test_worker_killed_mid_job_is_retried_by_another_worker_never_stuck(broker, bus, tmp_path):
    """Must not be lost: a queued job. A `beatbus worker` (no models needed for this job) is killed
    -9 mid-job; its heartbeat lapses (abandon_after 3 s), the job shows as abandoned to the
    exporter, and another worker's registry sweep re-queues it and runs it to the end."""
    d = Daemons(broker.url, tmp_path)
    env = {"BEATBUS_STATE_DIR": str(tmp_path / "state"), "BEATBUS_GENERATE_HEARTBEAT": "0.5",
           "BEATBUS_GENERATE_ABANDON_AFTER": "3", "BEATBUS_LOG_LEVEL": "warning"}
    q = Queue("beatbus-generate", connection=bus.redis, serializer=JSONSerializer)
    job = q.enqueue("time.sleep", 4, job_timeout=60, retry=Retry(max=1))
    collector = RqCollector(bus.redis, ["beatbus-generate"])
    jobs = lambda: {s.labels["state"]: s.value for f in collector.collect() for s in f.samples      # noqa: E731
                    if s.name == "beatbus_rq_jobs"}
    try:
        first = d.start("worker-1", "worker", "--preload", "--no-scheduler", **env)
        wait_until(lambda: job.get_status(refresh=True) == "started", 60, "the job to start", d)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = time.monotonic()
        wait_until(lambda: jobs()["abandoned"] == 1, 10, "the heartbeat to lapse", d)
        abandoned_after = time.monotonic() - killed
        d.start("worker-2", "worker", "--preload", "--no-scheduler", **env)
        wait_until(lambda: job.get_status(refresh=True) == "finished", 40, "the retried job to finish", d)
        done_after = time.monotonic() - killed
    finally:
        d.stop_all()
    job.refresh()
    assert job.retries_left == 0                        # it was retried, once
    after = jobs()
    assert after["started"] == 0 and after["abandoned"] == 0 and after["finished"] == 1 and after["failed"] == 0
    status = GenerationQueue(bus.redis, gen_config(tmp_path / "s", {k: "x" for k in ("musicgen", "melody",
                                                                                       "clap")})).status(job.id)
    assert status["status"] == "finished"
    print(f"\nabandoned {abandoned_after:.1f} s after kill -9, finished by the second worker {done_after:.1f} s after")


def test_a_daemon_stops_in_bounded_time_when_the_broker_stops_answering(redis_server, tmp_path):
    """A broker that holds connections open and answers nothing (SIGSTOP: a hung host, a partition)
    must not keep a producer alive past its stop: its drain (flush, end of stream) gives up within
    beatbus.runtime.STOP_S, says so once, and the process exits 0, well inside systemd's 30 s."""
    d = Daemons(redis_server.url, tmp_path)
    try:
        prod = d.start("producer", "produce", "click", "--bpm", "120", metrics=True, BEATBUS_SOURCE="hang")
        bus = Bus(redis_server.url)
        wait_until(lambda: bus.redis.xlen(keys.stream("hang", "audio")) > 20, 60, "audio on the broker", d)
        bus.close()
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(1.0)                             # frames now wait in the producer's buffer
            asked = time.monotonic()
            code = d.terminate(prod, timeout=25)
            took = time.monotonic() - asked
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
    finally:
        d.stop_all()
    log = (tmp_path / "producer.log").read_text()
    print(f"\nproducer stopped {took:.1f} s after SIGTERM with the broker frozen (exit {code})")
    assert code == 0, log[-3000:]
    assert took < STOP_S + 4, f"{took:.1f} s:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert log.count("frames lost at shutdown") + log.count("exiting before a drain finished") >= 1, log[-3000:]
