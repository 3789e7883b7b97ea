"""`beatbus eval beats ... --tune KEY=V1,V2`: nested leave-one-group-out selection, as a user runs it."""
from __future__ import annotations

import json

from support.paths import BEATS_DIR
from support.procs import beatbus_cmd

FILES = ["ballroom_media_105901", "hainsworth_001", "gtzan_blues_00002"]  # three groups by the name rule


def _files() -> list[str]:
    out = []
    for f in FILES:
        out += ["--files", f]
    return out


def test_each_fold_picks_on_the_other_groups_and_scores_its_own(tmp_path):
    out = tmp_path / "tune.json"
    r = beatbus_cmd("eval", "beats", str(BEATS_DIR), *_files(), "--backend", "dsp",
                    "--tune", "transition_lambda=20,200", "--tune", "tempo_prior=none,100:0.5",
                    "--json", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "leave-one-group-out, 5 combinations" in r.stdout and "mean over folds" in r.stdout
    t = json.loads(out.read_text())["tuning"]
    table = {row["config"]: row["files"] for row in t["table"]}
    assert set(table) == {"default", "transition_lambda=20 tempo_prior=none", "transition_lambda=20 tempo_prior=100:0.5",
                          "transition_lambda=200 tempo_prior=none", "transition_lambda=200 tempo_prior=100:0.5"}
    # the combinations really decode differently (the grid is not ignored)
    assert len({tuple(sorted(v.items())) for v in table.values()}) > 1, table
    assert [f["held_out"] for f in t["folds"]] == sorted(["ballroom_media", "hainsworth", "gtzan_blues"])
    for fold in t["folds"]:
        held = next(f for f in FILES if f.startswith(fold["held_out"]))
        train = [f for f in FILES if f != held]
        # chosen on the training groups only (each group one file here): the best of their mean F
        best = max(table, key=lambda c: (sum(table[c][f] for f in train), c == "default"))
        assert table[fold["config"]] and abs(sum(table[fold["config"]][f] for f in train)
                                            - sum(table[best][f] for f in train)) < 1e-12
        # ... and scored on the held-out file with that setting, next to the shipped default
        assert abs(fold["F"] - table[fold["config"]][held]) < 1e-12
        assert abs(fold["default"]["F"] - table["default"][held]) < 1e-12
    assert abs(t["mean"]["F"] - sum(f["F"] for f in t["folds"]) / 3) < 1e-12


def test_bad_tune_specs_are_one_line_errors():
    for spec, needle in (("nonsense=1,2", "--tune nonsense: not a setting of the online decoder or of the backend"),
                         ("transition_lambda=fast", "is not a number"),
                         ("transition_lambda", "must be KEY=V1,V2")):
        r = beatbus_cmd("eval", "beats", str(BEATS_DIR), "--files", "hainsworth_001", "--files", "ballroom_media_105901",
                        "--backend", "dsp", "--tune", spec, timeout=120)
        assert r.returncode == 2, (spec, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("beatbus: error: ") and needle in lines[0], r.stderr
    r = beatbus_cmd("eval", "beats", str(BEATS_DIR), "--files", "hainsworth_001", "--backend", "dsp",
                    "--tune", "transition_lambda=50,100", timeout=120)
    assert r.returncode == 2 and "at least two groups" in r.stderr, r.stderr


def test_the_backend_flux_share_is_tuned_on_activations_computed_again(tmp_path):
    """``onset_weight`` is the network backend's, not the decoder's: each value gets its own activations."""
    out = tmp_path / "tune.json"
    r = beatbus_cmd("eval", "beats", str(BEATS_DIR), *_files(), "--backend", "small",
                    "--tune", "onset_weight=0,1", "--json", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    t = json.loads(out.read_text())["tuning"]
    table = {row["config"]: row["files"] for row in t["table"]}
    assert set(table) == {"default", "onset_weight=0", "onset_weight=1"}
    # raw network (0) and flux alone (1) are different activations, so different beats
    assert table["onset_weight=0"] != table["onset_weight=1"], table
