"""The metadata heuristic's section timeline, for any song length, tempo and meter."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from beatbus.api.song_plan import FORM, FORMS, PHRASE_BARS, sections_for


@settings(max_examples=300, deadline=None)
@given(duration=st.floats(5.0, 3600.0), tempo=st.floats(30.0, 300.0), meter=st.integers(2, 12))
def test_sections_tile_the_song(duration, tempo, meter):
    plan = sections_for(duration=duration, tempo=tempo, meter=meter)
    assert plan[0].start == 0 and plan[-1].end == round(duration, 3)
    assert all(a.end == b.start for a, b in zip(plan, plan[1:]))         # contiguous, no gaps
    assert all(s.end > s.start and s.bars >= 1 for s in plan)
    bars = max(int(duration // (meter * 60.0 / tempo)), 1)
    assert sum(s.bars for s in plan) == bars
    if bars < 4 * PHRASE_BARS:
        assert [s.label for s in plan] == ["verse"]
        return
    # whole 4-bar phrases (the bars past the last phrase go to the last section); never a one-bar section
    assert all(s.bars % PHRASE_BARS == 0 for s in plan[:-1]) and plan[-1].bars >= PHRASE_BARS
    assert all(s.bars >= 2 * PHRASE_BARS for s in plan[:-1] if s.label in ("verse", "chorus"))
    assert [s.label for s in plan] in [[label for label, _ in form] for form in FORMS] + [["verse"]]
    if bars >= 52:
        assert [s.label for s in plan] == [label for label, _ in FORM]


def test_a_long_song_keeps_the_forms_proportions_in_whole_phrases():
    plan = sections_for(duration=208 * 2.0, tempo=120, meter=4)          # 208 bars: the form twice over
    assert [(s.label, s.bars) for s in plan] == [(label, 2 * bars) for label, bars in FORM]


def test_a_short_song_drops_sections_instead_of_shrinking_them_to_a_bar():
    # 20 bars at 120 BPM 4/4 (40 s): was 8 sections of 1-4 bars; now verse + chorus of whole phrases
    plan = sections_for(duration=40.0, tempo=120, meter=4)
    assert [(s.label, s.bars) for s in plan] == [("verse", 12), ("chorus", 8)]
    plan = sections_for(duration=60.0, tempo=120, meter=4)              # 30 bars: 7 phrases + 2 bars
    assert [(s.label, s.bars) for s in plan] == [("intro", 4), ("verse", 12), ("chorus", 8), ("outro", 6)]
