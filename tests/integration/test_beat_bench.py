"""`beatbus bench beats` produces its table (timings are printed, never asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

from beatbus.lab.bench import beats as bench

from support.paths import ROOT


def test_bench_rows_and_table() -> None:
    result = bench.run_bench((1, 2), ("dsp",), seconds=1.5, warmup=0.5, reference=False, audio_dir=None, pin=False)
    rows = result["rows"]
    assert [(r["mode"], r["streams"]) for r in rows] == [("single", 1), ("batched", 1), ("single", 2), ("batched", 2)]
    for r in rows:
        assert r["frame_p50_ms"] > 0 and r["frame_p99_ms"] >= r["frame_p50_ms"] and r["rtf"] > 0 and r["rtf_cpu"] > 0
    table = bench.format_table(result)
    assert table.count("| dsp |") == 4 and "RTF (CPU)" in table


def test_bench_command_prints_table_and_writes_json(tmp_path) -> None:
    """The command pins its own process to one core, so it runs in a subprocess here."""
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "beatbus.lab.bench.beats", "--streams", "1", "--seconds", "1", "--backend", "beatnet",
         "--mode", "batched", "--audio", str(tmp_path / "none"), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "| beatnet | batched | 1 |" in r.stdout and "| beatnet (torch/frame) | reference | 1 |" in r.stdout
    doc = json.loads(out.read_text())
    assert {row["mode"] for row in doc["rows"]} == {"batched", "reference"}
