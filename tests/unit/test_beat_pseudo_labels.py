"""The confidence rule of ``beatbus label beats`` (``lab.train.label.confident_stretches``): steady,
heard, unambiguous beats are kept in stretches; gaps, tempo wobble, weak beats and a path at half the
tempo are not."""
from __future__ import annotations

import numpy as np
import pytest

from beatbus.lab.train.label import Rule, confident_stretches
from beatbus.processors.beat.tracker import Beat

FPS = 50.0


def _beats(times) -> list[Beat]:
    return [Beat(time=float(t), is_downbeat=i % 4 == 0, beat_in_bar=i % 4 + 1, meter=4, bpm=120.0, confidence=1.0,
                 next_beat_time=float(t) + 0.5, decided_at=100.0) for i, t in enumerate(times)]


def _activations(peaks, n_frames: int, height: float = 0.8) -> np.ndarray:
    act = np.full((n_frames, 2), 0.01)
    for t in peaks:
        act[int(round(t * FPS)), 0] = height
    return act


def test_a_steady_heard_track_is_kept_whole() -> None:
    t = np.arange(40) * 0.5 + 1.0
    keep, kept = confident_stretches(_beats(t), _activations(t, 1200))
    assert kept.all()
    assert keep == [(pytest.approx(0.75), pytest.approx(t[-1] + 0.25))]


def test_a_missing_stretch_of_beats_splits_and_short_runs_are_dropped() -> None:
    t = np.concatenate([np.arange(20) * 0.5 + 1.0, np.arange(10) * 0.5 + 20.0, np.arange(24) * 0.5 + 30.0])
    keep, kept = confident_stretches(_beats(t), _activations(t, 2500))
    assert len(keep) == 2  # the 10-beat run is under min_beats (16)
    assert not kept[20:30].any() and kept[:20].all() and kept[30:].all()
    assert keep[0][1] < 20.0 and keep[1][0] > 25.0


def test_weak_or_unsteady_or_half_tempo_beats_are_not_kept() -> None:
    t = np.arange(40) * 0.5 + 1.0
    assert not confident_stretches(_beats(t), _activations(t, 1200, height=0.1))[1].any()  # not heard
    rng = np.random.default_rng(0)
    wobbly = np.cumsum(0.5 * (1 + rng.choice([-0.12, 0.12], 40)))  # every interval 12 % off
    assert not confident_stretches(_beats(wobbly), _activations(wobbly, 1500))[1].any()
    # the decoder at half the tempo: strong beats halfway between its beats
    half = t[::2]
    assert not confident_stretches(_beats(half), _activations(t, 1200), Rule(min_beats=8))[1].any()
    # ... and on the off-beat: the beats it skipped are stronger than its own
    act = _activations(t, 1200, height=0.9) + _activations(t + 0.25, 1200, height=0.3) - 0.01
    assert not confident_stretches(_beats(t + 0.25), act)[1].any()
    assert confident_stretches(_beats(t), act)[1].all()


def test_too_few_beats_keep_nothing() -> None:
    t = np.arange(10) * 0.5
    assert confident_stretches(_beats(t), _activations(t, 400)) == ([], pytest.approx(np.zeros(10, bool)))
    assert confident_stretches([], np.zeros((10, 2)))[0] == []
