"""Short synthetic songs for the synth, intensity and structure tests, rendered once per session.

Each test module asks for a song by name; the files are cached in pytest's session temp
directory so the modules share them (rendering takes a few seconds).
"""
from __future__ import annotations

import json
from pathlib import Path

from beatbus.lab.synth import Section, SongPlan, render_song

__all__ = ["PLANS", "song", "load_truth"]

PLANS = {
    # 4/4 at 150 BPM (1.6 s bars): a pop form with a build-up and a breakdown bridge, ~51 s
    "pop": SongPlan(name="pop", tempo=150.0, meter="4/4", key=57, programs={
        "bass": 33, "comp": 0, "pad": 48, "power": 29, "lead": 80}, sections=(
        Section("intro", 4), Section("verse", 4, build_up_bars=1), Section("chorus", 4),
        Section("verse", 4), Section("chorus", 4), Section("bridge", 4, style="breakdown", build_up_bars=1),
        Section("chorus", 4), Section("outro", 4))),
    # 3/4, swing, a tempo step and a ramp, ~40 s
    "waltz": SongPlan(name="waltz", tempo=132.0, meter="3/4", swing=1 / 3, key=60, sections=(
        Section("verse", 4), Section("chorus", 4), Section("verse", 4), Section("chorus", 4),
        Section("bridge", 4, style="half-time", tempo=110.0), Section("chorus", 4),
        Section("outro", 4, tempo_end=95.0))),
    # D major, 4/4 at 132 BPM, one chord per bar, ~30 s (the harmony tests: key, chords, changes)
    "harmony": SongPlan(name="harmony", tempo=132.0, meter="4/4", key=62, sections=(
        Section("intro", 2), Section("verse", 4), Section("chorus", 4), Section("verse", 4), Section("outro", 2))),
}


def song(tmp_path_factory, name: str, *, seed: int = 7):
    """Render (once per session) and return the SongFiles of ``PLANS[name]``."""
    base = Path(tmp_path_factory.getbasetemp()) / "synth-songs"
    files_json = base / f"{name}.json"
    if not files_json.exists():
        render_song(PLANS[name], seed=seed, out_dir=base, audio_format="wav")
    from beatbus.lab.synth.render import SongFiles

    return SongFiles(name=name, audio=base / f"{name}.wav", beats=base / f"{name}.beats",
                     sections=base / f"{name}.sections", meta=files_json, midi=base / f"{name}.mid")


def load_truth(files) -> dict:
    return json.loads(Path(files.meta).read_text())
