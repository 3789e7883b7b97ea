"""The metadata heuristic's section timeline, for any song length, tempo and meter."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from beatbus.api.song_plan import FORM, sections_for


@settings(max_examples=300, deadline=None)
@given(duration=st.floats(5.0, 3600.0), tempo=st.floats(30.0, 300.0), meter=st.integers(2, 12))
def test_sections_tile_the_song(duration, tempo, meter):
    plan = sections_for(duration=duration, tempo=tempo, meter=meter)
    assert plan[0].start == 0 and plan[-1].end == round(duration, 3)
    assert all(a.end == b.start for a, b in zip(plan, plan[1:]))         # contiguous, no gaps
    assert all(s.end > s.start and s.bars >= 1 for s in plan)
    bars = int(duration // (meter * 60.0 / tempo))
    if bars >= 8:
        assert [s.label for s in plan] == [label for label, _ in FORM]
        assert sum(s.bars for s in plan) == bars
    else:
        assert [s.label for s in plan] == ["verse"]
