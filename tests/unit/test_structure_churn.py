"""Live section churn: an unchanging input stays one section, a repeated chorus is found, and the bench."""
import json

import numpy as np
import pytest

from beatbus.audio import load_audio
from beatbus.lab.bench.sections import dashboard_labels
from beatbus.lab.eval.sections import run_online
from beatbus.processors.structure import analyze_structure, section_at

from support.paths import DATA
from support.procs import beatbus_cmd
from support.synth_cache import load_truth, song

SR = 22050


def _steady(seconds, *, clicks):
    """An A major chord that never changes, with a 120 BPM click on top (beats to track) or alone."""
    t = np.arange(int(seconds * SR)) / SR
    y = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    if clicks:
        y = y + 0.5 * np.exp(-(t % 0.5) / 0.01) * np.sin(2 * np.pi * 2000.0 * t)
    return y.astype(np.float32)


@pytest.mark.parametrize("case", ["chord with clicks", "pure tone"])
def test_a_long_unchanging_input_is_one_section_never_relabelled(case):
    t = np.arange(180 * SR) / SR
    y = _steady(180, clicks=True) if case == "chord with clicks" else (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(
        np.float32)
    ana, updates = run_online(y, tracker=True)                  # the causal dsp tracker's beats, as the daemon
    if case == "chord with clicks":
        assert ana.last_external > 170                          # beats kept coming to the end
    assert len(ana.sections) == 1, ana.sections
    assert sum(u.status == "confirmed" for u in updates) <= 1, updates
    assert not [u for u in updates if u.status == "revised" and u.end is not None], updates
    assert len(dashboard_labels(updates)) <= 1


@pytest.fixture(scope="module")
def pop(tmp_path_factory):
    return song(tmp_path_factory, "pop")


def _chorus_labels(sections, choruses):
    return [section_at(sections, (c["start"] + c["end"]) / 2) for c in choruses]


def test_a_repeated_chorus_is_found_offline_and_online(pop):
    """Every one of the three choruses is labelled chorus, as one repetition group; live, each is shown as
    chorus on the dashboard before it ends."""
    choruses = [s for s in load_truth(pop)["sections"] if s["label"] == "chorus"]
    assert len(choruses) == 3
    y = load_audio(pop.audio, sr=SR)
    beats = np.loadtxt(pop.beats)
    found = _chorus_labels(analyze_structure(y, beats).sections, choruses)
    assert [s["label"] for s in found] == ["chorus"] * 3 and len({s["group"] for s in found}) == 1, found
    ana, updates = run_online(y, beats=beats)                   # annotated beats, delivered 0.1 s late
    found = _chorus_labels(ana.sections, choruses)
    assert [s["label"] for s in found] == ["chorus"] * 3 and len({s["group"] for s in found}) == 1, found
    shown = dashboard_labels(updates)
    for c in choruses:                                          # as each chorus ends, the dashboard says so
        assert [lab for at, lab in shown if at < c["end"]][-1] == "chorus", (c, shown)
    # the causal tracker's beats instead: found by the end of the stream
    ana, _ = run_online(y, tracker=True)
    assert [s["label"] for s in _chorus_labels(ana.sections, choruses)] == ["chorus"] * 3, ana.sections


def test_bench_sections_through_the_cli(tmp_path):
    out = tmp_path / "churn.json"
    clip = DATA / "sections" / "sargon_mindless_cut.flac"
    r = beatbus_cmd("bench", "sections", "silence", "tone", str(clip), "--loop", "2", "--minutes", "0.5",
                    "--json", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "relabel/min" in r.stdout and "dash/min" in r.stdout
    names = [ln.split()[0] for ln in r.stdout.splitlines()[2:]]
    assert names == ["sargon_mindless_cut.flac", "silence", "tone"], r.stdout
    doc = json.loads(out.read_text())
    assert doc["backend"] == "dsp" and doc["loop"] == 2 and doc["mix"] is False
    rows = {row["input"]: row for row in doc["rows"]}
    keys = {"minutes", "events_per_min", "tentative_per_min", "confirmed_per_min", "revised_per_min",
            "relabels_per_min", "dashboard_changes_per_min", "max_events_60s", "end_events", "rtf"}
    assert all(keys <= set(row) for row in rows.values())
    real = rows["sargon_mindless_cut.flac x2"]
    assert real["minutes"] == pytest.approx(2 * 63.4 / 60, abs=0.02) and real["events"] >= 4
    assert real["max_events_60s"] <= 24 and real["rtf"] > 0
    for name in ("silence", "tone"):
        assert rows[name]["minutes"] == pytest.approx(0.5) and rows[name]["events"] == 0
        assert rows[name]["end_events"] == 1                    # the one section, said once at the end
    r = beatbus_cmd("bench", "sections", "nowhere.flac", "--no-synthetic")
    assert r.returncode == 2 and "nowhere.flac: no such folder or file" in r.stderr
    assert "Traceback" not in r.stderr
