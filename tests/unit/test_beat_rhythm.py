"""Whole-file rhythm summaries: the tempo curve bar by bar, tempo and meter of a span."""
from __future__ import annotations

import numpy as np
import pytest

from beatbus.processors.beat import Beat
from beatbus.processors.beat.rhythm import span_rhythm, tempo_curve


def beats_at(times, meter):
    return [Beat(time=float(t), is_downbeat=i % meter == 0, beat_in_bar=i % meter + 1, meter=meter, bpm=0.0,
                 confidence=1.0, next_beat_time=float(t) + 0.5, decided_at=float(t))
            for i, t in enumerate(times)]


def test_the_tempo_curve_follows_an_accelerando_bar_by_bar():
    # 8 bars of 4/4 speeding up from 100 to 140 BPM, one tempo per bar
    bpms = np.repeat(np.linspace(100, 140, 8), 4)
    times = np.concatenate([[0.0], np.cumsum(60.0 / bpms)])
    curve = tempo_curve(beats_at(times, 4))
    assert [t for t, _ in curve] == pytest.approx(times[::4][:8], abs=1e-3)
    assert [bpm for _, bpm in curve][:8] == pytest.approx(np.linspace(100, 140, 8), abs=0.05)


def test_tempo_and_meter_of_a_span():
    waltz = beats_at(np.arange(0, 30, 0.5), 3)           # 120 BPM in 3
    assert span_rhythm(waltz, 10.0, 20.0) == {"tempo": 120.0, "meter": 3}
    assert span_rhythm(waltz, 10.0, 10.9) == {"tempo": None, "meter": None}   # two beats: not enough
    assert tempo_curve(waltz[:1]) == []
