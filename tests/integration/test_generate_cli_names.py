"""The generation CLI says what the README says, and writes each file under the name it is (issue #15, item 13)."""
from __future__ import annotations

import re
import shutil

import orjson
import pytest
import soundfile as sf

from support.paths import ROOT
from support.procs import beatbus_cmd


def test_readme_and_cli_name_the_same_generation_policies():
    readme = re.findall(r"consume generate --policy ([a-z|]+)", (ROOT / "README.md").read_text())
    assert readme, "the README documents `consume generate --policy ...`"
    r = beatbus_cmd("consume", "generate", "--help", timeout=60)
    assert r.returncode == 0, r.stderr
    cli = re.search(r"--policy \{([a-z,]+)\}", r.stdout).group(1).split(",")
    assert all(set(names.split("|")) == set(cli) for names in readme), (readme, cli)
    r = beatbus_cmd("consume", "generate", "--policy", "chorus", timeout=60)
    assert r.returncode == 2 and "invalid choice: 'chorus' (choose from section, bars, api)" in r.stderr.replace(
        "'section', 'bars', 'api'", "section, bars, api"), r.stderr


def test_lstm_writes_midi_to_out_and_its_audio_beside_it(tmp_path):
    if not shutil.which("fluidsynth"):
        pytest.skip("fluidsynth not installed (install.sh installs it)")
    out = tmp_path / "x.mid"
    r = beatbus_cmd("generate", "lstm", "--local", "--render-audio", "--tempo", "120", "--bars", "4", "--seed", "1",
                    "--out", str(out), "--torch-threads", "1", "--state-dir", str(tmp_path / "s"), timeout=180)
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert (doc["out"], doc["audio"]) == (str(out), str(tmp_path / "x.wav"))
    assert out.read_bytes()[:4] == b"MThd"                          # a MIDI file, not a WAV under a .mid name
    x, sr = sf.read(tmp_path / "x.wav")
    assert sr == 32000 and len(x) / sr >= 7.9                       # 4 bars at 120 BPM


@pytest.mark.parametrize("kind, name, needle", [
    ("lstm", "x.wav", "--out {out}: an LSTM piece is MIDI, so the name must end in .mid"),
    ("musicgen", "x.mid", "--out {out}: MusicGen writes WAV audio, so the name must end in .wav"),
])
def test_an_out_name_that_is_not_what_the_piece_is_is_refused_first(tmp_path, kind, name, needle):
    out = tmp_path / name
    extra = ("--duration", "5") if kind == "musicgen" else ("--bars", "4")
    r = beatbus_cmd("generate", kind, "--local", *extra, "--out", str(out), "--state-dir", str(tmp_path / "s"),
                    timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"beatbus: error: {needle.format(out=out)}" + (
        " (--render-audio writes its audio beside it, as NAME.wav)" if kind == "lstm" else "")], r.stderr
    assert not out.exists()
