"""`beatbus bench backends`: table / JSON structure on the cheap backends (timings are checked for
being positive and finite, never against thresholds), the CUDA and FPGA labels, and one-line errors
for missing extras. The C-simulation row is left out: it needs a full-size hls4ml compile."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from support.paths import ROOT

torch = pytest.importorskip("torch")

from beatbus.lab.bench import backends as bb  # noqa: E402

MEASURED = ("p50_us", "p99_us", "per_stream_us", "frames_per_s", "rt_streams")
CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<profile><PerformanceEstimates>
  <SummaryOfTimingAnalysis><EstimatedClockPeriod>4.2</EstimatedClockPeriod></SummaryOfTimingAnalysis>
  <SummaryOfOverallLatency><Best-caseLatency>70</Best-caseLatency><Worst-caseLatency>90</Worst-caseLatency>
  <Interval-min>32</Interval-min><Interval-max>32</Interval-max></SummaryOfOverallLatency>
</PerformanceEstimates></profile>
"""


def _finite_positive(row: dict) -> bool:
    return all(row[k] is not None and math.isfinite(row[k]) and row[k] > 0 for k in MEASURED)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """beatnet + small (processor and nn.Module, 1 and 3 streams, CPU and CUDA) + the FPGA row of
    an empty project (no synthesis report)."""
    empty = tmp_path_factory.mktemp("no_report")
    return bb.run_bench(("beatnet", "small", "fpga"), frames=30, warmup=3, streams=3, hls_project=empty, pin=False)


def test_rows_cover_backends_runtimes_and_stream_counts(result) -> None:
    keys = [(r["backend"], r["runtime"], r["device"], r["streams"]) for r in result["rows"]]
    for b in ("beatnet", "small"):
        for n in (1, 3):
            assert (b, "processor", "cpu", n) in keys and (b, "nn.Module", "cpu", n) in keys
            assert (b, "processor", "cuda", n) in keys
    assert keys[-1][0] == "fpga" and len(keys) == 13
    assert result["anchors"] == {"x_vs_beatnet_cpu": "beatnet / processor / cpu / 1",
                                 "x_vs_small_cpu": "small / processor / cpu / 1"}


def test_cpu_numbers_are_positive_and_finite_and_ratios_match(result) -> None:
    rows = {(r["backend"], r["runtime"], r["device"], r["streams"]): r for r in result["rows"]}
    anchor = rows[bb.ANCHOR]
    assert anchor["x_vs_beatnet_cpu"] == pytest.approx(1.0)
    for key, r in rows.items():
        if key[2] == "cpu":
            assert r["status"] == "measured" and _finite_positive(r), key
            assert r["p99_us"] >= r["p50_us"]
            assert r["frames_per_s"] / r["rt_streams"] == pytest.approx(50.0)
            assert r["x_vs_beatnet_cpu"] == pytest.approx(anchor["p50_us"] / r["p50_us"])


def test_cuda_rows_are_not_measured_without_a_device(result) -> None:
    cuda = [r for r in result["rows"] if r["device"] == "cuda"]
    assert len(cuda) == 4
    for r in cuda:
        if torch.cuda.is_available():
            assert r["status"] == "measured" and _finite_positive(r)
        else:
            assert r["status"] == "not measured (no CUDA device)"
            assert all(r[k] is None for k in MEASURED) and r["x_vs_beatnet_cpu"] is None


def test_fpga_row_is_labelled_an_estimate(result) -> None:
    fpga = result["rows"][-1]
    assert fpga["status"] == "estimate (no synthesis report)" and _finite_positive(fpga)
    assert fpga["p50_us"] == pytest.approx(fpga["latency_cycles"][0] * 5 / 1e3)  # cycles x 5 ns (hls/config.yaml)
    table = bb.format_table(result)
    assert "| fpga | kernel, 5 ns clock |" in table and "estimate (no synthesis report) |" in table
    assert table.count("not measured (no CUDA device)") == (0 if torch.cuda.is_available() else 4)
    assert "claim check" in table and "| anchor |" in table


def test_fpga_row_uses_a_synthesis_report_when_there_is_one(tmp_path) -> None:
    (tmp_path / "prj" / "syn" / "report").mkdir(parents=True)
    (tmp_path / "prj" / "syn" / "report" / "beat_small_csynth.xml").write_text(CSYNTH)
    row = bb.fpga_row(tmp_path / "prj")
    assert row["status"] == "synthesis report" and row["latency_cycles"] == [70, 90] and row["ii_cycles"] == 32
    assert row["p50_us"] == pytest.approx(70 * 5 / 1e3) and row["p99_us"] == pytest.approx(90 * 5 / 1e3)
    assert row["frames_per_s"] == pytest.approx(1e9 / (32 * 5))
    assert row["rt_streams"] == 1 and row["rt_streams_bound"] == pytest.approx(row["frames_per_s"] / 50)


def test_qkeras_step_carries_the_gru_state_like_the_sequence_model() -> None:
    """The per-frame QKeras call reproduces the sequence model frame by frame."""
    pytest.importorskip("qkeras")
    from beatbus.hls.model import load_qmodel, softmax

    step = bb.qkeras_step()
    feats, _ = bb.load_features(None, 40)
    feats = feats[:40]
    per_frame = np.stack([step(f[None])[0] for f in feats])
    model, mean, std = load_qmodel()
    ref = softmax(model.predict(((feats - mean) / std)[None], verbose=0)[0].astype(np.float64))
    assert np.abs(per_frame - ref).max() < 1e-4


def test_command_prints_table_and_writes_json(tmp_path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "beatbus.cli", "bench", "backends", "--frames", "20", "--warmup", "2", "--streams", "2",
         "--backend", "small", "--backend", "fpga", "--device", "cpu", "--no-pin", "--hls-project", str(tmp_path),
         "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| small | processor | cpu | 2 |" in r.stdout and "| fpga |" in r.stdout
    doc = json.loads(out.read_text())
    assert [row["backend"] for row in doc["rows"]] == ["small"] * 4 + ["fpga"]
    assert doc["settings"]["frames"] == 20 and "features:" in doc["note"]


@pytest.mark.parametrize("backend, blocked, package", [("csim", "hls4ml", "hls4ml"), ("qkeras", "qkeras", "qkeras")])
def test_missing_extra_is_a_one_line_error(backend, blocked, package) -> None:
    """With the package made unimportable (``sys.modules[name] = None``) the command names the extra."""
    code = (f"import sys; sys.modules[{blocked!r}] = None; from beatbus.cli import main; "
            f"sys.exit(main(['bench', 'backends', '--backend', {backend!r}, '--frames', '1', '--no-pin']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("beatbus: error:")]
    assert len(err) == 1 and ("beatbus[hls]" in err[0] or package in err[0])
