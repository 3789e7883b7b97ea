"""`beatbus bench beats` produces its table (timings are printed, never asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from beatbus.lab.bench import beats as bench

from support.paths import ROOT
from support.procs import beatbus_cmd


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
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "clip.flac", 0.1 * np.random.default_rng(0).standard_normal(22050 * 2).astype(np.float32), 22050)
    r = subprocess.run(
        [sys.executable, "-m", "beatbus.lab.bench.beats", "--streams", "1", "--seconds", "1", "--backend", "beatnet",
         "--mode", "batched", "--audio", str(music), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "| beatnet | batched | 1 |" in r.stdout and "| beatnet (torch/frame) | reference | 1 |" in r.stdout
    doc = json.loads(out.read_text())
    assert {row["mode"] for row in doc["rows"]} == {"batched", "reference"}


def test_a_named_audio_folder_must_exist() -> None:
    # click tracks stand in only for the default folder; a folder the user named is never replaced silently
    r = beatbus_cmd("bench", "beats", "--streams", "1", "--seconds", "1", "--audio", "/nonexistent/music")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
        "beatbus: error: --audio /nonexistent/music: no such folder", r.stderr
