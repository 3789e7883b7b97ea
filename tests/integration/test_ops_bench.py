"""`beatbus bench load|soak` run end to end at toy sizes (the real runs are benchmarks, not tests)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from support.paths import ROOT
from support.procs import beatbus_cmd, cli_env, eventually


def test_bench_load_prints_cpu_lag_and_latency_tables_for_a_node_and_a_cluster(tmp_path):
    out = tmp_path / "load.json"
    r = beatbus_cmd("bench", "load", "--sources", "2", "--processors", "1", "--duration", "4", "--warmup", "3",
                    "--cluster", "--json", str(out), timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| processor-1 |" in r.stdout and "| capture-to-event latency (ms) |" in r.stdout
    assert "| broker | sources | processor CPU (% of one core) | CPU per source (% of a core) | sources per core |" \
        in r.stdout
    single, cluster = json.loads(out.read_text())            # one run per broker and source count
    assert (single["broker"], cluster["broker"]) == ("redis-server", "Redis Cluster 3+3")
    for doc in (single, cluster):
        assert doc["leases"] == [2] and doc["beats"] > 0 and doc["frames_dropped"] == [0], doc["broker"]
        assert 0 < doc["capture_latency_ms"]["50"] < 10_000
        assert doc["backend"] == "beatnet"                   # the daemon's own default: nothing passed
        assert 0 < doc["cpu_percent_per_source"] < 100 and doc["sources_per_core"] > 1
    assert cluster["cpu_percent"]["broker"] > 0              # the six nodes' CPU, read from /proc
    # its own beat reader ends before the cluster stops: no "broker unavailable" at the end of a run
    assert "broker unavailable" not in r.stdout + r.stderr, r.stderr[-3000:]


def test_bench_bus_measures_a_cluster_beside_a_single_node(tmp_path):
    out = tmp_path / "bus.json"
    r = beatbus_cmd("bench", "bus", "--events", "600", "--rate", "500", "--sources", "6", "--json", str(out),
                    timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert {(x["broker"], x["sources"]) for x in rows} >= {("redis-server (tcp)", 1), ("Redis Cluster 3+3 (tcp)", 1),
                                                         ("Redis Cluster 3+3 (tcp)", 6)}
    for x in rows:                  # every event published was read, from every source
        assert x["throughput"]["events"] == 600 and x["latency"]["events"] == 600, x
    assert "| Redis Cluster 3+3 (tcp) | 6 |" in r.stdout


def test_bench_soak_samples_rss_and_judges_growth(tmp_path):
    out = tmp_path / "soak.json"
    r = beatbus_cmd("bench", "soak", "--minutes", "0.3", "--sample", "5", "--warmup", "5", "--json", str(out),
                    timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "| processor |" in r.stdout and "| trigger group lag (s) |" in r.stdout
    doc = json.loads(out.read_text())
    assert len(doc["samples"]) >= 3
    assert set(doc["growth"]) == {"producer", "processor", "intensity", "structure", "trigger", "led", "exporter",
                                  "broker"}
    assert doc["samples"][-1]["beats"] > 0 and doc["samples"][-1]["triggers"] > 0


def test_bench_rejects_nonsense_sizes():
    r = beatbus_cmd("bench", "load", "--sources", "0")
    assert r.returncode == 2 and "--sources: '0': source counts must be positive" in r.stderr


def test_bench_load_killed_by_sigterm_removes_its_folder_and_daemons(tmp_path):
    """A supervisor's SIGTERM mid-run: the bench unwinds as on Ctrl-C, then dies by the signal."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "bench.log"
    with open(out, "wb") as log:        # a file, not a pipe nobody reads while the bench runs
        proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "bench", "load", "--sources", "2",
                                 "--duration", "120", "--warmup", "2"], cwd=ROOT,
                                env=cli_env({"TMPDIR": str(tmp)}), stdout=log, stderr=subprocess.STDOUT)
    try:
        # mid-run: the processor serves /metrics and the load generator runs
        logs = eventually(lambda: list(tmp.glob("beatbus-load-*/loadgen.log")), timeout=150,
                          what=lambda: f"the bench's load generator; bench output:\n{out.read_text()[-2000:]}")
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == proc.pid]
        assert children, "no child processes"
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            folder = logs[0].parent
            tails = {p.name: p.read_text(errors="replace")[-800:] for p in folder.glob("*.log")}
            raise AssertionError(f"still running 90 s after SIGTERM; bench:\n{out.read_text()[-2000:]}\n{tails}") \
                from None
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, out.read_text()[-2000:]
    assert not logs[0].parent.exists() and list(tmp.iterdir()) == []
    eventually(lambda: not [c for c in children if Path(f"/proc/{c}").exists()], timeout=15,
               what="the bench's daemons to stop")


def _parent(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
