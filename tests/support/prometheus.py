"""Debian's Prometheus, run by the test on our scrape config and alert rules (deploy/prometheus/).

Changed for a one-minute run, nothing else: scrape and evaluate every second, targets from a
file_sd file the test writes (as ``beatbus deploy install`` writes one per host), and each
rule's ``for:`` capped at :data:`MAX_FOR_S` so a condition that holds in a healthy run shows up
as a firing alert here instead of a pending one.
"""
from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from beatbus.deploy import PROMETHEUS_DIR

__all__ = ["PrometheusServer", "MAX_FOR_S"]

MAX_FOR_S = 20
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(duration: str) -> float:
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def capped_rules(max_for_s: int = MAX_FOR_S) -> dict:
    doc = yaml.safe_load((PROMETHEUS_DIR / "beatbus.rules.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule and _seconds(rule["for"]) > max_for_s:
                rule["for"] = f"{max_for_s}s"
    return doc


class PrometheusServer:
    """``prometheus`` on a loopback port with its own config and storage under ``workdir``.

    Parameters
    ----------
    binary : str
        Path of the prometheus executable.
    workdir : Path
    port : int
    targets : list of dict
        file_sd entries: ``{"targets": ["127.0.0.1:PORT"], "labels": {"daemon", "unit"}}``.
    """

    def __init__(self, binary: str, workdir: Path, port: int, targets: list[dict]):
        self.binary, self.workdir, self.port = binary, workdir, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "targets.json").write_text(json.dumps(targets))
        (workdir / "beatbus.rules.yml").write_text(yaml.safe_dump(capped_rules(), sort_keys=False))
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(workdir / "beatbus.rules.yml")]
        (job,) = config["scrape_configs"]
        job["file_sd_configs"] = [{"files": [str(workdir / "targets.json")], "refresh_interval": "5s"}]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> PrometheusServer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict | list:
        """``data`` of a /api/v1 answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

