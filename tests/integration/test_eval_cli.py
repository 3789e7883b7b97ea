"""`beatbus eval beats|sections` as a user runs them: bad input is one line, real annotations with gaps score."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from support.paths import DATA
from support.procs import beatbus_cmd

pytest.importorskip("mir_eval")

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
    ("beats", "bare", "song.flac: no annotation (<name>.beats, .jams or .txt) next to it"),
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


@pytest.fixture
def two_folders(tmp_path: Path) -> list[Path]:
    """Real clips in two folders: ``a`` grouped by name, ``b`` with a MANIFEST.tsv for two of its three."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder, stems in zip(folders, (["gtzan_disco_00000", "gtzan_pop_00001"],
                                       ["gtzan_disco_00001", "gtzan_rock_00000", "simac_01"])):
        folder.mkdir()
        for stem in stems:
            for ext in (".flac", ".beats"):
                shutil.copy(DATA / "beats" / f"{stem}{ext}", folder / f"{stem}{ext}")
    # gtzan/rock: the manifest's spelling of the name rule's gtzan_rock; simac_01 moves to a group of its own
    (folders[1] / "MANIFEST.tsv").write_text("name\tgroup\tsource\ngtzan_rock_00000\tgtzan/rock\tGTZAN\n"
                                             "simac_01\tfull/songs\tSIMAC\n")
    return folders


def test_eval_beats_several_folders_groups_and_folds(two_folders, tmp_path):
    out = tmp_path / "r.json"
    r = beatbus_cmd("eval", "beats", *map(str, two_folders), "--backend", "dsp", "--folds", "leave-one-group-out",
                    "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["backends"]["dsp"]
    files = {row["file"]: row for row in res["files"]}
    assert {f: row["group"] for f, row in files.items()} == {
        "gtzan_disco_00000": "gtzan_disco", "gtzan_disco_00001": "gtzan_disco", "gtzan_pop_00001": "gtzan_pop",
        "gtzan_rock_00000": "gtzan_rock", "simac_01": "full_songs"}
    for key in ("F", "liveF", "tempo_acc1"):
        assert res["mean"][key] == pytest.approx(np.mean([row[key] for row in files.values()]))
        for g in res["groups"]:
            members = [row[key] for row in files.values() if row["group"] == g["group"]]
            assert g["n_files"] == len(members) and g[key] == pytest.approx(np.mean(members)), (g, key)
    assert [g["group"] for g in res["groups"]] == ["full_songs", "gtzan_disco", "gtzan_pop", "gtzan_rock"]
    assert next(g for g in res["groups"] if g["group"] == "full_songs")["dbF"] is None  # simac has no bars

    folds = res["folds"]["folds"]
    assert [(f["held_out"], f["n_train"], f["n_val"]) for f in folds] == [
        ("full_songs", 4, 1), ("gtzan_disco", 3, 2), ("gtzan_pop", 4, 1), ("gtzan_rock", 4, 1)]
    assert res["folds"]["mean"]["F"] == pytest.approx(np.mean([g["F"] for g in res["groups"]]))

    # the printed tables: per-file rows and the pooled mean as before, one group row and one fold row per group
    lines = r.stdout.splitlines()
    assert "| gtzan_disco_00001 |" in r.stdout and any(line.startswith("| **mean** |") for line in lines)
    assert "| group | files | F | dbF | meter_acc | liveF | tempo_acc1 |" in lines
    assert sum(line.startswith(f"| {g['group']} | {g['n_files']} | ") for g in res["groups"] for line in lines) == 4
    assert any(line.startswith("| **pooled** | **5** | ") for line in lines)
    assert sum(line.startswith(f"| {i} | ") for i in range(1, 5) for line in lines) == 4
    assert any(line.startswith("| **mean over folds** |") for line in lines)


def test_eval_beats_several_folders_bad_input_is_one_line(two_folders, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("no audio here\n")
    r = beatbus_cmd("eval", "beats", str(two_folders[0]), str(tmp_path / "plain"), "--backend", "dsp", timeout=120)
    _one_line_error(r, "plain: no annotated audio")
    r = beatbus_cmd("eval", "beats", *map(str, two_folders), "--backend", "dsp", "--group-by", "none",
                    "--folds", "leave-one-group-out", timeout=120)
    _one_line_error(r, "needs files from at least two groups")


def test_librosa_anchor_scores_what_librosa_itself_gives(tmp_path):
    """`--anchor librosa` is librosa's own beat_track on the same file, scored by mir_eval as ours."""
    import librosa
    import mir_eval

    song = DATA / "beats" / "gtzan_blues_00002.flac"
    out = tmp_path / "r.json"
    r = beatbus_cmd("eval", "beats", str(song), "--backend", "dsp", "--anchor", "librosa", "--json", str(out),
                    timeout=300)
    assert r.returncode == 0, r.stderr
    row = json.loads(out.read_text())["backends"]["anchor:librosa"]["files"][0]
    y, sr = librosa.load(song, sr=22050)
    _, frames = librosa.beat.beat_track(y=y, sr=sr)
    ref = mir_eval.beat.trim_beats(np.loadtxt(song.with_suffix(".beats"), ndmin=2)[:, 0])
    est = mir_eval.beat.trim_beats(librosa.frames_to_time(frames, sr=sr))
    assert abs(row["F"] - mir_eval.beat.f_measure(ref, est)) < 1e-9
    assert row["dbF"] is None and row["liveF"] is None  # no bars, no predictions: not scored as 0
