"""Every registered effect over a whole played song: valid frames, deterministic, cheap.

The song goes through the real LedState on a simulated clock: beats with loud and quiet passages
and band levels, 4 s without beats (ambient), beats again with a build-up, its drop, a confirmed
section boundary and a breakdown.
"""
import time

import numpy as np
import pytest

from beatbus.consumers.led.effects import create_effect, load_effects
from beatbus.consumers.led.effects.scenes import SCENE_EFFECTS

from support.led_song import SongClock

PIXELS = 300
NEW = {"gradient", "scroll", "bands", "vu", "rain", "fire", "wavelength", "bar_counter", "drop_strobe", "glitter",
       "ripple", "meteor", "breathe", "mirror_pulse", "color_wave", "twinkle", "scenes"}
SEEDED = {"bands", "rain", "fire", "glitter", "twinkle"}
COST_LIMIT_S = 1e-3        # per frame of a 300-pixel strip (60 fps leaves 16.7 ms; they take well under 0.1 ms)


@pytest.fixture(scope="module")
def contexts():
    song = SongClock(bpm=120.0, meter=4)
    t0 = song.t0
    song.beats(0, 16)                                 # 0 .. 8 s
    song.beats(24, 40)                                # 12 .. 20 s (8 .. 12 s: no beat -> ambient)
    for i in range(400):                              # 20 IntensityEvents a second: swells, quiet, loud
        t = t0 + i * 0.05
        loud = 0.05 if 8.0 <= i * 0.05 < 12.0 else 0.5 + 0.5 * np.sin(i / 15.0) ** 2
        song.levels(t, float(loud), bass=float(loud), mids=0.5 * float(loud), highs=float(i % 5 == 0))
    song.transition("build-up", t0 + 13.0, t0 + 13.1, predicted=song.downbeat(7) + 0.2)
    song.transition("drop", song.downbeat(7), song.downbeat(7) + 0.25)
    song.section(song.downbeat(7), song.downbeat(9) + 0.3)
    song.transition("breakdown", t0 + 19.0, t0 + 19.3)
    return list(song.frames(t0 + 20.0, pixels=PIXELS))


def test_the_registry_holds_at_least_25_effects_with_the_new_ones():
    registry = load_effects()
    assert len(registry) >= 25 and NEW <= set(registry), sorted(NEW - set(registry))
    assert set(SCENE_EFFECTS) == set(registry) - {"scenes"}


def test_the_song_covers_beats_silence_drops_and_sections(contexts):
    assert any(c.ambient == 1.0 for c in contexts) and any(c.ambient == 0.0 and c.has_beat for c in contexts)
    assert contexts[-1].drop_time is not None and contexts[-1].section_boundary is not None
    assert any(c.drop_expected is not None for c in contexts) and contexts[-1].drop_expected is None  # breakdown
    assert {c.beat_in_bar for c in contexts} == {1, 2, 3, 4}


@pytest.mark.parametrize("name", sorted(load_effects()))
def test_every_effect_renders_valid_cheap_deterministic_frames(name, contexts):
    fx, twin = create_effect(name, PIXELS), create_effect(name, PIXELS)
    costs, frames = [], []
    for ctx in contexts:
        start = time.perf_counter()
        out = fx.render(ctx)
        costs.append(time.perf_counter() - start)
        assert out.shape == (PIXELS, 3) and out.dtype == np.float32, (out.shape, out.dtype)
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0 + 1e-6, (ctx.t, out.min(), out.max())
        np.testing.assert_array_equal(out, twin.render(ctx))                 # same inputs, same frame
        frames.append(out)
    assert np.median(costs) < COST_LIMIT_S, f"{name}: {np.median(costs) * 1e6:.0f} us per frame"
    lit = [f.max() for f in frames]
    assert max(lit) > 0.1, f"{name} never lights up"
    if name not in ("ambient", "drop_strobe"):                               # (drop_strobe: on or off)
        assert len({f.tobytes() for f in frames}) > 10, f"{name} hardly changes over a whole song"


def test_drop_strobe_strobes_from_the_foreseen_drop_for_its_beats_only(contexts):
    fx = create_effect("drop_strobe", PIXELS, {"beats": 8, "rate": 2})
    lit = [c.t for c in contexts if fx.render(c).max() > 0]
    drop = 1014.0                                      # the downbeat nearest the foreseen drop (bar 7)
    assert lit and min(lit) == pytest.approx(drop, abs=2e-3) and max(lit) < drop + 8 * 0.5
    assert len(lit) > 50                               # 16 flashes of 0.15 beat (a few frames each)


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_seeded_effects_draw_another_pattern_with_another_seed(name, contexts):
    a, b = create_effect(name, PIXELS, {"seed": 1}), create_effect(name, PIXELS, {"seed": 2})
    assert any(not np.array_equal(a.render(c), b.render(c)) for c in contexts[100:400])


@pytest.mark.parametrize("name", SCENE_EFFECTS)
def test_every_effect_can_be_a_scene_with_its_palette(name, contexts):
    fx = create_effect("scenes", 30, {"scene_1": name, "palette_1": "ice", **{f"scene_{i}": "none" for i in range(2, 7)}})
    assert fx.current == name and len(fx.scenes) == 1
    for ctx in contexts[:5]:
        assert fx.render(ctx.__class__(**{**{k: getattr(ctx, k) for k in ctx.__slots__}, "pixels": 30})).shape == (30, 3)
