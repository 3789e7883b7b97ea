"""Accuracy gates: every beat backend on the whole dev set, through the real ``beatbus eval beats``.

One easy file scores 1.00 for every backend and lets a real regression through; the 40-file dev
set does not. Floors sit just under the means measured with the same command (README, Beats):
beatnet F 0.800 / dbF 0.585, dsp 0.775, small 0.755 (tempo Acc2 0.925), hls (as small). These files took part in tuning the
trackers (by nested leave-one-group-out over beats/ + beats_more/), so they are regression
gates, not accuracy claims (cross-validated and hidden-set scores are in the README).
"""
from __future__ import annotations

import json

import pytest

from support.hls import shipped_project
from support.paths import BEATS_DIR
from support.procs import beatbus_cmd

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # one 4-backend eval of 40 files in the fixture

# backend -> (F floor, downbeat F floor, tempo Acc2 floor); measured means in the module docstring.
FLOORS = {
    "beatnet": (0.77, 0.55, 0.93),
    "dsp": (0.74, 0.30, 0.88),
    "small": (0.72, 0.28, 0.90),
    "hls": (0.72, 0.28, 0.90),
}


@pytest.fixture(scope="module")
def dev_scores(tmp_path_factory):
    """Mean scores per backend over every dev file, from one real CLI run."""
    out = tmp_path_factory.mktemp("gates") / "scores.json"
    args = ["eval", "beats", str(BEATS_DIR), "--json", str(out)]
    for backend in FLOORS:
        args += ["--backend", backend]
    proc = beatbus_cmd(*args, env={"BEATBUS_HLS_PROJECT": str(shipped_project(tmp_path_factory))}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())["backends"]
    assert all(len(result[b]["files"]) >= 40 for b in FLOORS), "dev set shrank"
    return {b: result[b]["mean"] for b in FLOORS}


@pytest.mark.parametrize("backend", list(FLOORS))
def test_backend_holds_its_dev_set_floor(dev_scores, backend):
    f_floor, db_floor, acc2_floor = FLOORS[backend]
    mean = dev_scores[backend]
    assert mean["F"] >= f_floor, f"{backend}: F {mean['F']:.3f} < {f_floor}"
    assert mean["dbF"] >= db_floor, f"{backend}: downbeat F {mean['dbF']:.3f} < {db_floor}"
    assert mean["tempo_acc2"] >= acc2_floor, f"{backend}: tempo Acc2 {mean['tempo_acc2']:.3f} < {acc2_floor}"


def test_hls_matches_small_within_the_readme_tolerance(dev_scores):
    # README: the C simulation of the quantized model tracks like the torch `small` model (F within 0.001
    # measured; 0.005 leaves room for fixed-point rounding on another compiler).
    assert abs(dev_scores["hls"]["F"] - dev_scores["small"]["F"]) <= 0.005
