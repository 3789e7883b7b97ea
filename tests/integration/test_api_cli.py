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


def test_beatbus_api_joins_a_running_beatbus_run_through_the_url_it_prints(tmp_path):
    """The newcomer's two commands: `beatbus run` (its own embedded broker) and `beatbus api` beside it."""
    from support.led import BeatbusProcess
    from support.procs import eventually

    run = BeatbusProcess(tmp_path, "run", "--click", "120", "--backend", "dsp", name="run")
    api = None
    try:
        err = run.wait_for_stderr("REDIS_URL=", timeout=60)
        url = err.split("REDIS_URL=", 1)[1].split()[0]
        assert url.startswith("unix://")
        port = free_port()
        api = BeatbusProcess(tmp_path, "api", "--port", str(port),
                             env={"REDIS_URL": url, "BEATBUS_STATE_DIR": str(tmp_path / "state")}, name="api")

        def default_source():
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/api/sources/default", trust_env=False, timeout=2)
            except httpx.TransportError:
                return None
            return got.json() if got.status_code == 200 and got.json().get("bpm") else None

        state = eventually(default_source, timeout=60, what=lambda: f"the run's beats in the API ({api.stderr[-500:]})")
        assert abs(state["bpm"] - 120) < 3 and state["live"] is True
    finally:
        if api is not None:
            assert api.stop() == 0
        assert run.stop() == 0
