"""Rhythm mode leaves nothing behind that raises an alert (issue #15 item 5).

The documented workflow (`POST /api/start-rhythm-mode`) against the real `beatbus api` process
and a real broker, with a live source beating; then the broker is read directly and Prometheus'
own rule evaluator (Debian's ``promtool test rules``) judges the real alert rules on the series
scraped from the real `beatbus exporter` and the API: a leftover consumer group lags behind the
live source and fires ``BeatbusConsumerGroupLag``.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from beatbus import keys
from beatbus.deploy import PROMETHEUS_DIR
from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.api import BeatSource, Command, api_command
from support.procs import free_port, wait_for

PROMTOOL = shutil.which("promtool")
GROUP = "trigger-rhythm"
BEATS = keys.stream("default", keys.StreamKind.BEATS)


@pytest.fixture
def receiver():
    with ReferenceReceiver() as rx:
        yield rx


def groups(bus, stream: str = BEATS) -> dict[str, dict]:
    if not bus.redis.exists(stream):
        return {}
    return {g["name"].decode(): g for g in bus.redis.xinfo_groups(stream)}


def scrape(url: str) -> list[tuple[str, dict, float]]:
    text = httpx.get(url, trust_env=False, timeout=10).text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _selector(name: str, labels: dict) -> str:
    quoted = {k: str(v).replace("\\", "\\\\").replace('"', '\\"') for k, v in labels.items()}
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(quoted.items()))
    return f"{name}{{{inner}}}"


def firing_alerts(tmp_path, targets: dict[str, tuple[str, list]], hold_minutes: int = 10) -> str:
    """Feed each target's scraped samples (held for ``hold_minutes``, as Prometheus would keep seeing
    them) to promtool with the real rules; '' when no alert fires, else promtool's report."""
    series = []
    for unit, (instance, samples) in targets.items():
        base = {"job": "beatbus", "instance": instance, "unit": unit}
        series.append({"series": _selector("up", base), "values": f"1+0x{hold_minutes * 4}"})
        for name, labels, value in samples:
            if math.isfinite(value):
                series.append({"series": _selector(name, {**labels, **base}),
                               "values": f"{value!r}+0x{hold_minutes * 4}"})
    rules = yaml.safe_load((PROMETHEUS_DIR / "beatbus.rules.yml").read_text())
    names = sorted({r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r})
    doc = {"rule_files": [str(PROMETHEUS_DIR / "beatbus.rules.yml")], "evaluation_interval": "15s",
           "tests": [{"interval": "15s", "input_series": series,
                      "alert_rule_test": [{"eval_time": f"{m}m", "alertname": n, "exp_alerts": []}
                                          for n in names for m in (3, hold_minutes)]}]}
    path = tmp_path / "after-rhythm-mode.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    return "" if r.returncode == 0 else (r.stdout + r.stderr)[-4000:]


@pytest.mark.skipif(not PROMTOOL, reason="promtool missing (install.sh installs prometheus)")
def test_no_alert_fires_after_a_rhythm_mode_run(broker, bus, receiver, tmp_path):
    exporter_port = free_port()
    with BeatSource(broker.url) as _beats:
        api, url = api_command(broker.url, receiver.url, tmp_path / "api.log")
        exporter = Command(["exporter"], env={"REDIS_URL": broker.url,
                                              "BEATBUS_METRICS_ADDR": f"127.0.0.1:{exporter_port}"},
                           log=tmp_path / "exporter.log")
        try:
            exporter.wait_http(f"http://127.0.0.1:{exporter_port}/metrics")
            r = httpx.post(f"{url}/api/start-rhythm-mode", json={"song_data": {"tempo": 120}, "duration": 2},
                           trust_env=False, timeout=30)
            assert r.status_code == 200 and r.json()["mode"] == "live" and r.json()["source"] == "default", r.text
            assert wait_for(lambda: receiver.received(), timeout=10), "rhythm mode posted no trigger"
            assert wait_for(lambda: not httpx.get(f"{url}/api/rhythm-mode", trust_env=False).json()["active"],
                            timeout=10)
            time.sleep(7)               # the source keeps beating: a leftover group is now > 5 s behind
            targets = {"beatbus-exporter": (f"127.0.0.1:{exporter_port}",
                                            scrape(f"http://127.0.0.1:{exporter_port}/metrics")),
                       "beatbus-api": (url.removeprefix("http://"), scrape(f"{url}/metrics"))}
            report = firing_alerts(tmp_path, targets)
            assert not report, report
            assert GROUP not in groups(bus)
        finally:
            assert exporter.stop() == 0, exporter.stderr()
            assert api.stop() == 0, api.stderr()
    assert "Traceback" not in api.stderr(), api.stderr()


def test_a_stopped_run_and_a_schedule_run_leave_nothing(broker, bus, receiver, tmp_path):
    api, url = api_command(broker.url, receiver.url, tmp_path / "api.log")
    try:
        with BeatSource(broker.url):
            r = httpx.post(f"{url}/api/start-rhythm-mode", json={"song_data": {"tempo": 120}, "duration": 60},
                           trust_env=False, timeout=30)
            assert r.status_code == 200 and r.json()["mode"] == "live", r.text
            assert wait_for(lambda: groups(bus).get(GROUP, {}).get("consumers") == 1)
            assert httpx.post(f"{url}/api/stop-rhythm-mode", trust_env=False, timeout=30).json()["active"] is False
            assert GROUP not in groups(bus)
        bus.redis.delete(keys.SOURCES)             # nothing live: the schedule plays a virtual source
        r = httpx.post(f"{url}/api/start-rhythm-mode", json={"song_data": {"tempo": 240}, "duration": 1},
                       trust_env=False, timeout=30)
        assert r.status_code == 200 and r.json()["mode"] == "schedule", r.text
        virtual = [keys.stream("rhythm-mode", kind) for kind in (keys.StreamKind.BEATS, keys.StreamKind.SECTIONS)]
        assert wait_for(lambda: not httpx.get(f"{url}/api/rhythm-mode", trust_env=False).json()["active"])
        assert wait_for(lambda: GROUP not in groups(bus, virtual[0]))
        assert all(0 < bus.redis.ttl(s) <= 60 for s in virtual)           # the dashboard sees its end, then gone
    finally:
        assert api.stop() == 0, api.stderr()


def test_a_killed_api_leaves_a_group_the_next_one_removes(broker, bus, receiver, tmp_path):
    """Crash leftovers: a group whose consumers all idle past stale_after (5 s here) is collected,
    by any API; a group a running API reads is not."""
    with BeatSource(broker.url):
        first, url = api_command(broker.url, receiver.url, tmp_path / "first.log")
        second = None
        try:
            r = httpx.post(f"{url}/api/start-rhythm-mode", json={"song_data": {"tempo": 120}, "duration": 300},
                           trust_env=False, timeout=30)
            assert r.status_code == 200, r.text
            second, _ = api_command(broker.url, receiver.url, tmp_path / "second.log")
            time.sleep(8)                          # the second API swept at least once: the run is alive
            assert groups(bus).get(GROUP, {}).get("consumers") == 1
            first.kill()                           # no drain, no cleanup: its group stays behind
            assert GROUP in groups(bus)
            assert wait_for(lambda: GROUP not in groups(bus), timeout=20), second.stderr()
            assert "removed rhythm-mode groups left by a stopped API" in second.stderr()
        finally:
            first.stop()
            if second is not None:
                assert second.stop() == 0, second.stderr()
