"""Prometheus config, alert rules and the Grafana dashboard against what the code exports; the exporter."""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from beatbus import keys, metrics
from beatbus.bus import Bus, Group
from beatbus.deploy import GRAFANA_DIR, PROMETHEUS_DIR
from beatbus.deploy.rq_metrics import JOB_STATES, RqCollector
from beatbus.deploy.stream_metrics import StreamCollector
from beatbus.schemas import StreamEnd

from support.paths import ROOT
from support.procs import free_port

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool missing (install.sh installs prometheus)")
# every module that defines metrics (imported so they register)
METRIC_MODULES = ("beatbus.metrics", "beatbus.consumers.trigger.delivery", "beatbus.consumers.led.metrics",
                  "beatbus.consumers.generate.metrics", "beatbus.processors.intensity.service",
                  "beatbus.processors.structure.service")
BOUNDED_LABELS = {"kind", "stage", "reason", "backend", "source", "role", "device", "outcome", "result", "status",
                  "queue", "state", "group", "scope"}
UNITLESS_HISTOGRAMS = {"beatbus_generation_realtime_factor"}      # a ratio, not a duration


def rules() -> dict:
    return yaml.safe_load((PROMETHEUS_DIR / "beatbus.rules.yml").read_text())


def dashboard() -> dict:
    return json.loads((GRAFANA_DIR / "beatbus.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in rules()["groups"] for r in g["rules"]]


def exposed_names(families) -> set[str]:
    """Sample names Prometheus sees: counters get _total, histograms _bucket/_sum/_count."""
    out = set()
    for f in families:
        if f.type == "counter":
            out.add(f.name + "_total")
        elif f.type == "histogram":
            out |= {f.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            out.add(f.name)
    return out


def beatbus_families(bus):
    for m in METRIC_MODULES:
        importlib.import_module(m)
    registered = [f for f in REGISTRY.collect() if f.name.startswith("beatbus_")]
    # families a role keeps off /metrics until it runs here (metrics.owned_by): exported by that daemon
    registered += [f for fams in metrics._owned.values() for fam in fams for f in fam.collect()]
    collectors = [f for c in (StreamCollector(bus), RqCollector(bus.redis, ["q"])) for f in c.describe()]
    return registered + collectors


@needs_promtool
def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    for name in ("prometheus.yml", "beatbus.rules.yml", "beatbus.rules.test.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    config = tmp_path / "prometheus.yml"
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"targets": ["127.0.0.1:9601"], "labels": {"daemon": "processor"}}]))
    config.write_text(config.read_text().replace("/etc/beatbus/prometheus-targets.json", str(targets)))
    r = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 1 rule files found" in r.stdout + r.stderr
    # the alerts fire and stay quiet where they should (deploy/prometheus/beatbus.rules.test.yml)
    r = subprocess.run([PROMTOOL, "test", "rules", "beatbus.rules.test.yml"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_the_alerts_the_issue_asks_for_exist():
    names = {r["alert"] for g in rules()["groups"] for r in g["rules"]}
    assert {"BeatbusConsumerLag", "BeatbusDeadLetterGrowth", "BeatbusBeatProcessorSilent", "BeatbusTriggerCircuitOpen",
            "BeatbusRqFailedJobs"} <= names
    for g in rules()["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"], r["alert"]


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each panel's query (as a recording rule, Grafana's variables filled in)."""
    exprs = dashboard_exprs()
    doc = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$__rate_interval", "1m").replace("$source", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(doc))
    r = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout


def test_dashboard_shape():
    d = dashboard()
    panels = d["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "source"}
    titles = " | ".join(p["title"] for p in panels)
    for needle in ("BPM", "latency", "lag", "Events per second", "Job duration"):
        assert needle.lower() in titles.lower(), needle
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"


def test_every_metric_named_by_alerts_and_dashboard_is_exported(bus):
    exported = exposed_names(beatbus_families(bus))
    named = {m for e in rule_exprs() + dashboard_exprs() for m in re.findall(r"\bbeatbus_[a-z0-9_]+\b", e)}
    assert named, "no metric names found"
    missing = sorted(named - exported)
    assert not missing, f"named in rules/dashboard but exported by no code: {missing}"


def test_metric_names_and_labels_follow_prometheus_conventions(bus):
    families = beatbus_families(bus)
    assert len(families) > 40
    for f in families:
        if f.type == "histogram" and f.name not in UNITLESS_HISTOGRAMS:
            assert f.name.endswith("_seconds"), f.name
        if f.type == "gauge":
            assert not f.name.endswith("_total"), f.name
    # label names: read from the registered metric objects, and from the collectors' samples
    labels = {c._name: set(c._labelnames) for c in list(REGISTRY._collector_to_names)
              if getattr(c, "_name", "").startswith("beatbus_")}
    bus.heartbeat("conv")
    bus.redis.xadd(keys.stream("conv", "beats"), {"d": b"{}"})
    for c in (StreamCollector(bus), RqCollector(bus.redis, ["q"])):
        for f in c.collect():
            labels.setdefault(f.name, set()).update(k for s in f.samples for k in s.labels)
    assert len(labels) > 40 and {"kind"} <= labels["beatbus_events_published"]
    unbounded = {name: names - BOUNDED_LABELS for name, names in labels.items() if names - BOUNDED_LABELS}
    assert not unbounded, unbounded


def test_rq_collector_counts_jobs_by_state(bus):
    q = Queue("ops-test", connection=bus.redis, serializer=JSONSerializer)
    q.enqueue("builtins.len", "abc")
    q.enqueue("builtins.int", "not a number")              # fails
    SimpleWorker([q], connection=bus.redis, serializer=JSONSerializer).work(burst=True, logging_level="ERROR")
    waiting = q.enqueue("builtins.len", "later")
    q.enqueue("builtins.len", "and later")
    # a worker that died mid-job leaves its started-registry entry behind, heartbeat lapsed
    bus.redis.zadd(q.started_job_registry.key, {f"{waiting.id}:gone": time.time() - 5})
    worker = SimpleWorker([q], connection=bus.redis, serializer=JSONSerializer)
    worker.register_birth()
    try:
        samples = {(s.name, s.labels.get("state")): s.value
                   for f in RqCollector(bus.redis, ["ops-test"]).collect() for s in f.samples}
    finally:
        worker.register_death()
    jobs = {state: samples[("beatbus_rq_jobs", state)] for state in JOB_STATES}
    assert jobs == {"queued": 2, "started": 0, "abandoned": 1, "deferred": 0, "scheduled": 0, "failed": 1,
                    "finished": 1, "canceled": 0}
    assert samples[("beatbus_rq_workers", None)] == 1
    assert 0 <= samples[("beatbus_rq_oldest_job_age_seconds", None)] < 30
    assert samples[("beatbus_rq_up", None)] == 1


def test_stream_collector_reports_lag_ownership_trimming_and_dead_letters(bus):
    src = "ops"
    beats, audio = keys.stream(src, "beats"), keys.stream(src, "audio")
    bus.heartbeat(src)
    for _ in range(30):
        bus.redis.xadd(audio, {"d": b"x"}, maxlen=20, approximate=False)      # trims 10
    bus.set_checkpoint(src, "beat", bus.redis.xrange(audio)[-5][0].decode())
    bus.redis.set(keys.lease(src, "beat"), "someone", px=5000)
    group = Group(bus, beats, "trigger", "c1", start="0")
    ids = [bus.publish(beats, StreamEnd(source=src, timestamp=float(i)), maxlen=100) for i in range(5)]
    group.read(count=2)                                                        # 2 delivered, 3 waiting
    bus.dead_letter(beats, ids[0], {}, "malformed")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in StreamCollector(bus).collect() for s in f.samples}
    get = lambda name, **lab: samples[(name, tuple(sorted(lab.items())))]    # noqa: E731
    assert get("beatbus_sources_live") == 1 and get("beatbus_streams_up") == 1
    assert get("beatbus_stream_entries", source=src, kind="audio") == 20
    assert get("beatbus_stream_trimmed_entries_total", source=src, kind="audio") == 10
    assert get("beatbus_group_lag_entries", source=src, kind="beats", group="trigger") == 3
    assert get("beatbus_group_pending_entries", source=src, kind="beats", group="trigger") == 2
    assert get("beatbus_dead_letter_entries", source=src, kind="beats") == 1
    assert get("beatbus_source_owned", source=src, role="beat") == 1
    assert get("beatbus_source_owned", source=src, role="intensity") == 0
    assert 0 <= get("beatbus_checkpoint_lag_seconds", source=src, role="beat") < 1
    assert 0 <= get("beatbus_stream_age_seconds", source=src, kind="beats") < 5


def test_collectors_report_a_broker_outage_instead_of_failing_the_scrape(redis_server):
    bus = Bus.connect(redis_server.url)
    bus.heartbeat("x")
    redis_server.stop()
    try:
        streams = {s.name: s.value for f in StreamCollector(bus).collect() for s in f.samples}
        rq = {s.name: s.value for f in RqCollector(bus.redis, ["q"]).collect() for s in f.samples}
    finally:
        redis_server.start()
    assert streams == {"beatbus_streams_up": 0} and rq == {"beatbus_rq_up": 0}


def test_exporter_daemon_serves_broker_metrics_and_drains(broker, bus):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_")}, "REDIS_URL": broker.url,
           "BEATBUS_METRICS_ADDR": f"127.0.0.1:{port}"}
    bus.heartbeat("exp")
    Queue("gen-q", connection=bus.redis, serializer=JSONSerializer).enqueue("builtins.len", "x")
    proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "exporter", "--queue", "gen-q"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.2)
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in text_string_to_metric_families(text) for s in f.samples}
        assert values[("beatbus_streams_up", ())] == 1 and values[("beatbus_rq_up", ())] == 1
        assert values[("beatbus_sources_live", ())] == 1
        assert values[("beatbus_rq_jobs", (("queue", "gen-q"), ("state", "queued")))] == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
