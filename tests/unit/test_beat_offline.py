"""Offline (Viterbi) beat decoding on synthetic activations: exact beats, meter, intros."""
from __future__ import annotations

import time

import numpy as np
import pytest

from beatbus.processors.beat.offline import OfflineDecoder, decode

FPS = 50.0


def pulses(n_frames: int, beat_frames: list[int], downbeat_frames: list[int] = (), level: float = 0.9) -> np.ndarray:
    """``[beat, downbeat]`` activations: a spike on each beat (downbeats in the second column)."""
    act = np.zeros((n_frames, 2))
    for f in beat_frames:
        act[f, 1 if f in downbeat_frames else 0] = level
    return act


def test_a_steady_120_bpm_train_decodes_exactly():
    beats = list(range(10, 1500, 25))  # 120 BPM at 50 fps: every 25 frames, 30 s
    out = decode(pulses(1500, beats, beats[::4]))
    assert [round(b.time * FPS) for b in out] == beats
    assert all(b.bpm == pytest.approx(120.0) for b in out)
    assert [b.is_downbeat for b in out] == [i % 4 == 0 for i in range(len(beats))]
    assert {b.meter for b in out} == {4} and [b.beat_in_bar for b in out[:5]] == [1, 2, 3, 4, 1]


def test_a_three_four_downbeat_pattern_gives_meter_three():
    beats = list(range(5, 1500, 30))  # 100 BPM
    out = decode(pulses(1500, beats, beats[::3]))
    assert {b.meter for b in out} == {3}
    assert [b.time for b in out if b.is_downbeat] == pytest.approx([f / FPS for f in beats[::3]])


def test_a_silent_intro_gets_no_beats_and_the_first_beat_is_the_first_played():
    beats = list(range(400, 1500, 25))  # 8 s of silence, then 120 BPM
    act = pulses(1500, beats, beats[::4])
    gate = np.arange(1500) >= 390
    out = decode(act, gate=gate)
    assert out[0].time == pytest.approx(8.0)
    assert [round(b.time * FPS) for b in out] == beats


def test_beats_without_music_like_onsets_around_them_are_dropped():
    # a network can pulse steadily on noise; without (coherent) onsets the stretch gets no beats
    beats = list(range(10, 1500, 25))
    onset = np.where(np.arange(1500) >= 750, 0.05, 0.0)  # onsets only in the second 15 s
    out = decode(pulses(1500, beats, beats[::4]), onset=onset)
    got = [round(b.time * FPS) for b in out]
    assert got == [f for f in beats if f >= got[0]] and 650 <= got[0] <= 750  # within a 2 s half-window
    assert len(decode(pulses(1500, beats, beats[::4]), onset=np.full(1500, 0.05))) == len(beats)


def test_a_missing_beat_is_filled_in_at_the_tempo():
    beats = list(range(10, 1500, 25))
    played = [f for i, f in enumerate(beats) if i != 30]  # one beat not played: the tempo carries it
    out = decode(pulses(1500, played, beats[::4]))
    assert [round(b.time * FPS) for b in out] == beats


def test_silence_and_no_frames_give_no_beats():
    assert decode(np.zeros((500, 2))) == []
    assert decode(np.zeros((0, 2))) == []


def test_thirty_seconds_decode_well_under_a_second():
    rng = np.random.default_rng(0)
    act = pulses(1500, list(range(10, 1500, 23)), level=0.6) + rng.uniform(0, 0.1, (1500, 2))
    dec = OfflineDecoder()
    dec.decode(act[:100])  # the state space is built once
    t0 = time.perf_counter()
    dec.decode(act)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("kwargs", [{"min_bpm": 200.0, "max_bpm": 100.0}, {"meters": ()}, {"observation_lambda": 1},
                                    {"act_floor": 0.0}, {"onset_window": 0.0}, {"min_onset": -1.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        OfflineDecoder(**kwargs)


def test_bad_activations_are_refused():
    with pytest.raises(ValueError, match="must be"):
        decode(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="gate length"):
        decode(np.zeros((10, 2)), gate=np.ones(9, dtype=bool))
    with pytest.raises(ValueError, match="onset length"):
        decode(np.zeros((10, 2)), onset=np.ones(9))
