"""Causal evaluation of beat backends on annotated audio (``beatbus eval beats DIR``).

Every file is streamed through :class:`~processors.beat.processor.BeatProcessor` in 441-sample
chunks, exactly as live audio, and the beats it emitted are scored with mir_eval (conventions of
``shared/docs/evaluation.md``): beats before 5 s trimmed on both sides, +/-70 ms F-measure, CMLt and
AMLt, downbeat F on the beats with ``beat_in_bar == 1``, tempo Acc1 / Acc2 (median BPM of the beats
emitted after the 5 s trim within 4 % of ``60 / median(annotated IBI)``; Acc2 also at x2, x3, 1/2,
1/3), detection delay (``decided_at - time``) p50 / p95, live F (the ``next_beat_time`` predictions
made before the beat they predict), next-beat prediction error p50 once locked (``|next_beat_time
- next annotated beat|`` for the beats after the trim that hit an annotation at its tempo), and
real-time factor (compute time / audio duration, file loading excluded).

Annotation files: ``<name>.beats`` next to ``<name>.<audio>``, one beat per line,
``time<TAB>beat_in_bar`` or ``time`` alone (then downbeat F is None).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from beatbus.audio import load_audio
from beatbus.errors import AudioSourceError, ConfigError
from beatbus.processors.beat.backends import names
from beatbus.processors.beat.processor import BeatProcessor
from beatbus.processors.beat.tracker import Beat

__all__ = [
    "METRICS",
    "load_annotations",
    "score_beats",
    "evaluate_file",
    "evaluate_dir",
    "format_table",
    "add_arguments",
    "main",
]

METRICS = ("F", "CMLt", "AMLt", "dbF", "liveF", "tempo_acc1", "tempo_acc2", "delay_p50", "delay_p95", "pred_err_p50", "rtf")
TRIM = 5.0  # s: mir_eval's trim, also where the tempo estimate and the prediction error start
HIT_WINDOW = 0.07  # s: mir_eval's F-measure window
AUDIO_EXTS = (".flac", ".wav", ".ogg", ".mp3", ".aiff", ".aif")
CHUNK = 441  # samples per process() call: 20 ms, like the live producer


def load_annotations(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a ``.beats`` file.

    Returns
    -------
    times : np.ndarray [shape=(n,)]
        Beat times in seconds.
    beat_in_bar : np.ndarray [shape=(n,), dtype=int] or None
        Bar positions (1 = downbeat), None when the file has a single column.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read annotations ({exc.strerror or exc})") from None
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not rows:
        return np.zeros(0), None
    bad = ConfigError(f"{path}: every line must be 'time' or 'time<TAB>beat_in_bar'")
    if len({len(r) for r in rows}) != 1 or len(rows[0]) not in (1, 2):
        raise bad
    try:
        arr = np.array(rows, dtype=float)
    except ValueError:
        raise bad from None
    times = arr[:, 0]
    return times, (arr[:, 1].astype(int) if arr.shape[1] == 2 else None)


def _tempo_hits(est_bpm: float | None, ref_bpm: float) -> tuple[float, float]:
    if est_bpm is None or not np.isfinite(ref_bpm):
        return 0.0, 0.0
    acc1 = abs(est_bpm - ref_bpm) <= 0.04 * ref_bpm
    acc2 = any(abs(est_bpm - f * ref_bpm) <= 0.04 * f * ref_bpm for f in (1.0, 2.0, 3.0, 0.5, 1.0 / 3.0))
    return float(acc1), float(acc2)


def score_beats(beats: Sequence[Beat], ref_times: np.ndarray, ref_bar: np.ndarray | None) -> dict:
    """mir_eval scores of emitted beats against annotations (5 s trim, +/-70 ms).

    Returns
    -------
    dict
        ``F, CMLt, AMLt, dbF (None without bar positions), liveF, tempo_acc1, tempo_acc2,
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
        "CMLt": float(cmlt),
        "AMLt": float(amlt),
        "dbF": db,
        "liveF": live_f,
        "tempo_acc1": acc1,
        "tempo_acc2": acc2,
        "delay_p50": float(np.percentile(delays, 50)) if delays.size else None,
        "delay_p95": float(np.percentile(delays, 95)) if delays.size else None,
        "pred_err_p50": _prediction_error(beats, np.asarray(ref_times, dtype=float)),
    }


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
                  progress=None, **kwargs) -> dict:
    """Stream one annotated file through ``backend`` causally and score it.

    Parameters
    ----------
    audio : path
        Audio file; its annotations are ``audio.with_suffix('.beats')`` unless ``beats_file``.
    backend : str
        A :func:`~processors.beat.backends.names` entry.
    progress : callable, optional
        Called with the seconds of audio processed so far, about once per second of audio.
    **kwargs
        Passed to :class:`BeatProcessor` (e.g. tracker options).

    Returns
    -------
    dict
        ``file`` (stem), the :func:`score_beats` keys, ``rtf`` and ``n_beats``.
    """
    audio = Path(audio)
    ref_times, ref_bar = load_annotations(beats_file or audio.with_suffix(".beats"))
    y = load_audio(audio, sr=22050)      # AudioSourceError names the file and the cause
    if y.size == 0:
        raise AudioSourceError(f"{audio}: contains no audio samples")
    proc = BeatProcessor(backend=backend, sr=22050, **kwargs)
    t0 = time.perf_counter()
    beats: list[Beat] = []
    for i in range(0, y.size, CHUNK):
        beats.extend(proc.process(y[i : i + CHUNK]))
        if progress is not None and i % (50 * CHUNK) == 0:  # every second of audio
            progress(i / 22050)
    beats.extend(proc.flush())
    elapsed = time.perf_counter() - t0
    out = {"file": audio.stem}
    out.update(score_beats(beats, ref_times, ref_bar))
    out["rtf"] = elapsed / max(y.size / 22050, 1e-9)
    out["n_beats"] = len(beats)
    return out


def _find_files(directory: Path, files: str | Iterable[str] | None) -> list[Path]:
    if directory.is_file():  # one annotated audio file
        if directory.suffix.lower() not in AUDIO_EXTS:
            raise ConfigError(f"{directory}: neither a folder nor an audio file ({', '.join(AUDIO_EXTS)})")
        if not directory.with_suffix(".beats").is_file():
            raise ConfigError(f"{directory}: no annotation {directory.with_suffix('.beats').name} next to it")
        return [directory]
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such folder or file")
    out = []
    for ann in sorted(directory.glob("*.beats")):
        audio = next((ann.with_suffix(e) for e in AUDIO_EXTS if ann.with_suffix(e).is_file()), None)
        if audio is None:
            continue
        if files is not None:
            pats = [files] if isinstance(files, str) else list(files)
            if not any(fnmatch.fnmatch(audio.name, p) or fnmatch.fnmatch(audio.stem, p) for p in pats):
                continue
        out.append(audio)
    if not out:
        which = f" matching {', '.join([files] if isinstance(files, str) else list(files))}" if files else ""
        raise ConfigError(f"{directory}: no annotated audio (<name>.beats next to <name>.flac/.wav/...){which}")
    return out


def _mean(rows: list[dict]) -> dict:
    mean = {}
    for k in METRICS:
        vals = [r[k] for r in rows if r.get(k) is not None and not (isinstance(r[k], float) and math.isnan(r[k]))]
        mean[k] = float(np.mean(vals)) if vals else None
    return mean


def evaluate_dir(
    dir: str | Path, backends: Sequence[str] = ("dsp",), files: str | Iterable[str] | None = None, **kwargs
) -> dict:
    """Evaluate backends on every annotated file of a directory.

    Parameters
    ----------
    dir : path
        Folder with ``<name>.beats`` + ``<name>.flac`` (or another audio extension), or one such
        audio file.
    backends : sequence of str
        Backend names, each a :func:`~processors.beat.backends.names` entry.
    files : str, iterable of str or None
        Glob pattern(s) on file names or stems; None = all.
    **kwargs
        Passed to every :class:`BeatProcessor`.

    Returns
    -------
    dict
        ``{"backends": {NAME: {"files": [{"file", "F", "CMLt", "AMLt", "dbF", "liveF",
        "tempo_acc1", "tempo_acc2", "delay_p50", "delay_p95", "pred_err_p50", "rtf", "n_beats"}, ...],
        "mean": {same metric keys}}}, "conventions": str}``.
    """
    if isinstance(backends, str):
        backends = [backends]
    for b in backends:
        if b not in names():
            raise ConfigError(f"backend={b!r} must be one of {names()}")
    paths = _find_files(Path(dir), files)
    result: dict = {
        "backends": {},
        "conventions": "mir_eval, causal streaming in 441-sample chunks, 5 s trim, +/-70 ms; delays in s",
    }
    from beatbus.progress import Progress

    with Progress("eval beats", len(paths) * len(backends), "files") as bar:
        for b in backends:
            rows = []
            for p in paths:
                note = f"{b}: {p.name}"
                bar.set(bar.done, note=note)
                rows.append(evaluate_file(p, backend=b, progress=lambda s, note=note: bar.set(bar.done, note=f"{note} {s:.0f} s"),
                                          **kwargs))
                bar.update(1)
            result["backends"][b] = {"files": rows, "mean": _mean(rows)}
    return result


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}"


def format_table(result: dict) -> str:
    """Markdown table per backend (one row per file plus the mean row)."""
    cols = ["F", "CMLt", "AMLt", "dbF", "liveF", "tempo_acc1", "delay_p50", "delay_p95", "pred_err_p50", "rtf"]
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
    if "conventions" in result:
        lines.append(f"_{result['conventions']}_")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``DIR [--backend NAME ...] [--json FILE] [--files GLOB]`` to a parser."""
    parser.add_argument("dir", help="folder with <name>.beats and audio files (or one annotated audio file)")
    parser.add_argument(
        "--backend", action="append", choices=names(), help="backend to evaluate (repeatable; default beatnet)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--files", metavar="GLOB", action="append", help="only files matching GLOB (repeatable)")


def main(argv: Sequence[str] | None = None) -> int:
    """``beatbus eval beats DIR [--backend NAME ...] [--json FILE] [--files GLOB]``; returns 0."""
    argv = list(argv) if argv is not None else None
    if argv and argv[:2] == ["eval", "beats"]:
        argv = argv[2:]
    parser = argparse.ArgumentParser(prog="beatbus eval beats", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = evaluate_dir(args.dir, args.backend or ["beatnet"], files=args.files)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
