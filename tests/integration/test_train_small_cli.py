"""``beatbus label beats`` and ``beatbus train beat-small --data`` through the real CLI: pseudo-labels of a
real recording, one epoch on annotated recordings plus a synthetic song, a held-out file reported,
fine-tuning the shipped checkpoint, and the result running in the live processor and, through
``hls train --checkpoint`` / ``hls convert`` / ``hls csim``, in the C simulation and the live hls backend."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
mir_eval = pytest.importorskip("mir_eval")

from beatbus.audio import load_audio  # noqa: E402
from beatbus.lab.annotations import read_annotations  # noqa: E402
from beatbus.lab.eval.beats import load_annotations  # noqa: E402
from beatbus.processors.beat.processor import BeatProcessor  # noqa: E402
from beatbus.processors.beat.small import CHECKPOINT_ENV, DEFAULT_CHECKPOINT, load_small  # noqa: E402

from support.paths import BEATS_DIR  # noqa: E402
from support.procs import beatbus_cmd  # noqa: E402

FILES = ("ballroom_media_105901", "simac_01", "madmom_sample")  # 32 s waltz, 20 s, 2.8 s


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three annotated dev recordings (links) in their own folder."""
    d = tmp_path_factory.mktemp("data")
    for name in FILES:
        for ext in (".flac", ".beats"):
            (d / f"{name}{ext}").symlink_to(BEATS_DIR / f"{name}{ext}")
    return d


@pytest.fixture(scope="module")
def tuned(data, tmp_path_factory) -> Path:
    """The shipped checkpoint fine-tuned on the recordings alone for one epoch, through the real CLI."""
    d = tmp_path_factory.mktemp("tuned")
    out = d / "tuned.pt"
    r = beatbus_cmd("train", "beat-small", "--data", str(data), "--songs", "0", "--init", "shipped", "--seed", "11",
                    "--epochs", "1", "--lr", "1e-3", "--out", str(out), "--cache-dir", str(d / "cache"), timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """One short synthetic song, named as ``train beat-small --seed 11`` looks for it."""
    d = tmp_path_factory.mktemp("songs")
    r = beatbus_cmd("synth", "songs", str(d), "--count", "1", "--seed", "11", "--duration-range", "6,8", timeout=300)
    assert r.returncode == 0, r.stderr
    return d


def test_label_keeps_confident_stretches_of_a_real_recording(tmp_path: Path) -> None:
    audio = BEATS_DIR / "ballroom_media_105901.flac"
    r = beatbus_cmd("label", "beats", str(audio), "--out", str(tmp_path), "--json", str(tmp_path / "rows.json"),
                    timeout=300)
    assert r.returncode == 0, r.stderr
    assert "kept in" in r.stderr and "labelled 1 recordings" in r.stderr
    ann = read_annotations(tmp_path / "ballroom_media_105901.beats")
    assert (tmp_path / "ballroom_media_105901.flac").resolve() == audio.resolve()
    assert ann.keep and sum(b - a for a, b in ann.keep) > 10.0
    assert all(any(a <= t <= b for a, b in ann.keep) for t in ann.times)
    # what was kept agrees with the human annotation (scored inside the kept stretches only)
    ref, _ = load_annotations(BEATS_DIR / "ballroom_media_105901.beats")
    lo, hi = ann.keep[0][0], ann.keep[-1][1]
    inside = ref[(ref >= lo) & (ref <= hi)]
    assert mir_eval.beat.f_measure(inside, ann.times) > 0.9
    assert json.loads((tmp_path / "rows.json").read_text())[0]["n_beats"] == ann.times.size
    again = beatbus_cmd("label", "beats", str(audio), "--out", str(tmp_path), timeout=120)
    assert again.returncode == 0 and "0 of 1 recordings" in again.stderr  # already labelled: skipped


def test_train_on_recordings_and_a_synthetic_song_then_track_live(data, songs, tmp_path, monkeypatch) -> None:
    out = tmp_path / "small.pt"
    mixed = tmp_path / "mixed"            # the recordings, and one whose pseudo-labels kept nothing
    mixed.mkdir()
    for f in data.iterdir():
        (mixed / f.name).symlink_to(f.resolve())
    (mixed / "nothing_kept.flac").symlink_to(BEATS_DIR / "hainsworth_001.flac")
    (mixed / "nothing_kept.beats").write_text("# keep none\n")
    r = beatbus_cmd("train", "beat-small", "--data", str(mixed), "--songs", "1", "--val-songs", "0",
                    "--songs-dir", str(songs), "--seed", "11", "--epochs", "1", "--out", str(out),
                    "--cache-dir", str(tmp_path / "cache"), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert np.isfinite(res["train_loss"]) and np.isfinite(res["held_out_loss"]) and res["val_loss"] is None
    assert "epoch 1/1" in r.stdout and "held-out recordings" in r.stdout
    assert "2 training" in r.stdout and "1 held out" in r.stdout
    assert "1 with no kept stretch left out: nothing_kept" in r.stdout   # never the held-out file
    net = load_small(out)
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["held_out"] and set(meta["held_out"]) < set(FILES)
    # the live processor loads it from the variable that `eval beats --backend small` reads
    monkeypatch.setenv(CHECKPOINT_ENV, str(out))
    proc = BeatProcessor(backend="small")
    assert all(np.array_equal(a, b) for a, b in zip(proc._act.net.state_dict().values(), net.state_dict().values()))
    y = load_audio(BEATS_DIR / "simac_01.flac", sr=22050)
    beats = [b for i in range(0, y.size, 441) for b in proc.process(y[i : i + 441])]
    assert all(np.isfinite(b.time) for b in beats)



def test_fine_tune_the_shipped_checkpoint_on_recordings(tuned) -> None:
    """Its width and standardisation kept, its weights moved."""
    shipped, new = load_small(DEFAULT_CHECKPOINT).state_dict(), load_small(tuned).state_dict()
    assert shipped["mean"].equal(new["mean"]) and not shipped["gru.weight_hh_l0"].equal(new["gru.weight_hh_l0"])


def test_a_fine_tuned_checkpoint_goes_down_the_fpga_path(tuned, data, tmp_path) -> None:
    """hls train --checkpoint --data, hls convert, hls csim, then the live hls backend on its weights."""
    pytest.importorskip("hls4ml")
    weights, project = tmp_path / "qtuned", tmp_path / "proj"
    r = beatbus_cmd("hls", "train", "--checkpoint", str(tuned), "--songs", "0", "--data", str(data), "--seed", "11",
                    "--epochs", "1", "--out", str(weights), timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["out"] == str(weights)
    r = beatbus_cmd("hls", "convert", "--weights", str(weights), "--out", str(project), timeout=600)
    assert r.returncode == 0, r.stderr
    # what it says is beatbus's own lines, not TensorFlow's CUDA-plugin or Keras's serialisation noise
    assert all(ln.startswith("beatbus: ") for ln in r.stderr.strip().splitlines()), r.stderr
    res_file = tmp_path / "csim.json"
    r = beatbus_cmd("hls", "csim", "--project", str(project), "--weights", str(weights), "--checkpoint", str(tuned),
                    "--audio", str(BEATS_DIR / "simac_01.flac"), "--frames", "800", "--json", str(res_file),
                    timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(res_file.read_text())
    # the C simulation of the fine-tuned model follows its QKeras model as closely as the shipped one's
    # (0.0019 measured here; test_hls_csim.py's gate for the shipped model is 0.006)
    assert res["frames"] == 800 and res["max_abs_csim_qkeras"] <= 0.006 and res["argmax_agree"] >= 0.99
    # the live processor's hls backend runs on those weights (the variables a unit file would set)
    r = beatbus_cmd("analyze", str(BEATS_DIR / "ballroom_media_105901.flac"), "--online", "--backend", "hls", "--json",
                    env={"BEATBUS_HLS_PROJECT": str(project), "BEATBUS_HLS_WEIGHTS": str(weights)}, timeout=600)
    assert r.returncode == 0, r.stderr
    est = np.array([b["time"] for b in json.loads(r.stdout)["beats"]])
    ref, _ = load_annotations(BEATS_DIR / "ballroom_media_105901.beats")
    f = mir_eval.beat.f_measure(mir_eval.beat.trim_beats(ref), mir_eval.beat.trim_beats(est))
    assert f > 0.5, f        # a loose floor: one epoch on three files must not break the tracker


def test_hls_train_without_enough_audio_is_one_line(tuned, tmp_path) -> None:
    r = beatbus_cmd("hls", "train", "--checkpoint", str(tuned), "--songs", "0", "--data",
                    str(BEATS_DIR / "madmom_sample.flac"), "--out", str(tmp_path / "q"), timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("beatbus: error: no training audio of at least 500 frames")


def test_bad_training_data_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.flac").write_bytes(b"")
    r = beatbus_cmd("train", "beat-small", "--data", str(tmp_path), "--songs", "0", "--out", str(tmp_path / "o.pt"),
                    timeout=120)
    assert r.returncode != 0 and "no annotated audio" in r.stderr and "Traceback" not in r.stderr


def test_a_missing_or_broken_checkpoint_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    clip = str(BEATS_DIR / "madmom_sample.flac")
    for ckpt, text in ((tmp_path / "missing.pt", "no small-model checkpoint at"),
                       (broken, "is not a small-model checkpoint")):
        r = beatbus_cmd("eval", "beats", clip, "--backend", "small", env={CHECKPOINT_ENV: str(ckpt)}, timeout=120)
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
        assert last.startswith("beatbus: error: ") and text in last and CHECKPOINT_ENV in last, last
