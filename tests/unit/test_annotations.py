"""Beat annotation files (``lab.annotations``): every format the evaluation and the training read."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatbus.errors import ConfigError
from beatbus.lab.annotations import annotated_audio, annotation_path, read_annotations, write_beats


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_beats_one_and_two_columns(tmp_path: Path) -> None:
    a = read_annotations(_write(tmp_path, "a.beats", "0.5\t1\n1.0\t2\n1.5\t3\n"))
    assert a.times.tolist() == [0.5, 1.0, 1.5] and a.beat_in_bar.tolist() == [1, 2, 3] and a.keep is None
    b = read_annotations(_write(tmp_path, "b.beats", "# a comment\n0.5\n1.0\n"))
    assert b.times.tolist() == [0.5, 1.0] and b.beat_in_bar is None


def test_txt_one_time_per_line_or_with_positions_any_separator(tmp_path: Path) -> None:
    assert read_annotations(_write(tmp_path, "a.txt", "0.25\n0.75\n")).times.tolist() == [0.25, 0.75]
    spaced = read_annotations(_write(tmp_path, "b.txt", "0.25 1\n0.75   2\n"))
    comma = read_annotations(_write(tmp_path, "c.txt", "0.25,1\n0.75,2\n"))
    for a in (spaced, comma):
        assert a.times.tolist() == [0.25, 0.75] and a.beat_in_bar.tolist() == [1, 2]
    assert read_annotations(_write(tmp_path, "d.txt", "0.25 1.0\n")).beat_in_bar.tolist() == [1]


def test_bad_lines_name_the_file(tmp_path: Path) -> None:
    for text in ("1.0\t1\n2.0\n", "1.0 x\n", "1.0 1.2\n", "1 2 3\n"):  # mixed, not a number, bar.beat, 3 columns
        with pytest.raises(ConfigError, match="bad.txt.*beat_in_bar"):
            read_annotations(_write(tmp_path, "bad.txt", text))
    with pytest.raises(ConfigError, match="cannot read"):
        read_annotations(tmp_path / "missing.beats")


def test_keep_stretches(tmp_path: Path) -> None:
    a = read_annotations(_write(tmp_path, "a.beats", "# pseudo-labels\n# keep 1.5 9\n# keep 20 30.25\n2.0\t1\n"))
    assert a.keep == ((1.5, 9.0), (20.0, 30.25)) and a.times.tolist() == [2.0]
    none = read_annotations(_write(tmp_path, "b.beats", "# keep none\n"))
    assert none.keep == () and none.times.size == 0
    # other comments starting with 'keep' are comments
    assert read_annotations(_write(tmp_path, "c.beats", "# keep it steady\n1.0\n")).keep is None
    with pytest.raises(ConfigError, match=r"# keep START END"):
        read_annotations(_write(tmp_path, "d.beats", "# keep 1.2.3 4\n1.0\n"))


def test_write_then_read(tmp_path: Path) -> None:
    p = write_beats(tmp_path / "x.beats", [0.5, 1.0], [1, 2], keep=[(0.25, 1.25)], comment="made here")
    a = read_annotations(p)
    assert a.times.tolist() == [0.5, 1.0] and a.beat_in_bar.tolist() == [1, 2] and a.keep == ((0.25, 1.25),)
    assert read_annotations(write_beats(tmp_path / "y.beats", [], [], keep=[])).keep == ()
    assert read_annotations(write_beats(tmp_path / "z.beats", [0.5])).beat_in_bar is None


def test_jams_beat_and_beat_position(tmp_path: Path) -> None:
    obs = [{"time": t, "duration": 0.0, "value": v, "confidence": None} for t, v in ((1.0, 2), (0.5, 1), (1.5, 3))]
    doc = {"annotations": [{"namespace": "chord", "data": []}, {"namespace": "beat", "data": obs}]}
    a = read_annotations(_write(tmp_path, "a.jams", json.dumps(doc)))
    assert a.times.tolist() == [0.5, 1.0, 1.5] and a.beat_in_bar.tolist() == [1, 2, 3]  # sorted by time
    doc["annotations"][1]["data"] = [{**o, "value": None} for o in obs]  # beats without positions
    assert read_annotations(_write(tmp_path, "b.jams", json.dumps(doc))).beat_in_bar is None
    pos = [{"time": t, "duration": 0.0, "value": {"position": p, "measure": 1, "num_beats": 4, "beat_units": 4}}
           for t, p in ((0.5, 4), (1.0, 1))]
    c = read_annotations(_write(tmp_path, "c.jams", json.dumps({"annotations": [
        {"namespace": "beat_position", "data": pos}]})))
    assert c.times.tolist() == [0.5, 1.0] and c.beat_in_bar.tolist() == [4, 1]
    old = {"annotations": [{"namespace": "beat", "data": {"time": [0.5, 1.0], "duration": [0, 0], "value": [1, 2],
                                                          "confidence": [1, 1]}}]}  # JAMS < 0.2 columns
    assert read_annotations(_write(tmp_path, "d.jams", json.dumps(old))).beat_in_bar.tolist() == [1, 2]
    with pytest.raises(ConfigError, match="no annotation of namespace"):
        read_annotations(_write(tmp_path, "e.jams", json.dumps({"annotations": [{"namespace": "chord"}]})))
    with pytest.raises(ConfigError, match="not a JAMS"):
        read_annotations(_write(tmp_path, "f.jams", "[1, 2]"))


def test_annotation_beside_audio_and_annotated_folders(tmp_path: Path) -> None:
    for name in ("a.flac", "b.wav", "b.txt", "c.ogg", "c.jams", "c.beats", "d.opus", "d.txt", "notes.txt"):
        (tmp_path / name).write_text("1.0\n")
    assert annotation_path(tmp_path / "a.flac") is None
    assert annotation_path(tmp_path / "c.ogg") == tmp_path / "c.beats"  # .beats before .jams before .txt
    assert [p.name for p in annotated_audio(tmp_path)] == ["b.wav", "c.ogg", "d.opus"]


def test_eval_reads_every_format(tmp_path: Path) -> None:
    from beatbus.lab.eval.beats import load_annotations

    times, bar = load_annotations(_write(tmp_path, "a.txt", "0.5 1\n1.0 2\n"))
    np.testing.assert_allclose(times, [0.5, 1.0])
    assert bar.tolist() == [1, 2]
