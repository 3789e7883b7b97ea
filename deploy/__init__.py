"""Production operation of beatbus: systemd units, Prometheus and Grafana, the exporter.

::

    deploy/systemd/      unit templates (one per daemon, templated per source or instance) and beatbus.target
    deploy/prometheus/   scrape configuration and alert rules
    deploy/grafana/      dashboard JSON

Modules: :mod:`.units` (render the templates, plan an install), :mod:`.verify`
(``systemd-analyze verify`` / ``security``), :mod:`.rq_metrics` and :mod:`.stream_metrics`
(Prometheus collectors reading the broker), :mod:`.exporter` (``beatbus exporter``) and :mod:`.cli`.
The load benchmarks are in :mod:`beatbus.lab.bench.load`.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEPLOY_DIR", "SYSTEMD_DIR", "PROMETHEUS_DIR", "GRAFANA_DIR"]

DEPLOY_DIR = Path(__file__).resolve().parent
SYSTEMD_DIR = DEPLOY_DIR / "systemd"
PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
GRAFANA_DIR = DEPLOY_DIR / "grafana"
