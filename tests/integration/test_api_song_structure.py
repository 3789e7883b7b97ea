"""An uploaded song's plan has the sections `beatbus analyze --sections` finds (issue #18): one structure
analysis behind two entry points, each run as a user runs it (the real `beatbus api` process and the
real CLI), and rhythm mode plays the plan it answers."""
from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from beatbus.consumers.trigger.patterns import PatternBook
from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.api import api_command
from support.paths import BEATS_DIR, DATA
from support.procs import beatbus_cmd, wait_for

SONG = DATA / "sections" / "sargon_mindless_cut.flac"       # 63 s, annotated sections that repeat
NO_REPEAT = BEATS_DIR / "gtzan_pop_00000.flac"                 # the 19 s pop clip: nothing repeats


@pytest.fixture(scope="module")
def api(broker, tmp_path_factory):
    with ReferenceReceiver() as rx:
        cmd, url = api_command(broker.url, rx.url, tmp_path_factory.mktemp("api") / "api.log")
        with httpx.Client(base_url=url, trust_env=False, timeout=300) as client:
            yield client, rx
        rc = cmd.stop()
    assert rc == 0 and "Traceback" not in cmd.stderr(), cmd.stderr()


@pytest.mark.parametrize("path, labelled", [(SONG, True), (NO_REPEAT, False)], ids=["song", "no-repetition"])
def test_uploaded_song_has_the_sections_of_analyze_sections(api, bus, path, labelled):
    client, rx = api
    r = client.post("/api/analyze-song", content=path.read_bytes(), headers={"content-type": "audio/flac"})
    assert r.status_code == 200, r.text
    plan = r.json()
    cli = beatbus_cmd("analyze", str(path), "--sections", "--json", timeout=300)
    assert cli.returncode == 0, cli.stderr
    want = orjson.loads(cli.stdout)["sections"]
    got = plan["sections"]
    assert plan["method"] == "audio" and [s["label"] for s in got] == [s["label"] for s in want], (got, want)
    assert np.allclose([(s["start"], s["end"]) for s in got], [(s["start"], s["end"]) for s in want], atol=0.01)
    # the cases are what they claim: labels where the song repeats, unknown (not a template) where nothing does
    assert ("unknown" not in {s["label"] for s in got}) if labelled else {s["label"] for s in got} == {"unknown"}
    bar_s = plan["meter"] * 60.0 / plan["tempo"]
    book = PatternBook()
    assert all(s["bars"] == round((s["end"] - s["start"]) / bar_s) for s in got), got
    assert all(s["pattern"] == book.pattern_for(s["label"]) for s in got), got

    # rhythm mode takes the plan as it is (no live source: it plays the plan's sections)
    rx.clear()
    r = client.post("/api/start-rhythm-mode", json={"song_data": plan, "duration": 2})
    assert r.status_code == 200, r.text
    try:
        assert wait_for(lambda: rx.received(), timeout=10), "rhythm mode posted no trigger"
        played = {x["body"]["error_type"] for x in rx.received()}
        assert played <= {s["pattern"] for s in got if s["start"] < 2.5}, (played, got)
    finally:
        client.post("/api/stop-rhythm-mode")
