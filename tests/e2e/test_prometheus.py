"""Debian's Prometheus scrapes every daemon and evaluates deploy/prometheus/beatbus.rules.yml.

A healthy run, including the documented rhythm-mode workflow (item 5), fires no alert. Each rule's
``for:`` is capped at 20 s (tests/e2e/prometheus.py) so a condition that holds for longer shows up
as firing within the run instead of pending for minutes.
"""
from __future__ import annotations

import pytest

from support.procs import wait_for
from support.prometheus import MAX_FOR_S

pytestmark = pytest.mark.e2e

# leftovers of rhythm mode surface as group lag > 5 s, which fires MAX_FOR_S later
ALERTS_AFTER_S = 5 + MAX_FOR_S + 10


def test_prometheus_scrapes_every_daemon(stack):
    prom = stack.prometheus

    def targets():
        active = prom.api("targets")["activeTargets"]
        return active if len(active) == len(stack.daemons) and all(t["health"] == "up" for t in active) else None

    wait_for(targets, 20, interval=0.5)
    active = prom.api("targets")["activeTargets"]
    health = {t["labels"]["unit"]: (t["health"], t["lastError"]) for t in active}
    assert set(health) == {d.unit for d in stack.daemons.values()}, health
    assert all(h == "up" for h, _err in health.values()), {u: h for u, h in health.items() if h[0] != "up"}
    # the same from PromQL, as the BeatbusDaemonDown rule sees it
    assert {r["metric"]["unit"]: r["value"][1] for r in prom.query('up{job="beatbus"}')} == \
        {d.unit: "1" for d in stack.daemons.values()}


def test_every_rule_evaluates(stack):
    stack.wait_steady(5)
    rules = [r for g in stack.prometheus.api("rules")["groups"] for r in g["rules"]]
    assert rules, "Prometheus loaded no rule"
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken


def _switched_off_controller(alert: dict) -> bool:
    """The stack's one deliberate fault: an LED output whose controller is off (deployment.py)."""
    return alert["labels"]["alertname"] == "BeatbusLedOutputDown" and "offline" in alert["labels"].get("device", "")


def test_no_alert_fires_in_a_healthy_run(stack):
    """Items 5 and 2: leftovers of rhythm mode, or daemons too slow to keep up, fire alerts; the
    switched-off LED controller, and only it, does."""
    stack.wait_steady(stack.rhythm_mode_at - stack.steady_at + ALERTS_AFTER_S)
    alerts = stack.prometheus.api("alerts")["alerts"]
    shown = "\n".join(f"{a['state']}: {a['labels']['alertname']} {a['labels']}: {a['annotations'].get('summary', '')}"
                      for a in alerts)
    assert not any(a["state"] == "firing" and not _switched_off_controller(a) for a in alerts), shown
    assert any(a["state"] == "firing" and _switched_off_controller(a) for a in alerts), shown


def test_led_and_trigger_series_come_only_from_their_daemons(stack):
    """Item 19: the exporter published zeroed LED and trigger metrics it never sets."""
    stack.wait_steady(3)
    rows = stack.prometheus.query('count by (unit) ({__name__=~"beatbus_(led|triggers?)_.+"})')
    units = {r["metric"]["unit"] for r in rows}
    assert units <= {stack.daemons["led"].unit, stack.daemons["trigger"].unit, stack.daemons["api"].unit}, units
