"""Effects: one registry, schemas that document themselves, expected pixels for given beat phases."""
import numpy as np
import pytest

from beatbus.consumers.led import palettes
from beatbus.consumers.led.effects import EFFECTS, Effect, create_effect, get_effect, load_effects
from beatbus.consumers.led.params import Param, validate_config
from beatbus.consumers.led.state import RenderContext
from beatbus.errors import ConfigError

EXPECTED = {"beat_flash", "downbeat_pulse", "chase", "bar_pattern", "section_colors", "energy", "spectrum",
            "strobe", "ambient"}
SEED_KEYS = {"beat_sensitivity", "downbeat_emphasis", "bpm_sync", "intensity_curve", "color_palette"}
PERIOD = 0.5


def ctx(**kw) -> RenderContext:
    """A frame context at 120 BPM; by default the onset of a predicted downbeat."""
    base = dict(t=1000.0, pixels=12, bpm=120.0, period=PERIOD, beat=8, phase=0.0, beat_in_bar=1, meter=4, bar=2,
                flash_age=0.0, confidence=0.9, intensity=0.6)
    base.update(kw)
    if "phase" in kw and "flash_age" not in kw:
        base["flash_age"] = kw["phase"] * PERIOD
    return RenderContext(**base)


def test_registry_holds_every_effect_with_documented_snake_case_schemas():
    registry = load_effects()
    assert EXPECTED <= set(registry)
    for name, cls in registry.items():
        schema = cls.schema()
        assert SEED_KEYS <= set(schema), name
        assert cls.description, name
        for key, p in schema.items():
            assert key == key.lower() and " " not in key and "colour" not in key and "-" not in key
            assert p.description
            if p.kind in (int, float):
                assert p.min is not None and p.max is not None and p.min <= p.default <= p.max, (name, key)
            elif p.kind is str:
                assert p.choices and p.default in p.choices, (name, key)
        assert cls.validate({}) == {k: p.default for k, p in schema.items()}


def test_schema_keys_are_enforced_when_an_effect_is_defined():
    with pytest.raises(ConfigError, match="snake_case"):
        class BadCase(Effect):
            CONFIG_SCHEMA = {"decayTime": Param(0.5, "x", 0.0, 1.0)}
    with pytest.raises(ConfigError, match="color"):
        class BadSpelling(Effect):
            CONFIG_SCHEMA = {"colour_shift": Param(0.5, "x", 0.0, 1.0)}
    with pytest.raises(ConfigError, match="min and a max"):
        class NoRange(Effect):
            CONFIG_SCHEMA = {"speed": Param(0.5, "x")}
    assert not {"bad_case", "bad_spelling", "no_range", "test_led_effects"} & set(EFFECTS)


def test_config_validation_converts_and_rejects():
    cls = get_effect("beat_flash")
    cfg = cls.validate({"decay": "0.25", "bpm_sync": "false", "color_palette": "fire"})
    assert cfg["decay"] == 0.25 and cfg["bpm_sync"] is False and cfg["color_palette"] == "fire"
    with pytest.raises(ConfigError, match="unknown key 'decai'"):
        cls.validate({"decai": 0.2})
    with pytest.raises(ConfigError, match="decay=2.0 is out of range 0.05 .. 1"):
        cls.validate({"decay": 2.0})
    with pytest.raises(ConfigError, match="color_palette='plaid' must be one of"):
        cls.validate({"color_palette": "plaid"})
    with pytest.raises(ConfigError, match="intensity_curve"):
        cls.validate({"intensity_curve": "cubic"})
    with pytest.raises(ConfigError, match="must be a number"):
        validate_config({"n": Param(3, "n", 1, 5)}, {"n": "three"}, "x")
    with pytest.raises(ConfigError, match="unknown effect 'sparkle'"):
        get_effect("sparkle")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_effect_renders_valid_frames_in_every_situation(name):
    effect = create_effect(name, 12)
    for c in (ctx(), ctx(phase=0.5, beat_in_bar=2), ctx(flash_age=None), ctx(has_beat=False, flash_age=None),
              ctx(section="chorus", intensity=1.0, bass=1.0, mids=0.5, highs=0.2), ctx(t=1e9, ambient=1.0)):
        out = effect.render(c)
        assert out.shape == (12, 3) and out.dtype == np.float32
        assert np.all(out >= 0) and np.all(out <= 1.0 + 1e-6)


def test_beat_flash_is_full_at_phase_zero_and_decays_after():
    fx = create_effect("beat_flash", 12, {"decay": 0.5, "intensity_amount": 0, "downbeat_emphasis": 0})
    color = palettes.stop("rainbow", 8)
    np.testing.assert_allclose(fx.render(ctx(phase=0.0)), np.tile(color, (12, 1)), atol=1e-6)
    np.testing.assert_allclose(fx.render(ctx(phase=0.25)), np.tile(color * 0.25, (12, 1)), atol=1e-6)  # (1-.5)^2
    assert not fx.render(ctx(phase=0.5)).any() and not fx.render(ctx(phase=0.9)).any()
    assert not fx.render(ctx(flash_age=None)).any()                   # onset not predicted: no late flash
    assert not fx.render(ctx(confidence=0.1)).any()                   # below 1 - beat_sensitivity
    # the color advances with the beat
    np.testing.assert_allclose(fx.render(ctx(beat=9, beat_in_bar=2))[0], palettes.stop("rainbow", 9), atol=1e-6)


def test_beat_flash_downbeat_emphasis_and_intensity():
    fx = create_effect("beat_flash", 4, {"intensity_amount": 0, "downbeat_emphasis": 1.0, "color_palette": "fire"})
    down, other = fx.render(ctx()), fx.render(ctx(beat_in_bar=3))
    red = palettes.stop("fire", 8)
    np.testing.assert_allclose(down[0], red + (1 - red) * 0.5, atol=1e-6)      # whiter
    np.testing.assert_allclose(other[0], palettes.stop("fire", 8) * 0.4, atol=1e-6)  # 1 - 0.6 * emphasis
    loud = create_effect("beat_flash", 4, {"intensity_amount": 1.0, "downbeat_emphasis": 0})
    assert loud.render(ctx(intensity=0.25))[0].max() == pytest.approx(0.25 * palettes.stop("rainbow", 8).max())
    logc = create_effect("beat_flash", 4, {"intensity_amount": 1.0, "downbeat_emphasis": 0, "intensity_curve": "log"})
    assert logc.render(ctx(intensity=0.25))[0].max() > loud.render(ctx(intensity=0.25))[0].max()


def test_chase_moves_one_strip_per_cycle_of_beats():
    fx = create_effect("chase", 40, {"pulses": 1, "beats_per_cycle": 4, "width": 0.05, "flash_boost": 0})
    peaks = [int(np.argmax(fx.render(ctx(pixels=40, beat=b, phase=0.0)).sum(axis=1))) for b in (0, 1, 2)]
    assert peaks[0] in (0, 39) and peaks[1] in (9, 10) and peaks[2] in (19, 20)   # a quarter strip per beat
    halfway = int(np.argmax(fx.render(ctx(pixels=40, beat=1, phase=0.5)).sum(axis=1)))
    assert halfway in (14, 15)
    back = create_effect("chase", 40, {"pulses": 1, "width": 0.05, "flash_boost": 0, "direction": "backward"})
    assert int(np.argmax(back.render(ctx(pixels=40, beat=1)).sum(axis=1))) in (29, 30)


def test_bar_pattern_alternates_odd_and_even_beats_and_changes_every_n_bars():
    fx = create_effect("bar_pattern", 8, {"block": 2, "every_n_bars": 2, "downbeat_emphasis": 0})
    def lit(c):
        return fx.render(c).sum(axis=1) > 0
    assert lit(ctx(pixels=8, bar=0)).all()                                        # downbeat: everything
    assert lit(ctx(pixels=8, bar=0, beat_in_bar=3)).tolist() == [1, 1, 0, 0, 1, 1, 0, 0]   # odd beats
    assert lit(ctx(pixels=8, bar=0, beat_in_bar=2)).tolist() == [0, 0, 1, 1, 0, 0, 1, 1]   # even beats
    assert lit(ctx(pixels=8, bar=2, beat_in_bar=3)).tolist() == [0, 0, 1, 1, 0, 0, 1, 1]   # swapped after 2 bars
    c0 = fx.render(ctx(pixels=8, bar=1, beat_in_bar=1))[0]
    c1 = fx.render(ctx(pixels=8, bar=2, beat_in_bar=1))[0]
    np.testing.assert_allclose(c0, palettes.stop("rainbow", 0), atol=1e-6)
    np.testing.assert_allclose(c1, palettes.stop("rainbow", 1), atol=1e-6)


def test_downbeat_pulse_floods_on_downbeats_and_ticks_otherwise():
    fx = create_effect("downbeat_pulse", 10, {"tick_width": 0.2, "bar_decay": 2.0})
    assert (fx.render(ctx(pixels=10)).sum(axis=1) > 0).all()
    # one beat later the flood is at (1 - 1/2)^2 = 1/4, the tick lights only the center
    later = fx.render(ctx(pixels=10, t=1000.5, beat=9, beat_in_bar=2, phase=0.0))
    assert later[0].max() == pytest.approx(0.25 * palettes.stop("rainbow", 2).max(), abs=1e-5)
    assert later[5].max() > later[0].max()
    fresh = create_effect("downbeat_pulse", 10, {"tick_width": 0.2})
    tick = fresh.render(ctx(pixels=10, beat_in_bar=2)).sum(axis=1) > 0
    assert tick.tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]


def test_section_colors_follow_the_section_and_crossfade():
    fx = create_effect("section_colors", 6, {"crossfade_s": 2.0, "base_level": 1.0, "pulse": 0.0, "bpm_sync": False})
    verse = fx.render(ctx(pixels=6, t=0.0, section="verse"))
    np.testing.assert_allclose(verse, palettes.sample("forest", (np.arange(6) + 0.5) / 6), atol=1e-6)
    mid = fx.render(ctx(pixels=6, t=1.0, section="chorus"))                          # changed at t=1
    half = fx.render(ctx(pixels=6, t=2.0, section="chorus"))
    x = (np.arange(6) + 0.5) / 6 + 0.2
    np.testing.assert_allclose(mid, palettes.sample("forest", x - 0.1), atol=1e-6)   # crossfade starts at 0
    np.testing.assert_allclose(half, 0.5 * palettes.sample("fire", x) + 0.5 * palettes.sample("forest", x),
                               atol=1e-6)
    unknown = create_effect("section_colors", 6, {"color_palette": "ice", "pulse": 0.0, "base_level": 1.0})
    np.testing.assert_allclose(unknown.render(ctx(pixels=6, section="unknown", phase=0.0, beat=0)),
                               palettes.sample("ice", (np.arange(6) + 0.5) / 6), atol=1e-6)


def test_spectrum_bars_follow_the_bands():
    fx = create_effect("spectrum", 30, {"smoothing_s": 0.0})
    lit = fx.render(ctx(pixels=30, bass=1.0, mids=0.0, highs=0.5)).sum(axis=1) > 0
    assert lit[:10].all() and not lit[10:20].any() and lit[20:25].all() and not lit[25:].any()


def test_strobe_strobes_on_the_grid_in_high_energy_sections_only():
    fx = create_effect("strobe", 4, {"rate": 2, "duty": 0.3, "energy_threshold": 1.0})
    def on(**kw):
        return fx.render(ctx(pixels=4, **kw)).max() > 0.99
    assert on(section="chorus", phase=0.0) and on(section="chorus", phase=0.55)
    assert not on(section="chorus", phase=0.4) and not on(section="chorus", phase=0.9)
    assert fx.render(ctx(pixels=4, section="verse")).max() == pytest.approx(0.4)      # calm pulse
    assert not on(section="verse", intensity=0.95)
    loud = create_effect("strobe", 4, {"energy_threshold": 0.9})
    assert loud.render(ctx(pixels=4, section="verse", intensity=0.95)).max() > 0.99


def test_energy_maps_loudness_to_brightness_through_the_curve():
    lin = create_effect("energy", 5, {"smoothing_s": 0.0, "beat_boost": 0.0, "color_palette": "white"})
    assert lin.render(ctx(pixels=5, intensity=0.5)).max() == pytest.approx(0.5)
    exp = create_effect("energy", 5, {"smoothing_s": 0.0, "beat_boost": 0.0, "color_palette": "white",
                                      "intensity_curve": "exp"})
    assert exp.render(ctx(pixels=5, intensity=0.5)).max() == pytest.approx((10 ** 0.5 - 1) / 9)
    meter = create_effect("energy", 10, {"smoothing_s": 0.0, "beat_boost": 0.0, "mode": "meter"})
    assert (meter.render(ctx(pixels=10, intensity=0.5)).sum(axis=1) > 0).tolist() == [1] * 5 + [0] * 5


def test_ambient_is_dim_and_drifts_slowly():
    fx = create_effect("ambient", 20)
    a, b = fx.render(ctx(pixels=20, t=100.0)), fx.render(ctx(pixels=20, t=100.1))
    assert 0 < a.max() <= 0.25 + 1e-6
    assert np.abs(a - b).max() < 0.01
