"""Key, chord and chord-change evaluation on synthetic songs with known chords.

``beatbus eval harmony DIR [--beats annotations|tracker] [--limit N] [--json FILE]``. DIR holds
songs rendered by ``beatbus synth songs`` (``<name>.flac|wav`` + ``<name>.json`` with the plan and
seed, ``<name>.beats``; ``<name>.chords`` when rendered by a version that writes it, else the
chords are recomputed from the plan and seed, :func:`lab.synth.score.chord_truth`). Each song is
streamed in 20 ms chunks through :class:`~processors.harmony.online.OnlineHarmony`, as the
daemon runs it, with beats from the annotations (each delivered 0.1 s after it happened: isolates
harmony from beat tracking; default) or from the causal beat tracker (backend ``dsp``, as it
emits them). Per song and mean:

- ``key``: share of the song's time during which the key last published is the true one (time
  before the first KeyEvent counts as wrong); ``key_final``: the last key is right; ``mirex``:
  ``mir_eval.key.weighted_score`` of the last key (1 right, 0.5 a fifth off, 0.3 relative,
  0.2 parallel);
- ``majmin``: ``mir_eval.chord.majmin`` accuracy, duration-weighted, of the chord timeline the
  ChordEvents describe (each chord from its ``timestamp``, the beat it began on), over the song;
  ``majmin_live``: the same for the chord known at each moment (from each event's decision time);
  reference chords that are neither major nor minor (natural minor's diminished ii) are left out,
  as ``majmin`` does;
- change timing, per ChordEvent with a prediction: the true next change is the first chord
  change of the annotation more than half a beat after the event's chord began;
  ``change_err_beats``: median |predicted - true| in beats of the true grid; ``right_bar``: share
  of predictions that land (rounded to the nearest beat) in the bar of the true change;
- ``events_per_min``: KeyEvents + ChordEvents per minute of audio.

What a real-music evaluation needs and this one has not: recordings with time-aligned chord and
key annotations (Isophonics' Beatles / Queen / Zweieck sets, McGill Billboard, RWC Popular), whose
audio cannot be shipped here; the scoring above (majmin and MIREX key) applies to them unchanged.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from beatbus.audio import load_audio
from beatbus.processors.harmony.chords import PITCH_NAMES
from beatbus.processors.harmony.online import ChordUpdate, KeyUpdate, OnlineHarmony

__all__ = ["load_truth", "run_song", "score_song", "timeline", "majmin", "evaluate_dir", "table", "add_arguments", "run",
           "main", "COLUMNS"]

SR = 22050
HOP = 441
BEAT_LATENCY_S = 0.1
COLUMNS = ("key", "key_final", "mirex", "majmin", "majmin_live", "change_err_beats", "right_bar", "events_per_min")


def load_truth(meta: Path) -> dict:
    """A song's truth: ``{"key": (tonic, mode), "chords": [(start, end, label)], "beats": [n, 2], "end"}``."""
    from beatbus.lab.synth import SongPlan, chord_truth, key_truth

    doc = json.loads(meta.read_text())
    plan = SongPlan.from_dict(doc["plan"])
    chords_file = meta.with_suffix(".chords")
    if chords_file.exists():
        rows = [ln.split("\t") for ln in chords_file.read_text().splitlines() if ln.strip()]
        chords = [(float(a), float(b), lab.strip()) for a, b, lab in rows]
    else:
        chords = chord_truth(plan, seed=int(doc["seed"]))
    beats = np.loadtxt(meta.with_suffix(".beats"), ndmin=2)
    return {"key": key_truth(plan), "chords": chords, "beats": beats, "end": float(doc["music_end"]),
            "duration": float(doc["duration"])}


def _beats(audio: Path, mode: str, y: np.ndarray) -> list[tuple[float, dict]]:
    """``(known_at, add_beat kwargs)`` per beat, in the order they become known."""
    if mode == "annotations":
        rows = np.loadtxt(audio.with_suffix(".beats"), ndmin=2)
        pos = rows[:, 1].astype(int)
        meter = int(pos.max())
        ibi = np.diff(rows[:, 0])
        bpm = 60.0 / np.concatenate([ibi[:1], ibi]) if len(ibi) else np.array([120.0])
        bars = np.cumsum(pos == 1) - 1
        return [(float(t) + BEAT_LATENCY_S, {"time": float(t), "beat": k, "bar": int(max(bars[k], 0)),
                                             "beat_in_bar": int(pos[k]), "meter": meter, "bpm": float(bpm[k])})
                for k, t in enumerate(rows[:, 0])]
    from beatbus.processors.beat import BeatProcessor

    proc = BeatProcessor(backend="dsp", sr=SR)
    out: list[tuple[float, dict]] = []
    bar, prev = 0, 0
    for i in range(0, len(y), HOP):
        for b in proc.process(y[i:i + HOP]):
            if out and b.beat_in_bar <= prev:          # numbered as the beat processor's service does
                bar += 1
            prev = b.beat_in_bar
            out.append(((i + HOP) / SR, {"time": b.time, "beat": len(out), "bar": bar,
                                         "beat_in_bar": b.beat_in_bar, "meter": b.meter, "bpm": b.bpm}))
    return out


def run_song(y: np.ndarray, beats: list[tuple[float, dict]]) -> list:
    """Stream ``y`` through :class:`OnlineHarmony` with ``beats`` as they become known; every update."""
    ana = OnlineHarmony(sr=SR, hop_length=HOP)
    out: list = []
    k = 0
    for i in range(0, len(y), HOP):
        out += ana.process(y[i:i + HOP])
        now = min(i + HOP, len(y)) / SR
        while k < len(beats) and beats[k][0] <= now:
            out += ana.add_beat(**beats[k][1])
            k += 1
    return out + ana.finish()


def _label(u: ChordUpdate) -> str:
    return "N" if u.root is None else f"{PITCH_NAMES[u.root]}:{u.quality}"


def timeline(changes: list[tuple[float, str]], end: float) -> tuple[np.ndarray, list[str]]:
    """Chord intervals from ``(time, label)`` changes in time order, N before the first, up to ``end``."""
    starts, labels = [0.0], ["N"]
    for at, label in changes:
        t = min(max(at, 0.0), end)
        if t <= starts[-1] + 1e-6:
            labels[-1] = label
        else:
            starts.append(t)
            labels.append(label)
    ints = np.array([[a, b] for a, b in zip(starts, [*starts[1:], end])])
    return ints, labels


def _timeline(updates: list[ChordUpdate], end: float, at: str) -> tuple[np.ndarray, list[str]]:
    return timeline([(getattr(u, at), _label(u)) for u in updates], end)


def majmin(ref: list[tuple[float, float, str]], changes: list[tuple[float, str]], end: float) -> float | None:
    """``mir_eval.chord.majmin`` accuracy, duration-weighted, of a chord timeline given by its changes
    ``(time, Harte label)`` against ``ref`` rows ``(start, end, label)``; None if nothing is scorable."""
    return _majmin(ref, *timeline(changes, end))


def _majmin(ref: list, est_int: np.ndarray, est_lab: list[str]) -> float | None:
    import mir_eval

    ref_int = np.array([[a, b] for a, b, _ in ref])
    ref_lab = [lab for *_, lab in ref]
    est_int, est_lab = mir_eval.util.adjust_intervals(est_int, est_lab, ref_int.min(), ref_int.max(),
                                                      mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD)
    ints, r, e = mir_eval.util.merge_labeled_intervals(ref_int, ref_lab, est_int, est_lab)
    comp = mir_eval.chord.majmin(r, e)
    dur = mir_eval.util.intervals_to_durations(ints)
    if not np.any(comp >= 0):
        return None
    return float(mir_eval.chord.weighted_accuracy(comp, dur))


def score_song(truth: dict, updates: list, *, duration: float) -> dict:
    """The metrics of one song (see the module docstring)."""
    import mir_eval

    chords = [u for u in updates if isinstance(u, ChordUpdate)]
    keys = [u for u in updates if isinstance(u, KeyUpdate)]
    end = truth["end"]
    tonic, mode = truth["key"]
    out: dict = {"key_true": f"{PITCH_NAMES[tonic]} {mode}",
                 "key_est": f"{PITCH_NAMES[keys[-1].tonic]} {keys[-1].mode}" if keys else "-"}
    # key over time, as known live
    right = 0.0
    for k, u in enumerate(keys):
        a = min(u.decided_at, end)
        b = min(keys[k + 1].decided_at, end) if k + 1 < len(keys) else end
        if (u.tonic, u.mode) == (tonic, mode):
            right += max(b - a, 0.0)
    out["key"] = right / end
    out["key_final"] = float(bool(keys) and (keys[-1].tonic, keys[-1].mode) == (tonic, mode))
    ref_key = f"{PITCH_NAMES[tonic]} {mode}"
    out["mirex"] = float(mir_eval.key.weighted_score(ref_key, out["key_est"])) if keys else 0.0
    # chords
    out["majmin"] = _majmin(truth["chords"], *_timeline(chords, end, "time"))
    out["majmin_live"] = _majmin(truth["chords"], *_timeline(chords, end, "decided_at"))
    # change timing on the true beat grid
    bt = truth["beats"][:, 0]
    pos = truth["beats"][:, 1].astype(int)
    bar_of = np.cumsum(pos == 1) - 1
    idx = np.arange(len(bt), dtype=float)
    changes = np.array([a for a, _, _ in truth["chords"][1:]])

    def beat_pos(t: float) -> float:
        if t <= bt[-1]:
            return float(np.interp(t, bt, idx))
        return float(idx[-1] + (t - bt[-1]) / max(bt[-1] - bt[-2], 1e-3))

    errs, bars = [], []
    for u in chords:
        if u.next_change is None:
            continue
        half = 0.5 * (float(np.interp(u.time, bt[1:], np.diff(bt))) if len(bt) > 1 else 0.5)
        later = changes[changes > u.time + half]
        if not later.size:
            continue
        true_pos, pred_pos = beat_pos(float(later[0])), beat_pos(u.next_change)
        errs.append(abs(pred_pos - true_pos))
        k_true = int(round(true_pos))
        k_pred = int(round(pred_pos))
        bars.append(k_pred < len(bar_of) and k_true < len(bar_of) and bar_of[k_pred] == bar_of[k_true])
    out["change_err_beats"] = float(np.median(errs)) if errs else None
    out["right_bar"] = float(np.mean(bars)) if bars else None
    out["predictions"] = len(errs)
    out["events_per_min"] = (len(chords) + len(keys)) / (duration / 60.0)
    return out


def _songs(path: Path) -> list[Path]:
    if path.is_file() and path.suffix == ".json":
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a folder of synthetic songs (a song's .json plan names one)" if path.exists()
                                else f"{path}: no such folder")
    return sorted(p for p in path.glob("*.json")
                  if (p.with_suffix(".flac").exists() or p.with_suffix(".wav").exists()) and p.with_suffix(".beats").exists())


def evaluate_dir(path: str | Path, *, beats: str = "annotations", limit: int | None = None) -> dict:
    """``{"beats", "n_songs", "files": [{"file", metrics...}], "mean": {...}}``."""
    from beatbus.progress import Progress

    songs = _songs(Path(path))[:limit]
    if not songs:
        raise FileNotFoundError(f"{path}: no synthetic songs (<name>.json + audio + .beats, `beatbus synth songs`)")
    rows = []
    with Progress("eval harmony", len(songs), "songs") as bar:
        for meta in songs:
            bar.set(bar.done, note=meta.stem)
            audio = meta.with_suffix(".flac") if meta.with_suffix(".flac").exists() else meta.with_suffix(".wav")
            truth = load_truth(meta)
            y = load_audio(audio, sr=SR)
            updates = run_song(y, _beats(audio, beats, y))
            rows.append({"file": meta.stem, **score_song(truth, updates, duration=len(y) / SR)})
            bar.update(1)
    mean: dict = {}
    for c in (*COLUMNS, "predictions"):
        vals = [r[c] for r in rows if r.get(c) is not None]
        mean[c] = float(np.mean(vals)) if vals else None
    return {"beats": beats, "n_songs": len(rows), "files": rows, "mean": mean}


def _f(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def table(res: dict) -> str:
    """The result as a Markdown table, one row per song and the mean."""
    head = ["song", "key (true)", "key (est.)", "key", "key final", "MIREX", "majmin", "majmin live",
            "change err (beats, p50)", "right bar", "events/min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["files"]:
        lines.append(f"| {r['file']} | {r['key_true']} | {r['key_est']} | " + " | ".join(
            _f(r.get(c), ".2f" if c in ("change_err_beats", "events_per_min") else ".3f") for c in COLUMNS) + " |")
    m = res["mean"]
    lines.append(f"| **mean of {res['n_songs']}** | | | " + " | ".join(
        f"**{_f(m.get(c), '.2f' if c in ('change_err_beats', 'events_per_min') else '.3f')}**" for c in COLUMNS) + " |")
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("dir", help="folder of synthetic songs (beatbus synth songs), or one song's .json")
    ap.add_argument("--beats", choices=["annotations", "tracker"], default="annotations",
                    help="beat grid: the .beats annotations, each 0.1 s late (default), or the causal tracker (dsp)")
    ap.add_argument("--limit", type=int, help="evaluate only the first N songs (by name)")
    ap.add_argument("--json", help="also write the results to this file")


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        from beatbus.errors import ConfigError

        raise ConfigError(f"--limit {args.limit} must be a positive number of songs")
    res = evaluate_dir(args.dir, beats=args.beats, limit=args.limit)
    print(f"{res['n_songs']} songs, beats from {res['beats']}; key = share of time the live key is right; "
          "majmin (mir_eval) by chord start / as known live; change timing vs the true next change")
    print()
    print(table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``beatbus eval harmony DIR [--beats annotations|tracker] [--limit N] [--json FILE]``."""
    ap = argparse.ArgumentParser(prog="beatbus eval harmony", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    try:
        return run(ap.parse_args(argv))
    except FileNotFoundError as exc:
        from beatbus.errors import ConfigError

        raise ConfigError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
