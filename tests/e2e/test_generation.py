"""A generation job through the API, run by `beatbus worker`, conditioned on the live source."""
from __future__ import annotations

import io
import json
import time
import urllib.request

import mido
import pytest

from .deployment import CLICK_BPM, SOURCE, http_json

pytestmark = pytest.mark.e2e

JOB_TIMEOUT_S = 90


def test_lstm_job_follows_the_live_tempo(stack):
    status, body = http_json("POST", f"{stack.api_url}/api/generate",
                             {"kind": "lstm", "bars": 4, "seed": 1, "source": SOURCE})
    assert status == 202, body
    job = json.loads(body)["generation_id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        status, body = http_json("GET", f"{stack.api_url}/api/status/{job}")
        state = json.loads(body).get("status") if status == 200 else None
        if state in ("finished", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state == "finished", body
    with urllib.request.urlopen(f"{stack.api_url}/api/download/{job}?format=mid", timeout=10) as r:
        midi = mido.MidiFile(file=io.BytesIO(r.read()))
    tempos = [mido.tempo2bpm(m.tempo) for track in midi.tracks for m in track if m.type == "set_tempo"]
    notes = [m for track in midi.tracks for m in track if m.type == "note_on" and m.velocity > 0]
    assert notes, "the MIDI file has no notes"
    assert tempos and abs(tempos[0] - CLICK_BPM) < 3, f"MIDI tempo {tempos}, live tempo {CLICK_BPM}"
