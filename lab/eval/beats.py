"""Causal evaluation of beat backends on annotated audio (``beatbus eval beats DIR [DIR ...]``).

Every file is streamed through :class:`~processors.beat.processor.BeatProcessor` in 441-sample
chunks, exactly as live audio, and the beats it emitted are scored with mir_eval (conventions of
``shared/docs/evaluation.md``): beats before 5 s trimmed on both sides, +/-70 ms F-measure, CMLt and
AMLt, downbeat F on the beats with ``beat_in_bar == 1``, tempo Acc1 / Acc2 (median BPM of the beats
emitted after the 5 s trim within 4 % of ``60 / median(annotated IBI)``; Acc2 also at x2, x3, 1/2,
1/3), detection delay (``decided_at - time``) p50 / p95, live F (the ``next_beat_time`` predictions
made before the beat they predict), next-beat prediction error p50 once locked (``|next_beat_time
- next annotated beat|`` for the beats after the trim that hit an annotation at its tempo), and
real-time factor (compute time / audio duration, file loading excluded).

Annotation files: ``<name>.beats`` (or ``.jams``, ``.txt``: :mod:`lab.annotations`) next to
``<name>.<audio>``, one beat per line, ``time<TAB>beat_in_bar`` or ``time`` alone (then downbeat F is None).

Groups (a pooled mean hides where a tracker fails): a file's group is the ``group`` column of a
``MANIFEST.tsv`` beside it when that lists the file (by its ``name`` column, the stem; ``/`` becomes
``_``, so the manifest's ``gtzan/blues`` is the same group as the name rule's ``gtzan_blues``), else
the name rule: the stem without a trailing ``_<digits>`` clip number (``gtzan_blues_00006`` ->
``gtzan_blues``, ``hainsworth_001`` -> ``hainsworth``), or the part before the first ``_`` when the
stem has no clip number (``fmp_C6_Audio_HappyBirthday`` -> ``fmp``, ``madmom_sample`` -> ``madmom``).
Leave-one-group-out folds report each held-out group's mean as that fold's validation score: the
configuration is fixed (nothing is tuned on the training groups yet).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from beatbus.audio import load_audio
from beatbus.errors import AudioSourceError, ConfigError
from beatbus.lab.annotations import AUDIO_EXTS, annotated_audio, annotation_path, read_annotations
from beatbus.processors.beat.backends import names
from beatbus.processors.beat.processor import BeatProcessor, track_offline
from beatbus.processors.beat.tracker import Beat

from .anchors import ANCHORS, anchor_beats

__all__ = [
    "METRICS",
    "load_annotations",
    "score_beats",
    "evaluate_file",
    "evaluate_dir",
    "format_table",
    "tune_dir",
    "format_tuning",
    "add_arguments",
    "run",
    "main",
]

METRICS = ("F", "CMLt", "AMLt", "dbF", "meter_acc", "liveF", "tempo_acc1", "tempo_acc2", "delay_p50", "delay_p95",
           "lock_s", "pred_err_p50", "rtf")
TRIM = 5.0  # s: mir_eval's trim, also where the tempo estimate and the prediction error start
HIT_WINDOW = 0.07  # s: mir_eval's F-measure window
CHUNK = 441  # samples per process() call: 20 ms, like the live producer
GROUP_BY = ("manifest", "prefix", "none")
FOLDS = ("leave-one-group-out",)
MANIFEST = "MANIFEST.tsv"


def load_annotations(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a ``.beats``, ``.txt`` or ``.jams`` file (:func:`lab.annotations.read_annotations`).

    Returns
    -------
    times : np.ndarray [shape=(n,)]
        Beat times in seconds.
    beat_in_bar : np.ndarray [shape=(n,), dtype=int] or None
        Bar positions (1 = downbeat), None when the file has none.
    """
    ann = read_annotations(path)
    return ann.times, ann.beat_in_bar


def _tempo_hits(est_bpm: float | None, ref_bpm: float) -> tuple[float, float]:
    if est_bpm is None or not np.isfinite(ref_bpm):
        return 0.0, 0.0
    acc1 = abs(est_bpm - ref_bpm) <= 0.04 * ref_bpm
    acc2 = any(abs(est_bpm - f * ref_bpm) <= 0.04 * f * ref_bpm for f in (1.0, 2.0, 3.0, 0.5, 1.0 / 3.0))
    return float(acc1), float(acc2)


def _meter_hit(beats: Sequence[Beat], ref_bar: np.ndarray | None) -> float | None:
    if ref_bar is None or not len(ref_bar):
        return None
    scored = [b.meter for b in beats if b.time >= TRIM] or [b.meter for b in beats]
    if not scored:
        return 0.0
    return float(np.bincount(scored).argmax() == int(np.max(ref_bar)))


def score_beats(beats: Sequence[Beat], ref_times: np.ndarray, ref_bar: np.ndarray | None) -> dict:
    """mir_eval scores of emitted beats against annotations (5 s trim, +/-70 ms).

    Returns
    -------
    dict
        ``F, CMLt, AMLt, dbF (None without bar positions), meter_acc (1.0 when the meter most of the
        scored beats carry is the annotation's longest bar position; None without bar positions: a
        tracker that halves 4/4 bars doubles its downbeats and gains dbF, and this shows it), liveF,
        tempo_acc1, tempo_acc2, lock_s (seconds from the first annotated beat until the tracker had
        emitted the first of 4 beats in a row that each hit an annotation: how long a listener waits
        for the lights to lock; None when it never locks),
        delay_p50, delay_p95, pred_err_p50`` (seconds; None when no beat qualifies).
    """
    import mir_eval

    ref = mir_eval.beat.trim_beats(np.asarray(ref_times, dtype=float))
    est_all = np.array([b.time for b in beats], dtype=float)
    est = mir_eval.beat.trim_beats(est_all)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns on empty beat lists; they score 0
        f = mir_eval.beat.f_measure(ref, est)
        _, cmlt, _, amlt = mir_eval.beat.continuity(ref, est)
        db = None
        if ref_bar is not None:
            dref = mir_eval.beat.trim_beats(np.asarray(ref_times)[np.asarray(ref_bar) == 1])
            dest = mir_eval.beat.trim_beats(np.array([b.time for b in beats if b.is_downbeat], dtype=float))
            db = float(mir_eval.beat.f_measure(dref, dest))
        # live F: predictions of the next beat made (decided_at) before the predicted time
        live = np.array([b.next_beat_time for b in beats if b.decided_at <= b.next_beat_time], dtype=float)
        live_f = float(mir_eval.beat.f_measure(ref, mir_eval.beat.trim_beats(np.unique(live))))
    ref_bpm = 60.0 / float(np.median(np.diff(ref_times))) if len(ref_times) > 1 else float("nan")
    # the tempo of the scored part (an online tracker's first seconds are its search)
    scored = [b for b in beats if b.time >= TRIM] or list(beats)
    est_bpm = float(np.median([b.bpm for b in scored])) if scored else None
    acc1, acc2 = _tempo_hits(est_bpm, ref_bpm)
    delays = np.array([b.decided_at - b.time for b in beats], dtype=float)
    return {
        "F": float(f),
        "meter_acc": _meter_hit(beats, ref_bar),
        "CMLt": float(cmlt),
        "AMLt": float(amlt),
        "dbF": db,
        "liveF": live_f,
        "tempo_acc1": acc1,
        "tempo_acc2": acc2,
        "delay_p50": float(np.percentile(delays, 50)) if delays.size else None,
        "delay_p95": float(np.percentile(delays, 95)) if delays.size else None,
        "lock_s": _lock_time(beats, np.asarray(ref_times, dtype=float)),
        "pred_err_p50": _prediction_error(beats, np.asarray(ref_times, dtype=float)),
    }


def _lock_time(beats: Sequence[Beat], ref_times: np.ndarray, run: int = 4) -> float | None:
    """When the first run of ``run`` consecutive hits was decided, after the first annotated beat."""
    if ref_times.size == 0 or len(beats) < run:
        return None
    t = np.array([b.time for b in beats], dtype=float)
    hit = np.abs(t[:, None] - ref_times[None, :]).min(axis=1) <= HIT_WINDOW
    for i in range(len(beats) - run + 1):
        if hit[i:i + run].all():
            return float(max(beats[i].decided_at - ref_times[0], 0.0))
    return None


def _prediction_error(beats: Sequence[Beat], ref_times: np.ndarray) -> float | None:
    """p50 of ``|next_beat_time - next annotated beat|`` (s) once locked.

    Locked: a beat after the trim, within :data:`HIT_WINDOW` of an annotation, whose tempo is
    within 8 % of the annotated one there (a tracker at twice or half the tempo is not locked; its
    cost shows in F and tempo Acc1), and whose prediction was made ahead of time.
    """
    if ref_times.size < 2:
        return None
    live = [b for b in beats if b.time >= TRIM and b.decided_at <= b.next_beat_time]
    if not live:
        return None
    t = np.array([b.time for b in live], dtype=float)
    k = np.abs(t[:, None] - ref_times[None, :]).argmin(axis=1)
    k = np.minimum(k, ref_times.size - 2)  # the last annotation has no successor: use the one before
    ibi = ref_times[k + 1] - ref_times[k]
    period = np.array([60.0 / b.bpm for b in live])
    locked = (np.abs(t - ref_times[k]) <= HIT_WINDOW) & (np.abs(period / ibi - 1.0) <= 0.08)
    if not locked.any():
        return None
    pred = np.array([b.next_beat_time for b in live])[locked]
    return float(np.median(np.abs(pred - ref_times[k[locked] + 1])))


def evaluate_file(audio: str | Path, *, backend: str = "dsp", beats_file: str | Path | None = None,
                  progress=None, offline: bool = False, anchor: str | None = None, **kwargs) -> dict:
    """Stream one annotated file through ``backend`` causally (or decode it whole) and score it.

    Parameters
    ----------
    audio : path
        Audio file; its annotations are :func:`~lab.annotations.annotation_path` unless ``beats_file``.
    backend : str
        A :func:`~processors.beat.backends.names` entry.
    progress : callable, optional
        Called with the seconds of audio processed so far, about once per second of audio.
    anchor : str, optional
        Score an anchor of :mod:`lab.eval.anchors` (e.g. ``librosa``) on the file instead of ``backend``;
        it has no downbeats and predicts nothing (dbF and liveF None).
    offline : bool
        Decode the whole file at once (:func:`~processors.beat.processor.track_offline`) instead;
        its delays are then to the end of the file and its live F is 0 (it predicts nothing).
    **kwargs
        Passed to :class:`BeatProcessor` (e.g. tracker options), or to ``track_offline``.

    Returns
    -------
    dict
        ``file`` (stem), the :func:`score_beats` keys, ``rtf`` and ``n_beats``.
    """
    audio = Path(audio)
    ann = beats_file or annotation_path(audio)
    if ann is None:
        raise ConfigError(f"{audio}: no annotation (<name>.beats, .jams or .txt) next to it")
    ref_times, ref_bar = load_annotations(ann)
    y = load_audio(audio, sr=22050)      # AudioSourceError names the file and the cause
    if y.size == 0:
        raise AudioSourceError(f"{audio}: contains no audio samples")
    t0 = time.perf_counter()
    if anchor is not None:
        row = _scored(audio, anchor_beats(anchor, y, 22050), ref_times, ref_bar, time.perf_counter() - t0, y.size)
        return {**row, "dbF": None, "meter_acc": None, "liveF": None}
    if offline:
        beats = track_offline(y, backend=backend, sr=22050, **kwargs)
        return _scored(audio, beats, ref_times, ref_bar, time.perf_counter() - t0, y.size)
    proc = BeatProcessor(backend=backend, sr=22050, **kwargs)
    beats = []
    for i in range(0, y.size, CHUNK):
        beats.extend(proc.process(y[i : i + CHUNK]))
        if progress is not None and i % (50 * CHUNK) == 0:  # every second of audio
            progress(i / 22050)
    beats.extend(proc.flush())
    return _scored(audio, beats, ref_times, ref_bar, time.perf_counter() - t0, y.size)


def _scored(audio: Path, beats: list[Beat], ref_times: np.ndarray, ref_bar: np.ndarray | None,
            elapsed: float, n_samples: int) -> dict:
    out = {"file": audio.stem}
    out.update(score_beats(beats, ref_times, ref_bar))
    out["rtf"] = elapsed / max(n_samples / 22050, 1e-9)
    out["n_beats"] = len(beats)
    return out


def _find_files(directory: Path, files: str | Iterable[str] | None) -> list[Path]:
    if directory.is_file():  # one annotated audio file
        if directory.suffix.lower() not in AUDIO_EXTS:
            raise ConfigError(f"{directory}: neither a folder nor an audio file ({', '.join(AUDIO_EXTS)})")
        if annotation_path(directory) is None:
            raise ConfigError(f"{directory}: no annotation (<name>.beats, .jams or .txt) next to it")
        return [directory]
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such folder or file")
    out = []
    for audio in annotated_audio(directory):
        if files is not None:
            pats = [files] if isinstance(files, str) else list(files)
            if not any(fnmatch.fnmatch(audio.name, p) or fnmatch.fnmatch(audio.stem, p) for p in pats):
                continue
        out.append(audio)
    if not out:
        which = f" matching {', '.join([files] if isinstance(files, str) else list(files))}" if files else ""
        raise ConfigError(f"{directory}: no annotated audio (<name>.beats/.jams/.txt next to <name>.flac/.wav/...)"
                          f"{which}")
    return out


def _name_group(stem: str) -> str:
    """The name rule: the stem without its trailing ``_<digits>``, else the part before the first ``_``."""
    clip = re.fullmatch(r"(.+)_\d+", stem)
    return clip.group(1) if clip else stem.split("_", 1)[0]


def _read_manifest(folder: Path) -> dict[str, str]:
    """``name -> group`` from ``folder/MANIFEST.tsv`` ({} when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            if not {"name", "group"} <= set(reader.fieldnames or ()):
                raise ConfigError(f"{path}: needs a header line with 'name' and 'group' columns")
            return {r["name"]: r["group"].replace("/", "_") for r in reader if r.get("name") and r.get("group")}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def _groups(paths: Sequence[Path], group_by: str) -> list[str | None]:
    """Each file's group (None for all with ``group_by="none"``); see the module docstring."""
    if group_by not in GROUP_BY:
        raise ConfigError(f"group_by={group_by!r} must be one of {list(GROUP_BY)}")
    if group_by == "none":
        return [None] * len(paths)
    manifests: dict[Path, dict[str, str]] = {}
    out = []
    for p in paths:
        listed = {}
        if group_by == "manifest":
            listed = manifests.setdefault(p.parent, _read_manifest(p.parent))
        out.append(listed.get(p.stem) or _name_group(p.stem))
    return out


def _group_rows(rows: list[dict]) -> list[dict]:
    """One row per group (sorted by name): ``group``, ``n_files`` and the :data:`METRICS` means."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["group"], []).append(r)
    return [{"group": g, "n_files": len(by[g]), **_mean(by[g])} for g in sorted(by)]


def _logo_folds(groups: list[dict], n_files: int) -> dict:
    """Leave-one-group-out folds over :func:`_group_rows` output.

    The configuration is fixed, so a fold's validation score is its held-out group's mean; the
    reported number is the mean over folds (each group weighs the same, however many files it has).
    """
    folds = [{"held_out": g["group"], "n_train": n_files - g["n_files"], "n_val": g["n_files"],
              **{k: g[k] for k in METRICS}} for g in groups]
    return {"scheme": "leave-one-group-out", "configuration": "fixed (not tuned per fold)",
            "folds": folds, "mean": _mean(folds)}


def _mean(rows: list[dict]) -> dict:
    mean = {}
    for k in METRICS:
        vals = [r[k] for r in rows if r.get(k) is not None and not (isinstance(r[k], float) and math.isnan(r[k]))]
        mean[k] = float(np.mean(vals)) if vals else None
    return mean


def evaluate_dir(
    dirs: str | Path | Sequence[str | Path],
    backends: Sequence[str] = ("dsp",),
    files: str | Iterable[str] | None = None,
    *,
    group_by: str = "manifest",
    folds: str | None = None,
    anchors: Sequence[str] = (),
    **kwargs,
) -> dict:
    """Evaluate backends on every annotated file of one or several directories.

    Parameters
    ----------
    dirs : path or sequence of paths
        Folders with ``<name>.beats`` + ``<name>.flac`` (or another audio extension), or such audio
        files. A file reached twice is evaluated once.
    backends : sequence of str
        Backend names, each a :func:`~processors.beat.backends.names` entry.
    files : str, iterable of str or None
        Glob pattern(s) on file names or stems; None = all.
    group_by : {"manifest", "prefix", "none"}
        ``manifest``: a ``MANIFEST.tsv`` beside the file when it lists it, else the name rule;
        ``prefix``: the name rule only; ``none``: no groups (see the module docstring).
    folds : {"leave-one-group-out"} or None
        Also report leave-one-group-out folds (needs at least two groups).
    anchors : sequence of str
        Anchors of :mod:`lab.eval.anchors` scored on the same files, reported as ``anchor:NAME``.
    **kwargs
        Passed to every :class:`BeatProcessor`.

    Returns
    -------
    dict
        ``{"backends": {NAME: {"files": [{"file", "group", "F", "CMLt", "AMLt", "dbF", "liveF",
        "tempo_acc1", "tempo_acc2", "delay_p50", "delay_p95", "pred_err_p50", "rtf", "n_beats"}, ...],
        "mean": {same metric keys}, "groups": [{"group", "n_files", metric keys}, ...] (unless
        ``group_by="none"``), "folds": {"scheme", "configuration", "folds": [{"held_out", "n_train",
        "n_val", metric keys}, ...], "mean": {metric keys}} (with ``folds``)}}, "group_by": str,
        "conventions": str}``.
    """
    if isinstance(backends, str):
        backends = [backends]
    for b in backends:
        if b not in names():
            raise ConfigError(f"backend={b!r} must be one of {names()}")
    if folds is not None and folds not in FOLDS:
        raise ConfigError(f"folds={folds!r} must be one of {list(FOLDS)}")
    # every folder is checked before the first file is evaluated: a bad one fails at once
    found = [p for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs) for p in _find_files(Path(d), files)]
    paths = list({p.resolve(): p for p in found}.values())
    groups = _groups(paths, group_by)
    if folds is not None and len(set(groups) - {None}) < 2:
        raise ConfigError(f"--folds {folds} needs files from at least two groups (found "
                          f"{len(set(groups) - {None})} with --group-by {group_by})")
    result: dict = {
        "backends": {},
        "group_by": group_by,
        "conventions": "mir_eval, causal streaming in 441-sample chunks, 5 s trim, +/-70 ms; delays in s",
    }
    from beatbus.progress import Progress

    for a in anchors:
        if a not in ANCHORS:
            raise ConfigError(f"anchor={a!r} must be one of {list(ANCHORS)}")
    runs = [(b, b, None) for b in backends] + [(f"anchor:{a}", "dsp", a) for a in anchors]
    with Progress("eval beats", len(paths) * len(runs), "files") as bar:
        for b, backend, anchor in runs:
            rows = []
            for p, g in zip(paths, groups):
                note = f"{b}: {p.name}"
                bar.set(bar.done, note=note)
                row = evaluate_file(p, backend=backend, progress=lambda s, note=note: bar.set(bar.done, note=f"{note} {s:.0f} s"),
                                    anchor=anchor, **kwargs)
                rows.append({"file": row.pop("file"), "group": g, **row})
                bar.update(1)
            res: dict = {"files": rows, "mean": _mean(rows)}
            if group_by != "none":
                res["groups"] = _group_rows(rows)
            if folds is not None:
                res["folds"] = _logo_folds(res["groups"], len(rows))
            result["backends"][b] = res
    return result


def tune_dir(dirs: str | Path | Sequence[str | Path], backend: str, specs: Sequence[str], *,
             files: str | Iterable[str] | None = None, group_by: str = "manifest", offline: bool = False,
             select: str = "F") -> dict:
    """Nested leave-one-group-out selection of decoder settings (:mod:`lab.eval.tuning`).

    Parameters
    ----------
    specs : sequence of str
        ``KEY=V1,V2,...`` per tuned setting (``none`` and ``a:b`` tuples allowed).
    select : str
        The :data:`METRICS` entry maximised on each fold's training groups.

    Returns
    -------
    dict
        ``{"backend", "offline", "tuning": <lab.eval.tuning.tune result>}``.
    """
    from beatbus.progress import Progress

    from . import tuning

    if backend not in names():
        raise ConfigError(f"backend={backend!r} must be one of {names()}")
    if select not in METRICS:
        raise ConfigError(f"select={select!r} must be one of {list(METRICS)}")
    grid = tuning.parse_grid(specs, offline=offline)
    found = [p for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs) for p in _find_files(Path(d), files)]
    paths = list({p.resolve(): p for p in found}.values())
    groups = _groups(paths, group_by)
    if len(set(groups) - {None}) < 2:
        raise ConfigError("--tune needs files from at least two groups: each fold tunes on the others")

    def score(path: Path, beats: list[Beat]) -> dict:
        return score_beats(beats, *load_annotations(annotation_path(path)))

    n = len(paths) * (len(tuning.backend_variants(grid)) + len(tuning.combinations(grid))
                      + (0 if {} in tuning.combinations(grid) else 1))
    with Progress("tune beats", n, "steps") as bar:
        res = tuning.tune(paths, groups, backend, grid, score=score, metrics=[m for m in METRICS if m != "rtf"],
                          select=select, offline=offline, progress=bar)
    return {"backend": backend, "offline": offline, "tuning": res}


def format_tuning(result: dict) -> str:
    """Markdown: each fold's held-out group, the setting its training groups chose, the validation
    scores of that setting and of the shipped default, then the setting chosen on all files."""
    t = result["tuning"]
    mode = "offline" if result["offline"] else "online"
    grid = "; ".join(f"{k} in {{{', '.join(v)}}}" for k, v in t["grid"].items())
    # an offline decoder decides every beat after the file's end: no live F
    cols = [c for c in GROUP_COLS if not (result["offline"] and c == "liveF")]
    lines = [f"### `{result['backend']}` {mode}: leave-one-group-out, {t['n_combinations']} combinations "
             f"({grid}), chosen by the training groups' mean {t['select']}", "",
             f"| fold | held out | val files | chosen on the other groups | {' | '.join(cols)} | default F |",
             "|---|---|---|---|" + "---|" * (len(cols) + 1)]
    for i, f in enumerate(t["folds"], 1):
        lines.append(f"| {i} | {f['held_out']} | {f['n_val']} | {f['config']} | "
                     + " | ".join(_fmt(f[c]) for c in cols) + f" | {_fmt(f['default']['F'])} |")
    lines.append("| **mean over folds** | | | | " + " | ".join(f"**{_fmt(t['mean'][c])}**" for c in cols)
                 + f" | **{_fmt(t['default_mean']['F'])}** |")
    a = t["all_files"]
    lines += ["", f"Chosen on all files (what would ship): `{a['config']}`; its in-sample pooled F {_fmt(a['F'])}, "
              f"dbF {_fmt(a['dbF'])} (tuning data: not a held-out score)."]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}"


GROUP_COLS = ["F", "dbF", "meter_acc", "liveF", "tempo_acc1"]


def format_table(result: dict) -> str:
    """Markdown tables per backend: one row per file plus the mean row, then the groups with the
    pooled row, then the folds with their mean (when the result has them)."""
    cols = ["F", "CMLt", "AMLt", "dbF", "meter_acc", "liveF", "tempo_acc1", "lock_s", "delay_p50", "delay_p95",
            "pred_err_p50", "rtf"]
    gcols = " | ".join(GROUP_COLS)
    lines = []
    for name, res in result["backends"].items():
        lines.append(f"### backend `{name}`")
        lines.append("")
        lines.append("| file | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for r in res["files"]:
            lines.append(f"| {r['file']} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        m = res["mean"]
        lines.append("| **mean** | " + " | ".join(f"**{_fmt(m.get(c))}**" for c in cols) + " |")
        lines.append("")
        if "groups" in res:
            lines.append(f"| group | files | {gcols} |")
            lines.append("|---|---|" + "---|" * len(GROUP_COLS))
            for g in res["groups"]:
                lines.append(f"| {g['group']} | {g['n_files']} | " + " | ".join(_fmt(g[c]) for c in GROUP_COLS) + " |")
            lines.append(f"| **pooled** | **{len(res['files'])}** | "
                         + " | ".join(f"**{_fmt(m.get(c))}**" for c in GROUP_COLS) + " |")
            lines.append("")
        if "folds" in res:
            cv = res["folds"]
            lines.append(f"{cv['scheme']}, configuration {cv['configuration']}: validation scores")
            lines.append("")
            lines.append(f"| fold | held out | train files | val files | {gcols} |")
            lines.append("|---|---|---|---|" + "---|" * len(GROUP_COLS))
            for i, f in enumerate(cv["folds"], 1):
                lines.append(f"| {i} | {f['held_out']} | {f['n_train']} | {f['n_val']} | "
                             + " | ".join(_fmt(f[c]) for c in GROUP_COLS) + " |")
            lines.append("| **mean over folds** | | | | "
                         + " | ".join(f"**{_fmt(cv['mean'][c])}**" for c in GROUP_COLS) + " |")
            lines.append("")
    if "conventions" in result:
        lines.append(f"_{result['conventions']}_")
    return "\n".join(lines)


EPILOG = """\
Groups: the 'group' column of a MANIFEST.tsv beside the file when it lists the file ('/' read as
'_'), else the file name without its trailing _<digits> (gtzan_blues_00006 -> gtzan_blues), or the
part before the first '_' when there is none (fmp_C6_Audio_HappyBirthday -> fmp).
Caution: the trackers' settings were tuned on ../shared/data/beats, so numbers on those files
(pooled, per group or per fold) are measured on tuning data, not held-out accuracy claims."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``DIR [DIR ...] [--backend NAME ...] [--json FILE] [--files GLOB] [--group-by HOW]
    [--folds leave-one-group-out]`` to a parser."""
    parser.add_argument("dir", nargs="+",
                        help="folders with <name>.beats and audio files (or annotated audio files)")
    parser.add_argument(
        "--backend", action="append", choices=names(), help="backend to evaluate (repeatable; default beatnet)"
    )
    parser.add_argument("--anchor", action="append", choices=ANCHORS,
                        help="also score an anchor on the same files (repeatable): librosa's beat_track, offline")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--offline", action="store_true",
                        help="decode each whole file at once (beatbus analyze's default) instead of streaming it")
    parser.add_argument("--files", metavar="GLOB", action="append", help="only files matching GLOB (repeatable)")
    parser.add_argument("--group-by", choices=GROUP_BY, default="manifest",
                        help="where a file's group comes from: its MANIFEST.tsv row, else its name (manifest, "
                             "the default); its name only (prefix); no groups (none)")
    parser.add_argument("--tune", metavar="KEY=V1,V2", action="append",
                        help="tune a decoder setting by nested leave-one-group-out (repeatable; every "
                             "combination is tried; 'none' and a:b tuples allowed): each fold picks the best "
                             "on the other groups and is scored on its own")
    parser.add_argument("--select", choices=[m for m in METRICS if m != "rtf"], default="F",
                        help="the metric --tune maximises on the training groups (default F)")
    parser.add_argument("--folds", choices=FOLDS,
                        help="also print each leave-one-group-out fold's validation score and their mean "
                             "(the configuration is fixed: a fold's score is its held-out group's mean)")


def main(argv: Sequence[str] | None = None) -> int:
    """``beatbus eval beats DIR [DIR ...] [--backend NAME ...] [--json FILE] [--files GLOB] [--group-by HOW]
    [--folds leave-one-group-out]``; returns 0."""
    argv = list(argv) if argv is not None else None
    if argv and argv[:2] == ["eval", "beats"]:
        argv = argv[2:]
    parser = argparse.ArgumentParser(prog="beatbus eval beats", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Evaluate (or tune) as the parsed arguments of :func:`add_arguments` say; returns 0."""
    if args.tune:
        if len(args.backend or []) > 1:
            raise ConfigError("--tune takes one --backend")
        result = tune_dir(args.dir, (args.backend or ["beatnet"])[0], args.tune, files=args.files,
                          group_by=args.group_by, offline=args.offline, select=args.select)
        print(format_tuning(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    result = evaluate_dir(args.dir, args.backend or ["beatnet"], files=args.files, offline=args.offline,
                          group_by=args.group_by, folds=args.folds, anchors=args.anchor or ())
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
