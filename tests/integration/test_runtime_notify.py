"""Every daemon under systemd's eyes: each unit is Type=notify with WatchdogSec, so each `beatbus`
daemon must say READY=1 on the NOTIFY_SOCKET it is given, then WATCHDOG=1 more often than
WATCHDOG_USEC (else systemd kills it), and exit 0 on SIGTERM. The test listens on that unix
datagram socket itself, as systemd would."""
from __future__ import annotations

import time

from support.daemons import Daemon, daemon_env
from support.procs import free_port, wait_for

WATCHDOG_S = 6.0          # systemd kills a unit that stays silent this long (the units use 20-60 s)


def _daemons(broker_url: str) -> dict[str, list[str]]:
    """One command per Type=notify unit in deploy/systemd (the generation worker has its own test)."""
    return {
        "api": ["api", "--port", "0"],                                  # 0: no port to race for
        "exporter": ["exporter", "--metrics-addr", "127.0.0.1:0"],      # 0: the daemon picks a free port
        "producer": ["produce", "click", "--bpm", "120"],
        "processor": ["process", "--backend", "dsp"],
        "intensity": ["intensity", "run"],
        "structure": ["structure", "run"],
        "harmony": ["harmony", "run"],
        "led": ["consume", "led", "--output", f"ddp://127.0.0.1:{free_port()}", "--pixels", "8"],
        "trigger": ["consume", "trigger", "--error-generator-url", f"http://127.0.0.1:{free_port()}/trigger"],
    }


def _lines(d: Daemon, what: str) -> list[float]:
    return [t for t, line in d.notifications() if line == what]


def test_every_daemon_notifies_ready_then_pings_the_watchdog_and_stops_cleanly(broker, tmp_path):
    env = daemon_env(REDIS_URL=broker.url, BEATBUS_METRICS_ADDR="off",
                     WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)))
    started = [Daemon(name, args, env=env, workdir=tmp_path).start()
               for name, args in _daemons(broker.url).items()]
    try:
        wait_for(lambda: all(d.poll_ready() or not d.alive() for d in started), 120)
        not_ready = [f"{d.describe()}: {d.stderr()[-400:]}" for d in started if not d.poll_ready()]
        assert not not_ready, not_ready
        # two pings after READY=1, the first within the watchdog period
        wait_for(lambda: all(len(_lines(d, "WATCHDOG=1")) >= 2 or not d.alive() for d in started),
                 3 * WATCHDOG_S + 30)
        for d in started:
            pings = [t for t in _lines(d, "WATCHDOG=1") if t >= d.ready_at]
            assert len(pings) >= 2, (d.describe(), d.notifications(), d.stderr()[-400:])
            gaps = [b - a for a, b in zip([d.ready_at, *pings], pings)]
            assert max(gaps) < WATCHDOG_S, (d.name, gaps)      # systemd would not have killed it
            # paced at WatchdogSec/2, not every loop turn: the notify socket's queue is small
            assert len(pings) <= (pings[-1] - d.ready_at) / (WATCHDOG_S / 2) + 3, (d.name, len(pings))
    finally:
        for d in started:
            d.stop()
    for d in started:
        assert d.stop_problem is None, (d.describe(), d.stop_problem, d.stderr()[-400:])
        assert _lines(d, "STOPPING=1"), (d.name, d.notifications())


def test_a_daemon_without_watchdog_usec_sends_no_pings(broker, tmp_path):
    d = Daemon("intensity", ["intensity", "run"], env=daemon_env(REDIS_URL=broker.url, BEATBUS_METRICS_ADDR="off"),
               workdir=tmp_path).start()
    try:
        assert wait_for(lambda: d.poll_ready() or not d.alive(), 60) and d.poll_ready(), d.stderr()[-400:]
        time.sleep(1.5)                   # the runtime would ping every 0.1 s if it ignored the unset variable
        assert not _lines(d, "WATCHDOG=1"), d.notifications()
    finally:
        d.stop()
