"""The metadata-only song estimate: plausible plans, validation naming the field, audio wins."""
import math

import pytest

from beatbus.errors import ConfigError
from beatbus.processors.structure import plan_from_metadata, prefer_audio

LABELS = {"intro", "verse", "chorus", "bridge", "outro"}


@pytest.mark.parametrize("duration, tempo, energy, dance", [
    (210.0, 120.0, 0.8, 0.75), (95.0, 72.0, 0.3, 0.2), (45.0, 174.0, 0.9, 0.9), (420.0, 128.0, 0.6, 0.8),
    (12.0, 90.0, 0.5, 0.5), (3.0, 60.0, 0.1, 0.1),
])
def test_plans_cover_the_song_with_whole_bars(duration, tempo, energy, dance):
    p = plan_from_metadata("Song", "Artist", duration, tempo, energy, dance)
    assert p["tempo"] == tempo and p["beat_interval"] == pytest.approx(60 / tempo, abs=1e-6)
    assert p["bar_duration"] == pytest.approx(4 * 60 / tempo, abs=1e-6) and p["meter"] == 4
    secs = p["sections"]
    assert secs[0]["start"] == 0 and secs[-1]["end"] == pytest.approx(duration, abs=1e-3)
    assert all(a["end"] == pytest.approx(b["start"], abs=1e-3) for a, b in zip(secs, secs[1:]))
    assert all(s["label"] in LABELS and s["duration"] > 0 and 0 <= s["energy"] <= 1 for s in secs)
    for s in secs[:-1]:                                  # every section but the last is whole bars
        assert s["duration"] / p["bar_duration"] == pytest.approx(round(s["duration"] / p["bar_duration"]), abs=1e-3)
    if duration >= 60:
        labels = [s["label"] for s in secs]
        assert labels[0] == "intro" and labels[-1] == "outro" and labels.count("chorus") >= 1
        chorus = max(s["energy"] for s in secs if s["label"] == "chorus")
        assert chorus == max(s["energy"] for s in secs)
    assert p["source"] == "metadata" and p["confidence"] < 0.5


def test_longer_songs_get_longer_forms_and_energy_shortens_the_intro():
    short = plan_from_metadata("a", "b", 60, 120, 0.5, 0.5)["sections"]
    long = plan_from_metadata("a", "b", 230, 120, 0.5, 0.5)["sections"]
    assert len(long) > len(short) and "bridge" in [s["label"] for s in long]
    calm = plan_from_metadata("a", "b", 200, 120, 0.2, 0.5)["sections"][0]
    loud = plan_from_metadata("a", "b", 200, 120, 0.9, 0.5)["sections"][0]
    assert loud["duration"] < calm["duration"]


@pytest.mark.parametrize("field, value", [
    ("tempo", 0), ("tempo", -120), ("tempo", 1000), ("energy", 1.5), ("energy", -0.1), ("danceability", 2),
    ("duration", -10), ("duration", 0), ("tempo", math.nan), ("energy", "high"), ("loudness", 12),
    ("valence", -1), ("name", ""), ("artist", None), ("tempo", True),
])
def test_out_of_range_values_are_rejected_naming_the_field(field, value):
    kw = dict(name="Song", artist="Artist", duration=180.0, tempo=120.0, energy=0.5, danceability=0.5)
    kw[field] = value
    with pytest.raises(ConfigError, match=f"^{field}="):
        plan_from_metadata(**kw)
    with pytest.raises(ValueError):                     # ConfigError is a ValueError for API callers
        plan_from_metadata(**kw)


def test_audio_analysis_wins_when_present():
    plan = plan_from_metadata("a", "b", 100, 120, 0.5, 0.5)
    assert prefer_audio(plan, None) is plan
    only_unknown = {"sections": [{"start": 0, "end": 100, "label": "unknown", "confidence": 0.2}]}
    assert prefer_audio(plan, only_unknown)["source"] == "metadata"
    audio = {"tempo": 125.0, "sections": [{"start": 0.0, "end": 40.0, "label": "verse", "confidence": 0.6},
                                          {"start": 40.0, "end": 100.0, "label": "chorus", "confidence": 0.8}]}
    out = prefer_audio(plan, audio)
    assert out["source"] == "audio" and out["tempo"] == 125.0 and out["beat_interval"] == pytest.approx(0.48)
    assert [s["label"] for s in out["sections"]] == ["verse", "chorus"] and out["sections"][1]["duration"] == 60.0
    assert out["name"] == "a" and plan["source"] == "metadata"            # the input is not modified
