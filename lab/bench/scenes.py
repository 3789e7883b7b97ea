"""``beatbus bench scenes [DIR] [--count N]``: when the ``scenes`` LED effect changes scene, on synthetic songs.

Each song of ``beatbus synth songs`` (its ``.json``: sections, transitions, meter; its ``.beats``:
beat times and bar positions) is replayed offline, on a simulated clock, into the real
:class:`~consumers.led.state.LedState` and the real ``scenes`` effect, which renders every frame
the device would (``--fps`` regular frames plus one on each predicted beat, output latency 0).
The state is fed the annotated events with the delays of the real stages:

- beats: each annotated beat 50-150 ms after it (uniform, seeded), its next beat predicted one
  interval on (the tracker's tempo);
- sections: each annotated boundary as a ``confirmed`` SectionEvent when the structure stage
  would confirm it: ``C + 2`` beats after it, ``C`` its confirmation window
  (``min(kernel, max(4, 3 bars), max(4 beats, 4 s))``, :mod:`processors.structure.online`),
  + 0.15 s; no tentative events (the scenes do not use them);
- build-ups (with their foreseen drops), drops and breakdowns: what the real intensity stage
  detects in the song's audio (its features and :class:`~processors.intensity.predict.TransitionDetector`,
  bar times from the annotated beats 0.1 s late, as ``beatbus intensity eval``), each published
  ``STAGE_S`` after the audio that decided it: its misses and false alarms included.

The replay ends half a beat after the last annotated beat (the lights then go ambient: a change
the structure stage would confirm after the song ended is not shown, and not counted).
Per mode (sections only; sections + drops; sections + drops + a phrase every ``--every-bars``):
scene changes, changes off the bar line (the nearest annotated beat is no downbeat, or more than
70 ms away), |offset| to the nearest annotated downbeat p50/p95, lag after the annotated boundary
p50/p95 (first change at or after each boundary, within half a bar before it), drops whose
downbeat carried a change (within 70 ms), and boundaries missed (no change before the next one).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError

__all__ = ["Song", "load_song", "song_events", "replay", "score", "bench_scenes", "MODES"]

WALL0 = 1_700_000_000.0        # the simulated wall clock of each song's sample 0
STAGE_S = 0.05                 # the intensity stage's capture-to-publish time after its deciding frame
ON_BAR_S = 0.07                # a change within 70 ms of an annotated downbeat is on the bar line
MODES = {
    "sections": {"on_sections": True, "on_drops": False, "every_bars": 0},
    "sections + drops": {"on_sections": True, "on_drops": True, "every_bars": 0},
    "sections + drops + phrase": {"on_sections": True, "on_drops": True},
}


@dataclass
class Song:
    name: str
    beats: np.ndarray            # annotated beat times (stream s)
    beat_in_bar: np.ndarray
    meter: int
    sections: list[tuple[float, str]]     # (start, label)
    drops: list[float]
    duration: float
    audio: Path


def load_song(meta: Path) -> Song:
    """A synthetic song's annotations from its ``.json`` and ``.beats``."""
    try:
        doc = json.loads(meta.read_text())
        rows = np.loadtxt(meta.with_suffix(".beats"), ndmin=2)
        trans = doc["transitions"]
        song = Song(name=meta.stem, beats=rows[:, 0], beat_in_bar=rows[:, 1].astype(int),
                    meter=int(doc["beats_per_bar"]),
                    sections=[(float(s["start"]), str(s["label"])) for s in doc["sections"]],
                    drops=[float(t["time"]) for t in trans if t["kind"] == "drop"],
                    duration=float(doc.get("music_end", doc["duration"])),
                    audio=next((a for a in (meta.with_suffix(".flac"), meta.with_suffix(".wav")) if a.is_file()),
                               meta.with_suffix(".flac")))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(f"{meta}: not a synthetic song of beatbus synth songs ({exc})") from None
    if not song.audio.is_file():
        raise ConfigError(f"{meta}: no audio beside it ({song.audio.name} or .wav)")
    if len(song.beats) < 4:
        raise ConfigError(f"{meta}: fewer than 4 annotated beats")
    return song


def _confirm_beats(meter: int, ibi: float) -> int:
    """Beats after a boundary until the structure stage confirms it (its window ``C`` + 2)."""
    from beatbus.processors.structure.offline import kernel_beats
    from beatbus.processors.structure.online import OnlineStructure as S

    half = kernel_beats(meter, ibi)
    c = min(half, max(4, S.MAX_CONFIRM_BARS * meter), max(4, int(math.ceil(S.MAX_CONFIRM_S / ibi))))
    return c + 2


def song_events(song: Song, *, rng: np.random.Generator) -> list[tuple[float, object]]:
    """``(publish stream time, event)`` of what the real stages would publish for ``song``, in order."""
    from beatbus.lab.eval.intensity import detect_file
    from beatbus.processors.intensity.events import transition_event
    from beatbus.schemas import BeatEvent, SectionEvent

    t, bib, m = song.beats, song.beat_in_bar, song.meter
    out: list[tuple[float, object]] = []
    bar = -1
    for k in range(len(t)):
        if bib[k] == 1:
            bar += 1
        ibi = float(t[k] - t[k - 1]) if k else float(t[1] - t[0])
        out.append((t[k] + rng.uniform(0.05, 0.15), BeatEvent(
            source="bench", timestamp=float(t[k]), system_time=WALL0 + t[k], is_downbeat=bool(bib[k] == 1),
            bpm=60.0 / ibi, intensity=0.5, confidence=0.9, beat=k, beat_in_bar=int(bib[k]), bar=max(bar, 0),
            meter=m, next_beat_time=float(t[k] + ibi), next_beat_system_time=WALL0 + t[k] + ibi, emitted_at=0.0)))

    def beat_index(x: float) -> int:
        return int(np.argmin(np.abs(t - x)))

    for start, label in song.sections:
        if start <= 0:
            continue
        i = beat_index(start)
        ibi = float(np.median(np.diff(t[max(0, i - 8):i + 1]))) if i >= 2 else float(t[1] - t[0])
        j = i + _confirm_beats(m, ibi)
        at = (t[j] if j < len(t) else t[-1] + (j - len(t) + 1) * ibi) + 0.15
        out.append((at, SectionEvent(source="bench", start=start, system_time=WALL0 + start, emitted_at=0.0,
                                     label=label, confidence=0.8, status="confirmed")))
    for tr in detect_file(song.audio):
        if tr.kind != "tempo-change":
            out.append((tr.detected_at + STAGE_S, transition_event(tr, source="bench", stream_time=lambda x: x,
                                                                   wall=lambda x: WALL0 + x, now=0.0)))
    out.sort(key=lambda e: e[0])
    return out


def replay(song: Song, config: dict, events: list[tuple[float, object]], *, fps: float = 60.0,
           pixels: int = 60) -> list:
    """Render ``song``'s ``events`` (:func:`song_events`) through LedState + the scenes effect; its
    SceneChanges (times in stream s)."""
    from beatbus.consumers.led.effects import create_effect
    from beatbus.consumers.led.state import LedState

    clock = [WALL0]
    state = LedState(clock=lambda: clock[0])
    fx = create_effect("scenes", pixels, config)
    dt = 1.0 / fps
    t, end = WALL0, WALL0 + float(song.beats[-1]) + 0.5 * float(song.beats[-1] - song.beats[-2])   # then the music stops
    next_regular, beat_at, i = WALL0, None, 0
    while t < end:
        if beat_at is not None and t < beat_at < next_regular:
            t = beat_at + 1e-6                          # a frame on the predicted beat (as DeviceRunner)
        else:
            t = next_regular
            next_regular += dt
        clock[0] = t
        while i < len(events) and WALL0 + events[i][0] <= t:
            state.apply(events[i][1])
            i += 1
        ctx = state.context(t, pixels)
        fx.render(ctx)
        beat_at = ctx.next_beat_time if ctx.has_beat else None
    return [c.__class__(c.time - WALL0, c.reason, c.scene, c.bar) for c in fx.changes]


def score(song: Song, changes: list) -> dict:
    """Timing of ``changes`` against the song's annotated downbeats, boundaries and drops."""
    beats, down = song.beats, song.beats[song.beat_in_bar == 1]
    bar_s = float(np.median(np.diff(down))) if len(down) > 1 else float(np.median(np.diff(beats))) * song.meter
    times = np.array([c.time for c in changes])
    offsets, off_bar = [], 0
    for x in times:
        k = int(np.argmin(np.abs(beats - x)))
        offsets.append(abs(x - down[np.argmin(np.abs(down - x))]) if len(down) else abs(x - beats[k]))
        if song.beat_in_bar[k] != 1 or abs(x - beats[k]) > ON_BAR_S:
            off_bar += 1
    bounds = sorted(s for s, _ in song.sections if s > 0)
    lags, missed = [], 0
    for j, b in enumerate(bounds):
        nxt = bounds[j + 1] if j + 1 < len(bounds) else math.inf
        hit = times[(times >= b - 0.5 * bar_s) & (times < nxt - 0.5 * bar_s)]
        if hit.size:
            lags.append(float(hit.min() - b))
        else:
            missed += 1
    on_drop = sum(bool(times.size) and float(np.min(np.abs(times - d))) <= ON_BAR_S for d in song.drops)
    return {"changes": len(changes), "by_reason": {r: sum(c.reason == r for c in changes) for r in ("section", "drop", "phrase")},
            "off_bar": off_bar, "offsets": offsets, "lags": lags, "boundaries": len(bounds), "missed": missed,
            "drops": len(song.drops), "drops_on_downbeat": int(on_drop)}


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(xs) * 1000.0, q)), 1) if xs else None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def bench_scenes(songs_dir: Path, *, count: int = 10, every_bars: int = 8, seed: int = 0, fps: float = 60.0,
                 pixels: int = 60, json_path: str | None = None) -> int:
    """Run every mode over the first ``count`` songs of ``songs_dir``; print the table (and write JSON)."""
    from beatbus.progress import Progress

    for name, value, ok in (("--count", count, count >= 1), ("--fps", fps, 1.0 <= fps <= 200.0),
                            ("--every-bars", every_bars, 1 <= every_bars <= 64)):
        if not ok:
            raise ConfigError(f"{name}={value:g} is out of range (count >= 1, fps 1..200, every bars 1..64)")
    metas = sorted(p for p in Path(songs_dir).glob("*.json") if p.with_suffix(".beats").is_file())[:count]
    if not metas:
        raise ConfigError(f"no synthetic songs in {songs_dir}: render some with "
                          f"`beatbus synth songs {songs_dir} --count {count}`")
    songs = [load_song(p) for p in metas]
    rows = []
    with Progress("bench scenes", len(songs) * (1 + len(MODES)), "songs") as bar:
        events = []
        for song in songs:       # the stages' events, once per song (the intensity stage runs on its audio)
            bar.set(bar.done, note=f"events: {song.name}")
            events.append(song_events(song, rng=np.random.default_rng([seed, sum(song.name.encode())])))
            bar.update(1)
        for mode, cfg in MODES.items():
            config = {**cfg, "every_bars": cfg.get("every_bars", every_bars)}
            scores = []
            for song, evs in zip(songs, events):
                bar.set(bar.done, note=f"{mode}: {song.name}")
                scores.append(score(song, replay(song, config, evs, fps=fps, pixels=pixels)))
                bar.update(1)
            label = mode.replace("phrase", f"every {every_bars} bars")
            rows.append(_row(label, scores))
    print(f"scenes on {len(songs)} synthetic songs from {songs_dir} ({sum(s.duration for s in songs) / 60:.1f} min, "
          f"{fps:g} fps; annotated beats and sections with the stages' delays, transitions from the intensity "
          "stage run on the audio)")
    print("| mode | changes (section/drop/phrase) | off the bar line | abs offset to downbeat p50/p95 ms "
          "| lag after boundary p50/p95 ms | drops changed on their downbeat | missed boundaries |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['changes']} ({r['section']}/{r['drop']}/{r['phrase']}) | {r['off_bar']} | "
              f"{_ms(r['offset_p50_ms'])} / {_ms(r['offset_p95_ms'])} | {_ms(r['lag_p50_ms'])} / {_ms(r['lag_p95_ms'])} | "
              f"{r['drops_on_downbeat']}/{r['drops']} | {r['missed']}/{r['boundaries']} |")
    if json_path:
        Path(json_path).write_text(json.dumps({"songs": [s.name for s in songs], "rows": rows}, indent=1) + "\n")
    return 0


def _row(mode: str, scores: list[dict]) -> dict:
    offsets = [x for s in scores for x in s["offsets"]]
    lags = [x for s in scores for x in s["lags"]]
    total = {k: sum(s[k] for s in scores) for k in ("changes", "off_bar", "boundaries", "missed", "drops",
                                                      "drops_on_downbeat")}
    reasons = {r: sum(s["by_reason"][r] for s in scores) for r in ("section", "drop", "phrase")}
    return {"mode": mode, **total, **reasons, "offset_p50_ms": _pct(offsets, 50), "offset_p95_ms": _pct(offsets, 95),
            "lag_p50_ms": _pct(lags, 50), "lag_p95_ms": _pct(lags, 95)}
