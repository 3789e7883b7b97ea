"""`beatbus eval beats|sections` as a user runs them: bad input is one line, real annotations with gaps score."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from support.procs import beatbus_cmd

pytest.importorskip("mir_eval")

DATA = Path("/work/shared/data")
SARGON = DATA / "sections" / "sargon_mindless_cut"


def _one_line_error(r, needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("beatbus: error: ") and needle in lines[0], r.stderr


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    """An empty folder, a text file, an audio file without annotations, a corrupt annotated file."""
    (tmp_path / "empty").mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not audio\n")
    bare = tmp_path / "bare" / "song.flac"
    bare.parent.mkdir()
    shutil.copy(DATA / "beats" / "madmom_sample.flac", bare)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.flac").write_text("garbage")
    (broken / "x.beats").write_text("1.0\t1\n")
    (broken / "x.sections").write_text("0\t5\tIntro\n")
    bad_ann = tmp_path / "badann"
    bad_ann.mkdir()
    shutil.copy(DATA / "beats" / "madmom_sample.flac", bad_ann / "s.flac")
    (bad_ann / "s.beats").write_text("one\ttwo\n")
    (bad_ann / "s.sections").write_text("intro from the start\n")
    return {"empty": tmp_path / "empty", "text": text, "bare": bare, "broken": broken, "badann": bad_ann,
            "missing": tmp_path / "nowhere"}


@pytest.mark.parametrize("what, target, needle", [
    ("beats", "empty", "no annotated audio"),
    ("beats", "text", "neither a folder nor an audio file"),
    ("beats", "bare", "no annotation song.beats next to it"),
    ("beats", "missing", "no such folder or file"),
    ("beats", "broken", "unsupported or corrupt audio file"),
    ("beats", "badann", "every line must be 'time' or 'time<TAB>beat_in_bar'"),
    ("sections", "empty", "no audio files with a .sections annotation"),
    ("sections", "text", "neither a folder nor an audio file"),
    ("sections", "bare", "no annotation song.sections next to it"),
    ("sections", "missing", "no such folder or file"),
    ("sections", "broken", "unsupported or corrupt audio file"),
    ("sections", "badann", "expected 'start<TAB>end<TAB>label'"),
])
def test_bad_input_is_one_line_not_a_traceback(corpus, what, target, needle):
    r = beatbus_cmd("eval", what, str(corpus[target]), "--backend" if what == "beats" else "--mode",
                    "dsp" if what == "beats" else "offline", timeout=120)
    _one_line_error(r, needle)


def test_eval_beats_takes_one_annotated_file(tmp_path):
    out = tmp_path / "r.json"
    r = beatbus_cmd("eval", "beats", str(DATA / "beats" / "gtzan_disco_00000.flac"), "--backend", "dsp",
                    "--json", str(out), timeout=180)
    assert r.returncode == 0, r.stderr
    assert "| gtzan_disco_00000 |" in r.stdout
    rows = json.loads(out.read_text())["backends"]["dsp"]["files"]
    assert [row["file"] for row in rows] == ["gtzan_disco_00000"] and rows[0]["F"] > 0.5


def _sections_json(folder: Path, tmp_path: Path, name: str, *modes: str) -> dict:
    out = tmp_path / f"{name}.json"
    args = [a for m in modes for a in ("--mode", m)]
    r = beatbus_cmd("eval", "sections", str(folder), *args, "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(out.read_text())


def test_eval_sections_scores_annotations_that_start_after_zero_and_have_gaps(tmp_path):
    """The annotation minus its leading 'Silence' line starts at 0.348 s (mir_eval refused it): padded as
    mir_eval's adjust_intervals does, it scores exactly as the original, whose lead-in label is not scored."""
    lines = (SARGON.with_suffix(".sections")).read_text().splitlines()
    assert lines[0].startswith("0.000") and lines[0].endswith("Silence")
    late = tmp_path / "late"
    late.mkdir()
    shutil.copy(SARGON.with_suffix(".flac"), late / SARGON.with_suffix(".flac").name)
    (late / SARGON.with_suffix(".sections").name).write_text("\n".join(lines[1:]) + "\n")
    padded = _sections_json(late, tmp_path, "late", "offline", "online")
    original = _sections_json(SARGON.parent, tmp_path, "orig", "offline", "online")
    for mode in ("offline", "online"):
        got, want = padded["modes"][mode]["mean"], original["modes"][mode]["mean"]
        assert set(got) == set(want) and {"F05", "F3", "pairwise_F", "label_acc"} <= set(got)
        for key, value in ((k, v) for k, v in want.items() if k != "rtf"):      # rtf: a timing
            assert got[key] == (value if value is None else pytest.approx(value)), (mode, key)

    # a gap in the middle too: still scored, the unannotated stretch is not held against labels
    gappy = tmp_path / "gappy"
    gappy.mkdir()
    shutil.copy(SARGON.with_suffix(".flac"), gappy / SARGON.with_suffix(".flac").name)
    (gappy / SARGON.with_suffix(".sections").name).write_text("2.0\t16.951\tIntro\n20.0\t33.516\tVerse\n"
                                                              "33.516\t63.402\tChorus\n")
    doc = _sections_json(gappy, tmp_path, "gappy", "offline")
    mean = doc["modes"]["offline"]["mean"]
    assert all(0.0 <= mean[k] <= 1.0 for k in ("F05", "F3", "pairwise_F", "label_acc"))


def test_pad_reference_fills_the_lead_in_and_inner_gaps():
    from beatbus.lab.eval.sections import pad_reference

    ints, labs = pad_reference(np.array([[1.0, 4.0], [6.0, 9.0]]), ["Intro", "Verse"])
    assert ints.tolist() == [[0.0, 1.0], [1.0, 4.0], [4.0, 6.0], [6.0, 9.0]]
    assert labs == ["__T_MIN", "Intro", "__GAP", "Verse"]
