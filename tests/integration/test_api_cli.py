"""``beatbus api`` as a user runs it: a real process serving on loopback."""
from __future__ import annotations

import time

import httpx

from support.procs import beatbus_cmd, free_port, spawn, stop


def test_beatbus_api_serves_health_and_dashboard_and_stops_on_sigterm(broker, tmp_path):
    port = free_port()
    proc = spawn("api", "--port", str(port), "--error-generator-url", "http://127.0.0.1:9",
                  env={"REDIS_URL": broker.url, "BEATBUS_STATE_DIR": str(tmp_path)})   # generation's uploads
    try:
        deadline, health = time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 200, proc.stderr.read() if proc.poll() else ""
        assert health.json()["backends"]["error_generator"] == "circuit closed"
        assert "beatbus" in httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).text
        paths = httpx.get(f"http://127.0.0.1:{port}/openapi.json", trust_env=False).json()["paths"]
        assert "/api/beat-trigger" in paths
        assert "/api/generate" in paths                     # the generation stage's routes are mounted
    finally:
        rc, _out, err = stop(proc)
    assert rc == 0 and "Traceback" not in err, err
    assert f"http://127.0.0.1:{port}/" in err and "triggers -> http://127.0.0.1:9" in err
    assert "no API keys" in err and "open to this machine only (127.0.0.1)" in err


def test_beatbus_api_needs_a_broker():
    r = beatbus_cmd("api", "--port", str(free_port()), timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("beatbus: error: no broker")
