"""`beatbus bench load --adaptive both`: one row with the processor's adaptive quality on, one off."""
from __future__ import annotations

import json

from support.procs import beatbus_cmd


def test_bench_load_runs_each_count_with_and_without_adaptation_and_reports_the_levels(tmp_path):
    out = tmp_path / "load.json"
    r = beatbus_cmd("bench", "load", "--sources", "2", "--duration", "4", "--warmup", "3", "--adaptive", "both",
                    "--json", str(out), timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| keeps up | adaptive | levels 0/1/2 at the end |" in r.stdout
    assert "quality levels at the end: 2 sources at 0 (beatnet)" in r.stdout
    on, off = json.loads(out.read_text())
    assert (on["adaptive"], off["adaptive"]) == (True, False)
    # two sources are far from loading a processor: nothing degrades
    assert on["quality_levels"] == off["quality_levels"] == [2, 0, 0]
    assert on["beats"] > 0 and off["beats"] > 0
