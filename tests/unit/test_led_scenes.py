"""The scenes effect's timing: confirmed section boundaries, the phrase grid and drops, all on the downbeat.

Songs at 120 BPM in 4/4 (a bar is 2 s) go through the real LedState on a simulated clock
(``support.led_song``); the scenes effect renders every frame a device would.
"""
import numpy as np
import pytest

from beatbus.consumers.led.effects import create_effect
from beatbus.consumers.led.state import LedState
from beatbus.errors import ConfigError
from beatbus.schemas import BeatEvent, SectionEvent, TransitionEvent

from support.led_song import SongClock

CUT = {"crossfade_beats": 0.0}


def play(song: SongClock, config: dict, until_bar: int, bars: int = 40):
    song.beats(0, bars * song.meter)
    fx = create_effect("scenes", 16, {**CUT, **config})
    for ctx in song.frames(song.downbeat(until_bar) + 0.5, pixels=16):
        fx.render(ctx)
    return fx, [(round(c.time - song.t0, 3), c.reason, c.bar) for c in fx.changes]


def test_state_carries_confirmed_boundaries_foreseen_and_detected_drops():
    now = [100.0]
    st = LedState(clock=lambda: now[0])

    def section(status, start, system_time):
        return SectionEvent(source="s", start=start, system_time=system_time, emitted_at=now[0], label="verse",
                            confidence=0.5, status=status)

    def transition(kind, system_time, predicted=None):
        return TransitionEvent(source="s", kind=kind, timestamp=1.0, system_time=system_time, detected_time=1.0,
                               emitted_at=now[0], confidence=0.5, predicted_time=predicted and 2.0,
                               predicted_system_time=predicted)

    assert st.apply(section("confirmed", 0.0, 90.0)) and st.boundary is None        # the stream's start: no boundary
    st.apply(section("tentative", 5.0, 95.0))
    assert st.boundary is None
    st.apply(section("confirmed", 5.0, 95.0))
    st.apply(section("confirmed", 3.0, 93.0))                                       # an older section closing
    assert st.boundary == 95.0 and st.context(100.0, 4).section_boundary == 95.0
    st.apply(transition("build-up", 98.0, predicted=102.0))
    assert st.context(100.0, 4).drop_expected == 102.0
    st.apply(transition("drop", 102.1))
    ctx = st.context(103.0, 4)
    assert ctx.drop_time == 102.1 and ctx.drop_expected == 102.0
    st.apply(transition("breakdown", 110.0))
    assert st.drop_expected is None
    assert not st.apply(transition("build-up", 98.0, predicted=float("nan"))) and st.ignored == 1


def test_a_confirmed_boundary_changes_the_scene_on_the_next_downbeat_only():
    song = SongClock()
    song.section(song.downbeat(3), song.downbeat(4) + 1.1, status="tentative")      # not a change
    song.section(song.downbeat(3), song.downbeat(4) + 1.1)                          # confirmed mid bar 4
    fx, changes = play(song, {}, until_bar=12)
    assert changes == [(10.0, "section", 5)]                                        # bar 5's downbeat
    assert fx.current == "scroll"


def test_a_boundary_confirmed_before_the_scenes_started_is_no_news():
    song = SongClock()
    song.section(song.downbeat(1), song.t0 - 0.5)
    _, changes = play(song, {}, until_bar=6)
    assert changes == []


def test_the_crossfade_mixes_the_two_scenes_from_the_downbeat_onset():
    song = SongClock()
    song.beats(0, 32)
    song.section(song.downbeat(2), song.downbeat(3) + 0.5)
    cfg = {"scene_1": "gradient", "palette_1": "ice", "scene_2": "gradient", "palette_2": "fire",
           "crossfade_beats": 1.0, "bpm_sync": False}
    fx = create_effect("scenes", 8, cfg)
    old = create_effect("gradient", 8, {"color_palette": "ice", "bpm_sync": False})
    new = create_effect("gradient", 8, {"color_palette": "fire", "bpm_sync": False})
    mixes = {}
    for ctx in song.frames(song.downbeat(4) + 1.0, pixels=8):
        out = fx.render(ctx)
        a, b = old.render(ctx), new.render(ctx)
        for mix in (0.0, 0.5, 1.0):
            if np.allclose(out, a * (1 - mix) + b * mix, atol=1e-5):
                mixes.setdefault(mix, []).append(ctx.t - song.downbeat(4))
    assert max(mixes[0.0]) < 1e-3 and min(mixes[1.0]) >= 0.5 - 1e-3         # a beat (0.5 s) from the onset
    assert mixes[0.5] and all(abs(x - 0.25) < 0.01 for x in mixes[0.5])


def test_phrase_mode_changes_every_n_bars_from_the_last_section_start():
    song = SongClock()
    song.section(song.downbeat(6), song.downbeat(7) + 1.0)           # confirmed in bar 7: changes at bar 8
    _, changes = play(song, {"every_bars": 4}, until_bar=16)
    assert changes == [(8.0, "phrase", 4), (16.0, "section", 8), (20.0, "phrase", 10), (28.0, "phrase", 14)]
    song = SongClock()
    _, plain = play(song, {"every_bars": 8, "on_sections": False}, until_bar=24)
    assert [c[2] for c in plain] == [8, 16, 24] and {c[1] for c in plain} == {"phrase"}


def test_a_foreseen_drop_changes_on_its_nearest_downbeat_and_only_once():
    song = SongClock()
    drop = song.downbeat(7)
    song.transition("build-up", song.downbeat(6), song.downbeat(6) + 0.8, predicted=drop + 0.3)  # foreseen 0.3 s late
    song.transition("drop", drop, drop + 0.25)                                   # detected: the same drop
    song.section(drop, song.downbeat(9) + 0.2)                                   # its boundary, confirmed later
    _, changes = play(song, {}, until_bar=14)
    assert changes == [(14.0, "drop", 7)]


def test_an_unforeseen_drop_changes_on_the_next_downbeat_and_a_wrong_forecast_moves_with_the_new_one():
    song = SongClock()
    song.transition("drop", song.downbeat(5), song.downbeat(5) + 0.25)
    _, changes = play(song, {}, until_bar=10)
    assert changes == [(12.0, "drop", 6)]                                        # a bar late: the bar line holds
    song = SongClock()
    start = song.downbeat(4)
    song.transition("build-up", start, start + 1.1, predicted=song.downbeat(5))  # 1 bar foreseen ...
    song.transition("build-up", start, song.downbeat(5) + 0.5, predicted=song.downbeat(6))   # ... it was 2
    song.transition("drop", song.downbeat(6), song.downbeat(6) + 0.25)
    _, changes = play(song, {}, until_bar=10)
    assert changes == [(10.0, "drop", 5), (12.0, "drop", 6)]
    song = SongClock()
    song.transition("build-up", start, start + 1.1, predicted=song.downbeat(5))
    _, changes = play(song, {"on_drops": False}, until_bar=10)
    assert changes == []


def test_scene_slots_are_validated():
    with pytest.raises(ConfigError, match="every scene_N is none"):
        create_effect("scenes", 4, {f"scene_{i}": "none" for i in range(1, 7)})
    with pytest.raises(ConfigError, match="scene_1='scenes' must be one of"):
        create_effect("scenes", 4, {"scene_1": "scenes"})
    with pytest.raises(ConfigError, match="palette_2='plaid' must be one of"):
        create_effect("scenes", 4, {"palette_2": "plaid"})


def test_a_section_confirmed_just_before_a_foreseen_drop_waits_for_the_drop():
    song = SongClock()
    song.section(song.downbeat(3), song.downbeat(5) + 0.5)                       # due on bar 6 ...
    song.transition("build-up", song.downbeat(6) - 1.9, song.downbeat(5) + 1.2, predicted=song.downbeat(7))
    fx, changes = play(song, {"every_bars": 2}, until_bar=8)                     # (phrase due on bar 6 too)
    assert changes == [(4.0, "phrase", 2), (8.0, "phrase", 4), (14.0, "drop", 7)]
    assert fx._due_section is None                                                # taken by the drop


def test_phrase_mode_starts_over_when_the_bars_count_from_zero_again():
    song = SongClock()
    song.beats(0, 24)                                                            # bars 0-5, then a new stream
    t1 = song.downbeat(6)
    for k in range(24):
        t = t1 + k * song.period
        song.publish(t + song.delay, BeatEvent(
            source="default", timestamp=k * song.period, system_time=t, is_downbeat=k % 4 == 0, bpm=120.0,
            intensity=0.5, confidence=0.9, beat=k, beat_in_bar=k % 4 + 1, bar=k // 4, meter=4,
            next_beat_time=(k + 1) * song.period, next_beat_system_time=t + song.period, emitted_at=t))
    fx = create_effect("scenes", 8, {**CUT, "every_bars": 2})
    for ctx in song.frames(t1 + 11.0, pixels=8):
        fx.render(ctx)
    changes = [(round(c.time - song.t0, 3), c.bar) for c in fx.changes]
    assert changes == [(4.0, 2), (8.0, 4), (12.0, 6), (16.0, 2), (20.0, 4)]         # (bar 6: the old grid, extrapolated)
