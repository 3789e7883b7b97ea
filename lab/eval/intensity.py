"""Precision / recall of transition detection on synthetic songs with known transitions.

``python -m beatbus.lab.eval.intensity DIR [--beats annotations|tracker|none] [--json FILE]``
(also ``beatbus intensity eval DIR``). DIR holds songs rendered by ``beatbus synth songs``
(``<name>.flac`` + ``<name>.json`` with the true transitions).

Matching (one detection per truth, greedy by time):

- ``drop`` / ``breakdown``: same kind, ``|time - true time| <= tol`` (default 1.0 s);
- ``build-up``: its start within ``[true start - tol, true end]``;
- ``tempo-change``: within 2 beats of a true tempo step; detections inside a tempo ramp are
  neither hits nor false alarms (a ramp has no single change time);
- a drop counts as *foreseen* when a build-up event emitted before it predicted it within
  ``max(0.15 s, 1/8 bar)``; ``lead_p50`` is the median time from that emission to the drop.

Beats for bar times and tempo (``--beats``): the annotations, each delivered 0.1 s after it
happened (default: isolates the energy detectors from tracking errors), the causal beat
tracker's events when it emits them (``processors.beat``, backend ``dsp``), or none.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from beatbus.audio import load_audio
from beatbus.processors.intensity.features import IntensityFeatures
from beatbus.processors.intensity.predict import Transition, TransitionDetector

__all__ = ["detect_file", "score_song", "evaluate_dir", "add_arguments", "run", "main"]

KINDS = ("build-up", "drop", "breakdown", "tempo-change")


def _beats_for(audio: Path, mode: str, sr: int, y: np.ndarray) -> list[tuple[float, float, float, int, int]]:
    """``(known_at, time, bpm, beat_in_bar, meter)`` per beat: when it becomes known, and the beat."""
    if mode == "none":
        return []
    if mode == "annotations":
        rows = np.loadtxt(audio.with_suffix(".beats"), ndmin=2)
        times, pos = rows[:, 0], rows[:, 1].astype(int) if rows.shape[1] > 1 else np.ones(len(rows), int)
        meter = int(pos.max())
        ibi = np.diff(times)
        bpm = np.concatenate([[60 / ibi[0]], 60 / ibi]) if len(ibi) else np.array([120.0])
        # a beat's tempo is known once the beat has happened: use the interval that ended at it;
        # the beat itself arrives 0.1 s late, as from a live tracker
        return [(float(t) + 0.1, float(t), float(b), int(p), meter) for t, b, p in zip(times, bpm, pos)]
    from beatbus.processors.beat import BeatProcessor

    proc = BeatProcessor(backend="dsp", sr=sr)
    out = []
    for i in range(0, len(y), 441):
        for b in proc.process(y[i:i + 441]):
            out.append(((i + 441) / sr, b.time, b.bpm, b.beat_in_bar, b.meter))   # known when emitted
    return out


def detect_file(audio: str | Path, *, beats: str = "annotations", sr: int = 22050) -> list[Transition]:
    """Stream a file through the features and the detector; return every transition emitted."""
    audio = Path(audio)
    y = load_audio(audio, sr=sr)
    feats = IntensityFeatures(sr=sr)
    det = TransitionDetector(fps=feats.fps)
    beat_list = _beats_for(audio, beats, sr, y)
    bi = 0
    out: list[Transition] = []
    for frame in feats.process(y):
        while bi < len(beat_list) and beat_list[bi][0] <= frame.time:
            _, t, bpm, pos, meter = beat_list[bi]
            out.extend(det.add_beat(t, bpm, pos, meter))
            bi += 1
        out.extend(det.push(frame))
    return out


def _match(true_times: list[float], det_times: list[float], tol) -> list[tuple[int, int]]:
    pairs = sorted(((abs(d - t), i, j) for i, t in enumerate(true_times) for j, d in enumerate(det_times)
                    if abs(d - t) <= (tol(i) if callable(tol) else tol)))
    used_i, used_j, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_i and j not in used_j:
            used_i.add(i), used_j.add(j), out.append((i, j))
    return out


def score_song(truth: dict, dets: list[Transition], *, tol: float = 1.0) -> dict:
    """Per-kind counts (tp, n_true, n_det), time errors and the drop foresight of one song."""
    trans = truth["transitions"]
    curve = np.array(truth["tempo_curve"])
    beat_s = float(np.median(60.0 / curve[:, 1])) if len(curve) else 0.5
    bar_s = beat_s * truth.get("beats_per_bar", 4)
    res: dict = {}
    for kind in KINDS:
        tr = [t for t in trans if t["kind"] == kind]
        dt = [d for d in dets if d.kind == kind and (d.predicted_time is None or True)]
        if kind == "build-up":
            # re-issued predictions of one build count once
            seen, uniq = set(), []
            for d in dt:
                if d.time not in seen:
                    seen.add(d.time), uniq.append(d)
            dt = uniq
            pairs = []
            used = set()
            for i, t in enumerate(tr):
                for j, d in enumerate(dt):
                    if j not in used and t["time"] - tol <= d.time <= t["end"]:
                        pairs.append((i, j)), used.add(j)
                        break
        elif kind == "tempo-change":
            ramps = [t for t in trans if t["kind"] == "tempo-ramp"]
            dt = [d for d in dt if not any(r["time"] - 2 * beat_s <= d.time <= r["end"] + 2 * beat_s for r in ramps)]
            pairs = _match([t["time"] for t in tr], [d.time for d in dt], 2 * beat_s + 0.1)
        else:
            pairs = _match([t["time"] for t in tr], [d.time for d in dt], tol)
        errs = [dt[j].time - tr[i]["time"] for i, j in pairs]
        delays = [dt[j].detected_at - tr[i]["time"] for i, j in pairs]
        res[kind] = {"tp": len(pairs), "n_true": len(tr), "n_det": len(dt), "err": errs, "delay": delays}
    drops = [t for t in trans if t["kind"] == "drop"]
    builds = [t for t in trans if t["kind"] == "build-up"]
    foreseen, leads = 0, []
    n_after_build = 0
    for drop in drops:
        if not any(abs(b["end"] - drop["time"]) < 1e-3 for b in builds):
            continue
        n_after_build += 1
        ok = [d for d in dets if d.kind == "build-up" and d.predicted_time is not None
              and d.detected_at < drop["time"] and abs(d.predicted_time - drop["time"]) <= max(0.15, bar_s / 8)]
        if ok:
            foreseen += 1
            leads.append(drop["time"] - min(d.detected_at for d in ok))
    res["foresight"] = {"drops_after_build": n_after_build, "foreseen": foreseen, "lead": leads}
    return res


def _prf(tp: int, n_true: int, n_det: int) -> tuple[float | None, float | None, float | None]:
    p = tp / n_det if n_det else None
    r = tp / n_true if n_true else None
    f = 2 * p * r / (p + r) if p and r else (0.0 if (p == 0 or r == 0) else None)
    return p, r, f


def evaluate_dir(path: str | Path, *, beats: str = "annotations", tol: float = 1.0) -> dict:
    """Run every song in ``path``; return ``{"files": [...], "total": {kind: {...}}}``."""
    path = Path(path)
    songs = sorted(p for p in path.glob("*.json")
                   if p.with_suffix(".flac").exists() or p.with_suffix(".wav").exists())
    if not songs:
        raise FileNotFoundError(f"{path}: no synthetic songs (<name>.json + audio) found")
    files, total = [], {k: {"tp": 0, "n_true": 0, "n_det": 0, "err": [], "delay": []} for k in KINDS}
    fore = {"drops_after_build": 0, "foreseen": 0, "lead": []}
    for js in songs:
        truth = json.loads(js.read_text())
        audio = js.with_suffix(".flac") if js.with_suffix(".flac").exists() else js.with_suffix(".wav")
        res = score_song(truth, detect_file(audio, beats=beats), tol=tol)
        files.append({"file": js.stem, **{k: {x: res[k][x] for x in ("tp", "n_true", "n_det")} for k in KINDS}})
        for k in KINDS:
            for x in ("tp", "n_true", "n_det"):
                total[k][x] += res[k][x]
            total[k]["err"] += res[k]["err"]
            total[k]["delay"] += res[k]["delay"]
        for x in ("drops_after_build", "foreseen"):
            fore[x] += res["foresight"][x]
        fore["lead"] += res["foresight"]["lead"]
    summary = {}
    for k, v in total.items():
        p, r, f = _prf(v["tp"], v["n_true"], v["n_det"])
        summary[k] = {"precision": p, "recall": r, "F": f, "tp": v["tp"], "n_true": v["n_true"], "n_det": v["n_det"],
                      "abs_err_p50": float(np.median(np.abs(v["err"]))) if v["err"] else None,
                      "delay_p50": float(np.median(v["delay"])) if v["delay"] else None}
    summary["drop_foresight"] = {
        "drops_after_build": fore["drops_after_build"], "foreseen": fore["foreseen"],
        "rate": fore["foreseen"] / fore["drops_after_build"] if fore["drops_after_build"] else None,
        "lead_p50": float(np.median(fore["lead"])) if fore["lead"] else None}
    return {"beats": beats, "tolerance_s": tol, "n_songs": len(songs), "files": files, "total": summary}


def _fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("dir", help="directory of synthetic songs (beatbus synth songs)")
    ap.add_argument("--beats", choices=["annotations", "tracker", "none"], default="annotations",
                    help="where bar times and tempo come from (default: the annotations)")
    ap.add_argument("--tol", type=float, default=1.0, help="time tolerance (s) for drops and breakdowns")
    ap.add_argument("--json", help="also write the results to this file")


def run(args: argparse.Namespace) -> int:
    res = evaluate_dir(args.dir, beats=args.beats, tol=args.tol)
    print(f"{res['n_songs']} songs, beats from {args.beats}, tolerance {args.tol} s")
    print(f"{'kind':14s} {'P':>5s} {'R':>5s} {'F':>5s} {'tp':>4s} {'true':>5s} {'det':>5s} "
          f"{'|err| p50':>9s} {'delay p50':>9s}")
    for k in KINDS:
        s = res["total"][k]
        print(f"{k:14s} {_fmt(s['precision']):>5s} {_fmt(s['recall']):>5s} {_fmt(s['F']):>5s} {s['tp']:4d} "
              f"{s['n_true']:5d} {s['n_det']:5d} {_fmt(s['abs_err_p50'], '.3f'):>9s} {_fmt(s['delay_p50'], '.3f'):>9s}")
    f = res["total"]["drop_foresight"]
    print(f"drops after a build-up foreseen: {f['foreseen']}/{f['drops_after_build']} "
          f"(lead p50 {_fmt(f['lead_p50'], '.2f')} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="beatbus intensity eval", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
