"""A removed LED device leaves /metrics: one that went down and was then removed in the Lights panel kept
``beatbus_led_output_up 0``, so the BeatbusLedOutputDown alert fired until the consumer restarted.

The real daemons (`consume led`, `api`) on a redis-server the test starts; the device is added and removed
through the API; /metrics read with prometheus_client's own text parser; the alert's expression from
deploy/prometheus/beatbus.rules.yml evaluated on what the daemon exports.
"""
from __future__ import annotations

import contextlib
import json
import re
import socket
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .deployment import http_json
from support.daemons import Daemon, daemon_env
from support.paths import ROOT
from support.procs import RedisServer, eventually, free_port, wait_for

pytestmark = pytest.mark.e2e

METRICS_URL = re.compile(r"http://[^/\s\"]+:(\d+)/metrics")


def _series(port: int, name: str) -> dict[str, float]:
    """device -> value of ``name`` on the daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.labels["device"]: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == name}


def test_a_removed_device_that_was_down_leaves_metrics_and_the_alert(tmp_path):
    rules = yaml.safe_load((ROOT / "deploy/prometheus/beatbus.rules.yml").read_text())
    alert = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "BeatbusLedOutputDown")
    assert "beatbus_led_output_up" in alert["expr"] and alert["expr"].rstrip().endswith("== 0"), alert
    closed = socket.socket()                                  # an OPC port nothing listens on: refused
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    with contextlib.ExitStack() as cleanup:
        redis = RedisServer(tmp_path).start()
        cleanup.callback(redis.stop)
        env = daemon_env(REDIS_URL=redis.url, BEATBUS_STATE_DIR=str(tmp_path / "state"), BEATBUS_METRICS_ADDR="off")
        api_url = f"http://127.0.0.1:{free_port()}"
        led = Daemon("led", ["consume", "led", "--source", "stage", "--output", "web://strip",
                             "--metrics-addr", "127.0.0.1:0"], env=env, workdir=tmp_path).start()
        cleanup.callback(led.stop)
        api = Daemon("api", ["api", "--port", api_url.rsplit(":", 1)[1]], env=env, workdir=tmp_path).start()
        cleanup.callback(api.stop)
        found = wait_for(lambda: METRICS_URL.search(led.stderr()) or not led.alive(), 120)
        assert found and led.alive(), led.stderr()[-2000:]
        port = int(found[1])
        assert wait_for(lambda: api.poll_ready() or not api.alive(), 120) and api.alive(), api.stderr()[-2000:]

        def call(method: str, path: str, doc: dict | None = None) -> dict:
            answer: list = []
            eventually(lambda: (answer.__setitem__(slice(None), [http_json(method, api_url + path, doc)]) or
                                answer[0][0] != 429), 30, what=f"{method} {path}", interval=0.2)
            assert answer[0][0] == 200, answer
            return json.loads(answer[0][1])

        call("POST", "/api/led/devices", {"output": f"opc://127.0.0.1:{dead_port}", "name": "gone", "pixels": 10})
        eventually(lambda: _series(port, "beatbus_led_output_up").get("gone") == 0.0, 30,
                   what=lambda: f"the dead device down: {_series(port, 'beatbus_led_output_up')}")
        call("DELETE", "/api/led/devices/gone")
        eventually(lambda: "gone" not in _series(port, "beatbus_led_output_up"), 15,
                   what=lambda: f"the removed device's series gone: {_series(port, 'beatbus_led_output_up')}")
        assert "gone" not in _series(port, "beatbus_led_output_errors_total")
        up = _series(port, "beatbus_led_output_up")
        assert up == {"strip": 1.0}, up                 # the alert's expression: nothing at 0
        assert led.stderr().count("output down") == 1, led.stderr()[-2000:]
