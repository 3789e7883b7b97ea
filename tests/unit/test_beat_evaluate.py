"""``beatbus eval beats``: causal evaluation of beat backends on annotated audio."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatbus.lab.eval.beats import evaluate_dir, format_table, load_annotations, main, score_beats
from beatbus.processors.beat import Beat

pytest.importorskip("mir_eval")

from support.paths import BEATS_DIR as BEATS

KEYS = {"file", "F", "CMLt", "AMLt", "dbF", "tempo_acc1", "delay_p50", "pred_err_p50", "rtf"}


def _beats(times, bar=None, bpm=120.0, delay=0.06):
    return [
        Beat(
            time=float(t),
            is_downbeat=bool(bar is not None and bar[i] == 1),
            beat_in_bar=int(bar[i]) if bar is not None else 1,
            meter=4,
            bpm=bpm,
            confidence=1.0,
            next_beat_time=float(t) + 60 / bpm,
            decided_at=float(t) + delay,
        )
        for i, t in enumerate(times)
    ]


def test_load_annotations_both_formats(tmp_path: Path) -> None:
    times, bar = load_annotations(BEATS / "gtzan_disco_00000.beats")
    assert bar is not None and times.size == bar.size > 20 and set(bar) <= {1, 2, 3, 4}
    times, bar = load_annotations(BEATS / "simac_01.beats")
    assert bar is None and times.size > 20
    bad = tmp_path / "bad.beats"
    bad.write_text("1.0\t1\n2.0\n")
    with pytest.raises(ValueError, match="beat_in_bar"):
        load_annotations(bad)


def test_score_beats_perfect_and_broken() -> None:
    ref, bar = load_annotations(BEATS / "gtzan_disco_00000.beats")
    perfect = score_beats(_beats(ref, bar, bpm=60 / np.median(np.diff(ref))), ref, bar)
    assert perfect["F"] == 1.0 and perfect["dbF"] == 1.0 and perfect["tempo_acc1"] == 1.0
    assert perfect["delay_p50"] == pytest.approx(0.06)
    # off-beat (half a period late): what a tracker with the wrong phase emits
    half = np.median(np.diff(ref)) / 2
    broken = score_beats(_beats(ref + half, bar), ref, bar)
    assert broken["F"] < 0.1
    assert score_beats([], ref, bar)["F"] == 0.0


def test_prediction_error_and_tempo_use_the_scored_part() -> None:
    ref, bar = load_annotations(BEATS / "gtzan_disco_00000.beats")
    ibi = float(np.median(np.diff(ref)))
    good = score_beats(_beats(ref, bar, bpm=60 / ibi), ref, bar)
    assert good["pred_err_p50"] < 0.02  # each prediction lands on the next annotated beat
    # locked with a 5 % slow tempo: each prediction lands 5 % of a period late
    slow = score_beats(_beats(ref, bar, bpm=0.95 * 60 / ibi), ref, bar)
    assert slow["pred_err_p50"] == pytest.approx(ibi / 0.95 - ibi, abs=0.01)
    # right beats, but the tracker believes twice the tempo: not locked, no prediction error to speak of
    doubled = score_beats(_beats(ref, bar, bpm=120 / ibi), ref, bar)
    assert doubled["pred_err_p50"] is None
    assert doubled["tempo_acc1"] == 0.0 and doubled["tempo_acc2"] == 1.0
    # a tracker that searched at double tempo during the trimmed first 5 s (most of its beats) is
    # scored on the tempo of what followed
    grid = np.arange(0.5, 9.0, 0.5)  # 120 BPM
    searched = _beats(np.arange(0.25, 5.0, 0.25), bpm=240.0) + _beats(grid[grid >= 5.0], bpm=120.0)
    assert score_beats(searched, grid, None)["tempo_acc1"] == 1.0
    assert score_beats([], ref, bar)["pred_err_p50"] is None


def test_evaluate_dir_one_file_dsp(tmp_path: Path, capsys) -> None:
    res = evaluate_dir(BEATS, ["dsp"], files="gtzan_disco_00000*")
    rows = res["backends"]["dsp"]["files"]
    assert len(rows) == 1 and KEYS <= set(rows[0])
    # measured F=1.00, dbF=1.00 (5 s trim, +/-70 ms); a broken tracker scores < 0.5
    assert rows[0]["F"] >= 0.8
    assert rows[0]["tempo_acc1"] == 1.0
    assert 0 < rows[0]["delay_p50"] < 0.15
    assert 0 < rows[0]["rtf"] < 1.0
    assert res["backends"]["dsp"]["mean"]["F"] == rows[0]["F"]
    table = format_table(res)
    assert "gtzan_disco_00000" in table and "**mean**" in table
    out = tmp_path / "r.json"
    assert main(["eval", "beats", str(BEATS), "--backend", "dsp", "--files", "gtzan_disco_00000", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["backends"]["dsp"]["files"][0]["F"] == rows[0]["F"]
    assert "| gtzan_disco_00000 |" in capsys.readouterr().out


def test_simac_has_no_downbeat_score() -> None:
    res = evaluate_dir(BEATS, ["dsp"], files=["simac_01"])
    assert res["backends"]["dsp"]["files"][0]["dbF"] is None
    assert res["backends"]["dsp"]["mean"]["dbF"] is None


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backend"):
        evaluate_dir(BEATS, ["nope"])
    with pytest.raises(ValueError, match="no annotated audio"):
        evaluate_dir(tmp_path, ["dsp"])
    with pytest.raises(ValueError, match="no such folder or file"):
        evaluate_dir(tmp_path / "missing", ["dsp"])
