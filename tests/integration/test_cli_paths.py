"""The first commands of the README, run as a user runs them, checked against the annotations.

`beatbus run FILE` (real time) and `beatbus analyze FILE --json` must find the annotated beats,
not only print something beat-shaped; `beatbus analyze FILE --sections --json` must cover the
file with labelled sections whose boundaries land near the annotated ones. Default backend
(beatnet), as a newcomer runs them.
"""
from __future__ import annotations

import json
import re
import subprocess

import mir_eval
import numpy as np
import pytest
import soundfile as sf

from support.paths import DATA
from support.procs import beatbus_cmd

SONG = DATA / "beats" / "gtzan_blues_00002.flac"      # default backend: F 1.00 on it (both paths)
SECTIONS_SONG = DATA / "sections" / "sargon_mindless_cut.flac"
BEAT_F_FLOOR = 0.9          # measured 1.00; a half-beat phase or a tempo-octave error scores < 0.5
SECTION_LABELS = {"intro", "verse", "chorus", "bridge", "outro"}     # README, Sections


def _beat_f(estimated: list[float]) -> float:
    """mir_eval beat F-measure (+/-70 ms) against the annotation beside SONG, 5 s trimmed as in the README."""
    reference = np.loadtxt(SONG.with_suffix(".beats"), ndmin=2)[:, 0]
    trim = mir_eval.beat.trim_beats
    return mir_eval.beat.f_measure(trim(reference), trim(np.asarray(estimated, float)))


def test_run_file_in_real_time_prints_the_annotated_beats():
    r = beatbus_cmd("run", str(SONG), timeout=240)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    # one line per beat: "   1.42s    1.2   157.5 BPM  conf 0.09  ...", then the end-of-stream line
    beat_lines = [line for line in r.stdout.splitlines() if " BPM " in line]
    times = [float(line.split()[0].rstrip("s")) for line in beat_lines]
    assert "end of stream" in r.stdout and times == sorted(times), r.stdout[-1000:]
    f = _beat_f(times)
    assert f >= BEAT_F_FLOOR, f"run {SONG.name}: beat F {f:.3f} < {BEAT_F_FLOOR}"


def test_run_stopped_by_duration_ends_the_stream_for_every_reader(redis_server):
    """Stopped before the file's end, the pipeline still ends its streams (producer first, its end marker
    through the processor): a clock or LED daemon joined to the same broker sees the end too."""
    r = beatbus_cmd("run", str(SONG), "--duration", "6", "--backend", "dsp", env={"REDIS_URL": redis_server.url},
                    timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    beats = sum(" BPM " in line for line in r.stdout.splitlines())
    assert beats >= 3 and re.fullmatch(rf"-- default: end of stream at [5-7]\.\d\ds \(stopped\), {beats} beats", last), \
        r.stdout
    # read from outside: the last entry of the beats stream is the end, as a daemon reading it would see
    out = subprocess.run(["redis-cli", "-u", redis_server.url, "--raw", "XREVRANGE", "bb:{default}:beats", "+", "-",
                          "COUNT", "1"], capture_output=True, text=True, timeout=10).stdout
    assert '"type":"stream_end"' in out.replace(" ", "") and '"reason":"stopped"' in out.replace(" ", ""), out


def test_analyze_json_finds_the_annotated_beats_and_tempo():
    r = beatbus_cmd("analyze", str(SONG), "--json", timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    times = [b["time"] for b in doc["beats"]]
    f = _beat_f(times)
    assert f >= BEAT_F_FLOOR, f"analyze {SONG.name}: beat F {f:.3f} < {BEAT_F_FLOOR}"
    reference = np.loadtxt(SONG.with_suffix(".beats"), ndmin=2)[:, 0]
    annotated_bpm = 60 / np.median(np.diff(reference))
    assert abs(doc["tempo"] - annotated_bpm) <= 0.04 * annotated_bpm, (doc["tempo"], annotated_bpm)
    # the tempo curve: one point per bar, at the downbeats, near the annotated tempo where it is steady
    curve = doc["tempo_curve"]
    downbeats = [b["time"] for b in doc["beats"] if b["is_downbeat"]]
    assert [p["time"] for p in curve][-len(downbeats):] == pytest.approx(downbeats, abs=1e-3)
    assert np.median([p["bpm"] for p in curve]) == pytest.approx(annotated_bpm, rel=0.05)
    assert doc["meter"] in (3, 4)


def test_analyze_sections_json_covers_the_file_with_labelled_sections():
    r = beatbus_cmd("analyze", str(SECTIONS_SONG), "--sections", "--json", timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    sections = doc["sections"]
    assert len(sections) >= 2 and all(set(s) == {"start", "end", "label", "confidence", "tempo", "meter"}
                                      for s in sections)
    # tempo and meter per section, from the beats inside it (None only for a span of under three beats)
    assert all(s["meter"] == doc["meter"] and s["tempo"] == pytest.approx(doc["tempo"], rel=0.1)
               for s in sections if s["end"] - s["start"] > 5), sections
    assert {s["label"] for s in sections} <= SECTION_LABELS, sections
    assert all(s["end"] > s["start"] and 0 <= s["confidence"] <= 1 for s in sections), sections
    # contiguous, from the first sample to the last
    duration = sf.info(str(SECTIONS_SONG)).duration
    assert sections[0]["start"] == 0 and abs(sections[-1]["end"] - duration) < 0.05, (sections, duration)
    assert all(a["end"] == b["start"] for a, b in zip(sections, sections[1:])), sections
    # boundaries near the annotated ones: measured 3 of the 4 inner boundaries within 3 s (F 0.75)
    rows = [line.split("\t") for line in SECTIONS_SONG.with_suffix(".sections").read_text().splitlines() if line]
    reference = np.array([[float(start), float(end)] for start, end, _ in rows])
    estimated = np.array([[s["start"], s["end"]] for s in sections])
    _, _, f = mir_eval.segment.detection(reference, estimated, window=3.0, trim=True)
    assert f >= 0.7, f"sections: boundary F@3s {f:.3f} < 0.7 ({sections})"


def test_an_unknown_backend_from_the_environment_is_one_line_naming_the_known_ones():
    """Settings accept any backend name (plug-ins add names); the registry refuses it at start."""
    song = DATA / "beats" / "ballroom_media_105901.flac"
    for args in (("analyze", str(song)), ("process",)):
        r = beatbus_cmd(*args, env={"BEATBUS_BACKEND": "magic", "REDIS_URL": "redis://127.0.0.1:9/0"}, timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [
            "beatbus: error: unknown beat backend 'magic' (known: dsp, beatnet, small, hls)"], r.stderr


def test_analyze_decodes_the_whole_file_offline_by_default_and_online_on_request():
    """Offline (the default) scores F 1.00 on brid_samba_0216, where the causal tracker (--online)
    scores 0.00, and finds the intro's annotated beats that the causal tracker is still searching for."""
    song = DATA / "beats" / "brid_samba_0216.flac"
    reference = np.loadtxt(song.with_suffix(".beats"), ndmin=2)[:, 0]
    trim = mir_eval.beat.trim_beats
    scores = {}
    for mode in ((), ("--online",)):
        r = beatbus_cmd("analyze", str(song), "--json", *mode, timeout=240)
        assert r.returncode == 0, r.stderr[-2000:]
        times = [b["time"] for b in json.loads(r.stdout)["beats"]]
        scores[mode] = mir_eval.beat.f_measure(trim(reference), trim(np.asarray(times, float)))
    assert scores[()] >= 0.85, f"analyze {song.name} (offline): beat F {scores[()]:.3f} < 0.85"
    assert scores[()] > scores[("--online",)] + 0.2, scores
    intro = DATA / "beats" / "ballroom_media_105901.flac"   # first annotated beat at 1.86 s; online's first: 7.6 s
    r = beatbus_cmd("analyze", str(intro), "--json", timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    times = np.array([b["time"] for b in json.loads(r.stdout)["beats"]])
    first = np.loadtxt(intro.with_suffix(".beats"), ndmin=2)[0, 0]
    assert np.abs(times - first).min() <= 0.07, (first, times[:5])
