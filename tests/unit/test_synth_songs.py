"""Synthetic songs: plans, exact beat/section annotations, FluidSynth rendering, the CLI."""
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from beatbus.cli import build_parser
from beatbus.errors import ConfigError
from beatbus.lab.synth import Section, SongPlan, beat_grid, random_plan, render_offset, render_song, section_times, transitions

from support.synth_cache import PLANS, load_truth, song


def _midi_notes(path):
    """(time s, channel 1-16, pitch) of every note-on, from the MIDI file's own ticks and tempo map."""
    from music21 import midi

    mf = midi.MidiFile()
    mf.open(str(path))
    mf.read()
    mf.close()
    tempos, notes = [], []
    for tr in mf.tracks:
        tick = 0
        for ev in tr.events:
            if isinstance(ev, midi.DeltaTime):
                tick += ev.time
            elif ev.type == midi.MetaEvents.SET_TEMPO:
                tempos.append((tick, midi.getNumber(ev.data, 3)[0]))
            elif ev.isNoteOn():
                notes.append((tick, ev.channel, ev.pitch))
    tempos.sort()

    def seconds(tick):
        t, last, us = 0.0, 0, 500000
        for tk, u in tempos:
            if tk >= tick:
                break
            t += (tk - last) / mf.ticksPerQuarterNote * us / 1e6
            last, us = tk, u
        return t + (tick - last) / mf.ticksPerQuarterNote * us / 1e6

    return [(seconds(tk), ch, p) for tk, ch, p in notes]


# -- plans ---------------------------------------------------------------------------
def test_beat_grid_is_exact_for_steps_and_ramps():
    plan = SongPlan(name="g", tempo=120.0, meter="3/4", sections=(
        Section("verse", 2), Section("chorus", 2, tempo=90.0), Section("outro", 2, tempo_end=60.0)))
    g = beat_grid(plan)
    assert len(g.times) == 18 and list(g.beat_in_bar[:4]) == [1, 2, 3, 1]
    assert np.allclose(np.diff(g.times[:7]), 0.5)                    # 120 BPM
    assert np.allclose(np.diff(g.times[6:13]), 60 / 90)              # the step
    assert g.bpm[12] == 90.0 and g.bpm[-1] == pytest.approx(60.0)    # the ramp reaches its end tempo
    assert g.end == pytest.approx(np.sum(60.0 / g.bpm))
    spans = section_times(plan, g)
    assert [s[2] for s in spans] == ["verse", "chorus", "outro"]
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] == g.end
    kinds = {t["kind"] for t in transitions(plan, g)}
    assert kinds == {"tempo-change", "tempo-ramp", "drop", "breakdown"}


def test_six_eight_counts_dotted_quarter_beats():
    plan = SongPlan(name="s", tempo=60.0, meter="6/8", sections=(Section("verse", 2),))
    g = beat_grid(plan)
    assert list(g.beat_in_bar) == [1, 2, 1, 2] and np.allclose(np.diff(g.times), 1.0)


@pytest.mark.parametrize("kw, field", [
    (dict(meter="5/4"), "meter"), (dict(tempo=0), "tempo"), (dict(tempo=float("nan")), "tempo"),
    (dict(sections=(Section("solo", 2),)), "label"), (dict(sections=(Section("verse", 0),)), "bars"),
    (dict(sections=(Section("verse", 2, build_up_bars=2),)), "build_up_bars"),
    (dict(sections=(Section("verse", 2, style="breakdown"),)), "style"), (dict(swing=0.9), "swing"),
    (dict(name="a b"), "name"), (dict(sections=()), "sections"),
])
def test_bad_plans_are_refused_naming_the_field(kw, field):
    base = dict(name="x", tempo=120.0, sections=(Section("verse", 2),))
    with pytest.raises(ValueError, match=field):
        SongPlan(**{**base, **kw})


def test_random_plans_follow_their_ranges_and_seed():
    for seed in range(30):
        p = random_plan(seed, meters=(3, 6), tempo_range=(70, 110))
        assert p.meter in ("3/4", "6/8")
        g = beat_grid(p)
        assert 70 * 0.8 <= g.bpm.min() and g.bpm.max() <= 110 * 1.001
        labels = [s.label for s in p.sections]
        assert "chorus" in labels and labels.count("chorus") >= 2
    assert random_plan(5) == random_plan(5) and random_plan(5) != random_plan(6)
    with pytest.raises(ValueError, match="meters"):
        random_plan(1, meters=(5,))
    with pytest.raises(ValueError, match="tempo_range"):
        random_plan(1, tempo_range=(200, 100))


# -- rendering -----------------------------------------------------------------------
def test_fluidsynth_start_offset_is_measured_and_small():
    offset, jitter = render_offset(22050)
    assert 0.0 <= offset < 0.03          # a few ms of synth delay, removed from the audio
    assert jitter < 0.004                # what is left: FluidSynth's 64-sample blocks


def test_rendered_song_files_and_exact_annotations(tmp_path_factory):
    files = song(tmp_path_factory, "pop")
    truth = load_truth(files)
    plan = PLANS["pop"]
    grid = beat_grid(plan)
    beats = np.loadtxt(files.beats)
    assert np.allclose(beats[:, 0], grid.times, atol=1e-4) and list(beats[:, 1]) == list(grid.beat_in_bar)
    rows = [line.split("\t") for line in files.sections.read_text().splitlines()]
    assert [r[2] for r in rows] == [s.label for s in plan.sections]
    assert float(rows[0][0]) == 0.0 and all(rows[i][1] == rows[i + 1][0] for i in range(len(rows) - 1))
    assert {t["kind"] for t in truth["transitions"]} >= {"build-up", "drop", "breakdown"}
    assert truth["plan"] == plan.to_dict() and SongPlan.from_dict(truth["plan"]) == plan
    energies = {s["label"]: s["energy"] for s in truth["sections"]}
    assert energies["chorus"] == max(energies.values())
    info = sf.info(str(files.audio))
    assert info.samplerate == 22050 and info.channels == 1
    assert truth["music_end"] <= info.duration <= truth["music_end"] + 1.1


def test_midi_has_drums_on_channel_10_on_every_annotated_beat(tmp_path_factory):
    files = song(tmp_path_factory, "pop")
    notes = _midi_notes(files.midi)
    assert {ch for _, ch, _ in notes} >= {10} and all(p in range(35, 82) for _, ch, p in notes if ch == 10)
    drums = np.array(sorted(t for t, ch, _ in notes if ch == 10))
    grid = beat_grid(PLANS["pop"])
    chorus = [t for t, s in zip(grid.times, grid.section) if PLANS["pop"].sections[s].label == "chorus"]
    err = [np.min(np.abs(drums - t)) for t in chorus]
    assert max(err) < 1e-3               # the MIDI's tempo map reproduces the annotated beat times


def test_chorus_is_the_loudest_section_in_the_audio(tmp_path_factory):
    files = song(tmp_path_factory, "pop")
    y, sr = sf.read(str(files.audio), dtype="float32")
    level = {}
    for s in load_truth(files)["sections"]:
        seg = y[int(s["start"] * sr):int(s["end"] * sr)]
        level.setdefault(s["label"], []).append(10 * np.log10(np.mean(seg ** 2) + 1e-12))
    mean = {k: np.mean(v) for k, v in level.items()}
    assert max(mean, key=mean.get) == "chorus"
    assert mean["chorus"] - mean["verse"] > 3.0 and mean["verse"] > mean["intro"]


def test_same_seed_same_song(tmp_path):
    plan = SongPlan(name="tiny", tempo=160.0, sections=(Section("verse", 2), Section("chorus", 2)))
    a = render_song(plan, seed=3, out_dir=tmp_path / "a", audio_format="wav")
    b = render_song(plan, seed=3, out_dir=tmp_path / "b", audio_format="wav")
    c = render_song(plan, seed=4, out_dir=tmp_path / "c", audio_format="wav")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(a.midi) == digest(b.midi) and digest(a.audio) == digest(b.audio)
    assert a.beats.read_text() == b.beats.read_text()
    assert digest(a.midi) != digest(c.midi)
    with pytest.raises(ValueError, match="audio_format"):
        render_song(plan, seed=1, out_dir=tmp_path, audio_format="mp3")
    with pytest.raises(ValueError, match="seed"):
        render_song(plan, seed=-1, out_dir=tmp_path)


# -- CLI -------------------------------------------------------------------------------
def test_cli_synth_songs_renders_a_reproducible_batch(tmp_path, capsys):
    args = build_parser().parse_args(["synth", "songs", str(tmp_path), "--count", "1", "--seed", "11", "--meters", "4",
                                      "--tempo-range", "170,190", "--duration-range", "20,30"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 1 and out[0].endswith("synth_11_0000.flac")
    meta = json.loads((tmp_path / "synth_11_0000.json").read_text())
    assert meta["meter"] == "4/4" and 170 <= meta["plan"]["tempo"] <= 190
    assert {"plan", "transitions", "tempo_curve", "sections", "render"} <= set(meta)


@pytest.mark.parametrize("argv, needle", [
    (["--meters", "3,x"], "--meters"), (["--tempo-range", "60"], "--tempo-range"),
    (["--meters", "5"], "meters"), (["--count", "0"], "count"), (["--tempo-changes", "2"], "--tempo-changes"),
])
def test_cli_synth_bad_options_are_config_errors(tmp_path, argv, needle):
    args = build_parser().parse_args(["synth", "songs", str(tmp_path), *argv])
    with pytest.raises(ConfigError, match=needle):
        args.func(args)
