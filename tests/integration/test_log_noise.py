"""Logs say a state change once, never once per beat or per packet (issue #15, item 14): the real commands,
their log lines counted. rq's per-job lines are counted in test_generate_out_of_the_box."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from beatbus import keys

from support.paths import ROOT
from support.procs import beatbus_cmd, free_port


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k not in (
        "REDIS_URL", "ERROR_GENERATOR_URL")}
    env.update(extra)
    return env


def _wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, trust_env=False, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_triggers_do_not_log_a_line_per_http_request(tmp_path):
    port = free_port()
    rx = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "dev", "error-generator", "--port", str(port)],
                          cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(f"http://127.0.0.1:{port}/received")
        r = beatbus_cmd("run", "--click", "120", "--duration", "8", "--backend", "dsp",
                        "--error-generator-url", f"http://127.0.0.1:{port}", timeout=120)
        received = httpx.get(f"http://127.0.0.1:{port}/received", trust_env=False).json()
    finally:
        rx.send_signal(signal.SIGTERM)
        rx.wait(15)
    assert r.returncode == 0, r.stderr
    assert len(received) >= 5, received                          # triggers were delivered ...
    assert "HTTP Request" not in r.stderr and "httpx" not in r.stderr, r.stderr    # ... without a line each


def test_a_second_producer_for_a_live_source_says_one_line(broker):
    env = _env(REDIS_URL=broker.url, BEATBUS_METRICS_ADDR="off")
    first = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "produce", "click", "--bpm", "120",
                              "--source", "dup"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        import redis

        client = redis.Redis.from_url(broker.url)
        deadline = time.monotonic() + 30
        while not client.exists(keys.stream("dup", "audio")) and time.monotonic() < deadline:
            time.sleep(0.1)
        r = beatbus_cmd("produce", "click", "--bpm", "120", "--source", "dup", env=env, timeout=60)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("beatbus: error: source 'dup' is already produced by "), \
            r.stderr
        assert first.poll() is None                              # the first producer is untouched
        time.sleep(0.5)
        entries = client.xrange(keys.stream("dup", "audio"), "-", "+")
        ends = [f for _, f in entries if b"stream_end" in b"".join(f.values())]
        assert ends == []                                        # the refused one ended nothing
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=15)
