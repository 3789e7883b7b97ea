"""QualityGovernor (adaptive quality) on synthetic load sequences: no Redis, no clock."""
import random

import pytest

from beatbus.processors.beat.adaptive import Level, costs_for, level_named, levels_for
from beatbus.quality import QualityGovernor


def beat_governor(backend="beatnet", **kw):
    levels = levels_for(backend)
    return QualityGovernor(levels, costs_for(levels), **kw)

DT = 0.2        # one round: 200 ms of stream time


def run(gov, loads, t0=0.0, lags=None):
    """Feed ``loads`` (one per round); returns [(time, source, level)] of the decisions."""
    out = []
    for i, load in enumerate(loads):
        t = t0 + i * DT
        for d in gov.observe(t, load * DT, DT, lags(t) if lags else None):
            out.append((round(t, 1), d.source, d.level))
    return out


def gov3(**kw):
    # fixed costs (the arithmetic below), not the measured table
    g = QualityGovernor(("beatnet", "small", "dsp"), (0.144, 0.124, 0.078), **kw)
    for s in ("a", "b", "c"):
        g.add(s)
    return g


def test_levels_skip_backends_not_cheaper_than_the_configured_one():
    assert levels_for("beatnet") == ("beatnet", "small", "dsp", "dsp-4/4")
    assert levels_for("small") == ("small", "dsp", "dsp-4/4")
    assert levels_for("dsp") == ("dsp", "dsp-4/4")
    assert levels_for("hls") == ("hls", "small", "dsp", "dsp-4/4")      # unknown cost: the most expensive


def test_the_bottom_level_is_dsp_tracking_one_meter():
    bottom = level_named("dsp-4/4")
    assert (bottom.backend, dict(bottom.tracker)) == ("dsp", {"meters": (4,)})
    assert level_named("beatnet") == Level("beatnet", "beatnet")         # a configured backend: itself


def test_sustained_overload_degrades_newest_first_one_source_per_cooldown_down_to_the_cheapest():
    g = gov3()
    steps = run(g, [1.2] * 100)               # 20 s at 120 %
    # one source per decision (3 // 8 rounds up to 1); the projection needs both of its steps, and
    # it takes them at once: one restart, not one per level
    assert [(s, lv) for _, s, lv in steps] == [("c", 2), ("b", 2), ("a", 2)]
    times = [t for t, _, _ in steps]
    assert times[0] >= 2.0                     # held 2 s
    assert all(b - a >= 2.0 - 1e-9 for a, b in zip(times, times[1:]))   # cooldown (and a fresh hold)
    assert [g.name(s) for s in "abc"] == ["dsp", "dsp", "dsp"]
    assert run(g, [5.0] * 50, t0=30) == []     # never below the cheapest level


def test_load_and_excess_lag_are_the_window_means_over_many_short_rounds():
    # a stage with many sources runs hundreds of rounds a second; the governor keeps running sums
    rng = random.Random(7)
    g = gov3()
    rounds, t = [], 0.0
    for i in range(20_000):
        t += rng.uniform(0.0005, 0.004)
        busy, audio = rng.uniform(0.0, 0.005), rng.uniform(0.01, 0.02)     # load <= 0.5: no decision
        lag = rng.uniform(0.0, 0.02)
        assert g.observe(t, busy, audio, {"a": lag}) == []
        rounds.append((t, busy, audio))
        if i % 997 == 0 or i == 19_999:
            window = [r for r in rounds if r[0] >= t - g.window]
            assert g.load == pytest.approx(sum(r[1] for r in window) / sum(r[2] for r in window), rel=1e-9)
    assert 0.0 <= g.excess_lag <= 0.02


def test_short_overload_and_a_load_just_below_the_threshold_do_nothing():
    g = gov3()
    assert run(g, [2.0] * 3 + [0.2] * 20) == []          # smoothed over 3 s: over for 1.4 s only
    assert run(g, [0.84] * 200, t0=10) == []


def test_load_oscillating_around_the_threshold_does_not_flap():
    g = gov3()
    wave = [0.95, 0.95, 0.75, 0.75] * 150                  # 0.8 s period around 0.85: mean 0.85
    assert run(g, wave) == []
    g = gov3()
    steps = run(g, [0.9, 1.0] * 300)                        # over on average: degrade, ...
    assert steps
    # ... and a degraded processor whose load then sits at 0.7 neither degrades nor restores
    n = len(steps)
    assert run(g, [0.7] * 300, t0=100) == [] and len(steps) == n


def test_restores_only_when_the_projected_load_fits_after_a_hold():
    g = gov3()
    run(g, [1.2] * 11)                                      # c -> dsp at 2 s (both steps at once)
    assert (g.level("c"), g.level("b")) == (2, 0)
    # projected after restoring c to small: load * (2*.144 + .124) / (2*.144 + .078) = load * 1.126
    assert run(g, [0.56] * 200, t0=10) == []                # 0.63 > 0.7 * 0.85 = 0.595: stays
    steps = run(g, [0.5] * 120, t0=60)                      # 0.563 fits
    assert [(s, lv) for _, s, lv in steps] == [("c", 1), ("c", 0)]
    assert steps[0][0] >= 70.0 and steps[1][0] - steps[0][0] >= 10.0     # 10 s holds
    assert run(g, [0.5] * 100, t0=100) == []                # all at level 0


def test_restore_order_is_the_reverse_of_degrading():
    g = gov3()
    run(g, [1.2] * 22)                                       # c -> 2 at 2.0 s, b -> 2 at 4.2 s
    assert [g.level(s) for s in "abc"] == [0, 2, 2]
    steps = run(g, [0.1] * 400, t0=10)                       # restores: one level at a time
    assert [(s, lv) for _, s, lv in steps] == [("b", 1), ("b", 0), ("c", 1), ("c", 0)]


def test_a_growing_lag_is_overload_a_constant_or_shrinking_one_is_not():
    g = gov3()
    assert run(g, [0.1] * 100, lags=lambda t: {"a": 3.0, "b": 0.1}) == []      # another host's clock
    assert g.excess_lag == 0.0
    g = gov3()                                  # a new owner catching up from a checkpoint
    assert run(g, [0.1] * 100, t0=20, lags=lambda t: {"a": max(0.0, 10 - (t - 20))}) == []
    steps = run(g, [0.7] * 30, t0=50, lags=lambda t: {"b": 0.6 + 0.3 * (t - 50)})
    assert steps and steps[0][1:] == ("c", 1)


def test_an_idle_stage_is_not_degraded_for_a_lag_from_upstream():
    """A broker outage: no audio for 5 s, then the backlog caught up in a few seconds, the stage nearly
    idle throughout (a single source, 3 % load): its lag is the outage's, and a cheaper level would
    not shorten it."""
    g = gov3()
    assert run(g, [0.03] * 20, lags=lambda t: {"a": 0.05}) == []
    assert run(g, [0.03] * 50, t0=20, lags=lambda t: {"a": 0.05 + (t - 20)}) == []          # the outage
    assert run(g, [0.03] * 40, t0=25, lags=lambda t: {"a": max(0.05, 5.05 - 2.0 * (t - 25))}) == []


def test_sources_come_and_go_and_a_dsp_configuration_goes_down_one_meter_only():
    g = gov3()
    g.remove("c")
    assert [(s, lv) for _, s, lv in run(g, [1.2] * 12)] == [("b", 2)]
    g = beat_governor("dsp")
    g.add("a")
    assert [(s, lv) for _, s, lv in run(g, [9.0] * 100)] == [("a", 1)]        # dsp-4/4, then nothing
    with pytest.raises(ValueError):
        beat_governor(high=0)
    with pytest.raises(ValueError):
        QualityGovernor(("full", "half"), (1.0,))        # a cost per level


def test_one_setting_name_across_toml_env_and_flags(tmp_path):
    from beatbus.config import load_settings

    assert load_settings({}, env={}).adaptive is True                        # on by default
    toml = tmp_path / "b.toml"
    toml.write_text("adaptive = false\nadaptive_high_load = 0.5\n")
    s = load_settings({}, config_file=toml, env={})
    assert (s.adaptive, s.adaptive_high_load) == (False, 0.5)
    assert load_settings({}, config_file=toml, env={"BEATBUS_ADAPTIVE": "true"}).adaptive is True
    assert load_settings({"adaptive": False}, env={"BEATBUS_ADAPTIVE": "true"}).adaptive is False


def test_a_lag_above_its_floor_is_overload_before_the_load_is():
    """Near saturation the load sits under the threshold while the rounds, and the latency, grow:
    a lag 80 ms above the source's usual one degrades; one 20 ms above does not."""
    g = gov3()
    assert run(g, [0.7] * 50, lags=lambda t: {"a": 1.03, "b": 0.03}) == []          # the floors
    assert run(g, [0.7] * 100, t0=10, lags=lambda t: {"a": 1.05, "b": 0.05}) == []
    steps = run(g, [0.7] * 30, t0=30, lags=lambda t: {"a": 1.03, "b": 0.13})
    assert steps and steps[0][1:] == ("c", 1) and steps[0][0] >= 32.0               # held 2 s
    # a restore waits for the lag too: the load fits but the excess stays at the budget's half
    assert run(g, [0.3] * 50, t0=40, lags=lambda t: {"b": 0.12}) == []
    assert run(g, [0.3] * 100, t0=80, lags=lambda t: {"b": 0.05})[0][1:] == ("c", 0)


def test_the_least_recently_watched_source_degrades_first_and_the_watched_one_comes_back_first():
    g = QualityGovernor(("full", "half", "shed"), (1.0, 0.75, 0.1))
    for s in ("a", "b", "c"):
        g.add(s)
    g.watched = {"c": 100.0, "a": 50.0}         # c is on a dashboard now, a was a while ago, b never
    steps = run(g, [1.2] * 60)
    assert [(s, lv) for _, s, lv in steps][:2] == [("b", 2), ("a", 2)]
    assert [g.name(s) for s in "ab"] == ["shed", "shed"]
    g.watched = {"a": 200.0}                     # now a is watched: it comes back first
    back = run(g, [0.05] * 400, t0=100)
    assert back[0][1:] == ("a", 1 if g.level("c") == 0 else back[0][2])
    assert [s for _, s, _ in back][:2] == ["a", "a"]


def test_far_over_capacity_several_sources_step_at_once_up_to_an_eighth():
    g = QualityGovernor(("full", "cheap"), (1.0, 0.5))
    for i in range(40):
        g.add(f"s{i:02d}")
    steps = run(g, [1.3] * 11)                  # 2 s over: one decision
    assert len(steps) == 5 and len({t for t, _, _ in steps}) == 1      # 40 // 8 at once
    assert [s for _, s, _ in steps] == ["s39", "s38", "s37", "s36", "s35"]
    # just over, with a large saving per step: as many as the projection needs, 9 of a possible 10
    g = QualityGovernor(("full", "cheap"), (1.0, 0.01))
    for i in range(80):
        g.add(f"s{i:02d}")
    assert run(g, [0.8] * 20) == []                        # under the threshold: nothing
    assert len(run(g, [0.86] * 11, t0=10)) == 9             # 0.86 x (80 - 0.99 k) / 80 <= 0.9 x 0.85


def test_far_over_capacity_a_source_moves_straight_to_the_level_the_projection_needs():
    """The beat ladder, 40 sources at 3x capacity: one decision moves 5 sources (an eighth), each
    straight to the cheapest level: one decision (and one processor restart) per source, not one per level."""
    g = beat_governor("beatnet")
    for i in range(40):
        g.add(f"s{i:02d}")
    steps = run(g, [3.0] * 11)                  # 2 s over: one decision
    assert [(s, lv) for _, s, lv in steps] == [(f"s{i}", 3) for i in range(39, 34, -1)]
