"""Section evaluation: ``beatbus eval sections DIR [--mode online|offline] [--backend NAME] [--json FILE]``.

DIR holds audio files (flac, wav, ogg, mp3) each with a ``<name>.sections`` file
(``start<TAB>end<TAB>label``), e.g. ``../shared/data/sections`` or songs from
``beatbus synth songs``. Per file and mean, with ``mir_eval.segment``:

- ``F05`` / ``F3``: boundary detection F-measure with +/-0.5 s and +/-3 s windows, ``trim=True``
  (the first and last boundaries, i.e. the file's start and end, are not counted);
- ``pairwise_F``: frame-pair clustering F of our repetition groups against the reference labels;
- ``label_acc``: fraction of 0.1 s frames whose label matches, over the frames whose reference
  label maps to intro / verse / chorus / bridge / outro (:func:`functional_label`; others such
  as ``Silence`` or ``MainRiff`` are left out and ``label_coverage`` says how much was scored);
- online only: ``confirm_delay_p50``: median time (s) from a reference boundary to the
  confirmed SectionEvent that matched it (within 3 s), ``confirm_delay_bars_p50`` the same in
  bars (bar length from the ``.beats`` annotation when there is one, whatever ``--beats``),
  and ``label_acc_live``: label accuracy of the label known *at* each moment (before later
  revisions);
- ``rtf``: compute time / audio time.

Online mode streams the audio in 20 ms chunks through :class:`~.online.OnlineStructure`, the
labels scored are those after the stream's end (revisions included). Beats (``--beats``): the
analysis's own (default; offline: the offline beat decoder's beats and bars with ``--backend``,
default the configured backend; online: the onset grid), the annotations (``<name>.beats``, each
beat delivered 0.1 s after it happened), or the beat tracker (offline: the offline decoder, as
the default; online: the causal tracker's output, backend ``dsp``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from beatbus.audio import load_audio
from beatbus.processors.beat.cli import add_backend_options
from beatbus.processors.structure.offline import SR, analyze_structure
from beatbus.processors.structure.online import OnlineStructure

__all__ = ["functional_label", "load_reference", "pad_reference", "score", "run_online", "evaluate_dir",
           "add_arguments", "run", "main", "KEYS"]

KEYS = ("F05", "F3", "pairwise_F", "label_acc", "confirm_delay_p50")
AUDIO_EXT = (".flac", ".wav", ".ogg", ".mp3")
_SYNONYMS = {"intro": "intro", "verse": "verse", "chorus": "chorus", "bridge": "bridge", "outro": "outro",
             "refrain": "chorus", "preverse": "verse", "prechorus": "verse", "coda": "outro", "fadeout": "outro",
             "ending": "outro", "end": "outro", "break": "bridge", "interlude": "bridge", "introduction": "intro"}


def functional_label(label: str) -> str | None:
    """Map an annotator's label to intro / verse / chorus / bridge / outro, or None (not scored).

    Case, digits, separators and suffixes are ignored (``"Verse 2"``, ``"chorus_b"``,
    ``"Pre-verse"``); ``pre-verse`` and ``pre-chorus`` count as verse, ``refrain`` as chorus,
    ``coda`` / ``fade-out`` as outro, ``break`` / ``interlude`` as bridge.
    """
    s = re.sub(r"[^a-z]", "", re.sub(r"[\s_]*(\d+|[a-z])$", "", label.strip().lower()) or label.lower())
    if s in _SYNONYMS:
        return _SYNONYMS[s]
    s2 = re.sub(r"[^a-z]", "", label.strip().lower())
    return _SYNONYMS.get(s2)


def load_reference(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """``.sections`` file -> (intervals [n, 2], labels), in time order, as annotated (gaps kept).

    Raises
    ------
    ConfigError
        Unreadable file, no sections, or a line that is not ``start<TAB>end[<TAB>label]``.
    """
    from beatbus.errors import ConfigError

    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read annotations ({getattr(exc, 'strerror', None) or exc})") from None
    ints, labs = [], []
    for n, ln in enumerate(lines, start=1):
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        parts = ln.split("\t") if "\t" in ln else ln.split(None, 2)
        try:
            start, end = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            raise ConfigError(f"{path}:{n}: expected 'start<TAB>end<TAB>label', got {ln.strip()[:60]!r}") from None
        if not 0 <= start <= end:
            raise ConfigError(f"{path}:{n}: section {start:g}-{end:g} s must have 0 <= start <= end")
        ints.append([start, end])
        labs.append(parts[2].strip() if len(parts) > 2 and parts[2].strip() else "unknown")
    if not ints:
        raise ConfigError(f"{path}: no sections (one 'start<TAB>end<TAB>label' per line)")
    order = np.argsort([a for a, _ in ints], kind="stable")
    return np.array(ints, dtype=float)[order], [labs[i] for i in order]


def pad_reference(ints: np.ndarray, labs: list[str]) -> tuple[np.ndarray, list[str]]:
    """Annotations made contiguous from 0 s, as mir_eval's own ``segment.evaluate`` pads them.

    Real annotations leave gaps (the first section starting after 0 s, unannotated stretches
    between sections); mir_eval's structure metrics need intervals that start at 0. The lead-in
    gets ``__T_MIN`` (:func:`mir_eval.util.adjust_intervals`), inner gaps ``__GAP``: neither is a
    functional label, so neither is scored by ``label_acc``.
    """
    import mir_eval

    filled, flabs = [ints[0]], [labs[0]]
    for (start, end), lab in zip(ints[1:], labs[1:]):
        if start > filled[-1][1] + 1e-6:
            filled.append(np.array([filled[-1][1], start]))
            flabs.append("__GAP")
        filled.append(np.array([max(start, filled[-1][1]), max(end, filled[-1][1])]))
        flabs.append(lab)
    return mir_eval.util.adjust_intervals(np.array(filled, dtype=float), flabs, t_min=0.0)


def _label_at(ints: np.ndarray, labs: list, t: float):
    i = int(np.searchsorted(ints[:, 0], t, side="right")) - 1
    return labs[min(max(i, 0), len(labs) - 1)]


def score(ref_int: np.ndarray, ref_lab: list[str], est_int: np.ndarray, est_lab: list[str], est_grp: list,
          *, confirmed: list[tuple[float, float]] | None = None, bar_s: float | None = None,
          live: list | None = None) -> dict:
    """The metrics of one file (see the module docstring)."""
    import mir_eval

    ref_int, ref_lab = pad_reference(np.asarray(ref_int, dtype=float), list(ref_lab))
    end = float(ref_int[-1, 1])
    est_int = np.asarray(est_int, dtype=float).copy()
    est_int, grp = mir_eval.util.adjust_intervals(est_int, [str(g) for g in est_grp], t_min=0.0, t_max=end)
    _, labs = mir_eval.util.adjust_intervals(np.asarray(est_int), list(est_lab), t_min=0.0, t_max=end)
    out: dict = {}
    out["F05"] = float(mir_eval.segment.detection(ref_int, est_int, window=0.5, trim=True)[2])
    out["F3"] = float(mir_eval.segment.detection(ref_int, est_int, window=3.0, trim=True)[2])
    out["pairwise_F"] = float(mir_eval.segment.pairwise(ref_int, ref_lab, est_int, grp)[2])
    ts = np.arange(0.05, end, 0.1)
    ref_f = [functional_label(_label_at(ref_int, ref_lab, t)) for t in ts]
    scored = [i for i, r in enumerate(ref_f) if r is not None]
    hits = [ref_f[i] == _label_at(est_int, labs, ts[i]) for i in scored]
    out["label_acc"] = float(np.mean(hits)) if scored else None
    out["label_coverage"] = len(scored) / max(len(ts), 1)
    if confirmed is not None:
        delays = []
        for b in ref_int[1:, 0]:
            m = [d for s, d in confirmed if abs(s - b) <= 3.0]
            if m:
                delays.append(min(m) - b)
        out["confirm_delay_p50"] = float(np.median(delays)) if delays else None
        out["confirm_delay_bars_p50"] = (float(np.median(delays)) / bar_s if delays and bar_s else None)
        if live is not None and scored:
            out["label_acc_live"] = float(np.mean([ref_f[i] == _live_label(live, ts[i]) for i in scored]))
    return out


def _live_label(updates: list, t: float) -> str:
    """The label of the section the analyser believed ``t`` was in, as known at time ``t``."""
    known = [u for u in updates if u.decided_at <= t + 1e-9]
    starts = [u for u in known if u.status in ("tentative", "confirmed") and u.start <= t]
    if not starts:
        return "unknown"
    cur = max(starts, key=lambda u: (u.start, u.decided_at)).start
    about = [u for u in known if abs(u.start - cur) < 1e-6]
    return max(about, key=lambda u: u.decided_at).label


def _bar_seconds(audio: Path) -> float | None:
    """Median bar length from the ``.beats`` annotation, when there is one (for delays in bars)."""
    f = audio.with_suffix(".beats")
    if not f.exists():
        return None
    rows = np.loadtxt(f, ndmin=2)
    if len(rows) < 3:
        return None
    return float(np.median(np.diff(rows[:, 0]))) * (int(rows[:, 1].max()) if rows.shape[1] > 1 else 4)


def _beats_for(audio: Path, mode: str) -> np.ndarray | None:
    if mode != "annotations":
        return None
    f = audio.with_suffix(".beats")
    return np.loadtxt(f, ndmin=2) if f.exists() else None


def run_online(y: np.ndarray, *, sr: int = 22050, beats: np.ndarray | None = None, tracker: bool = False,
               beat_latency: float = 0.1, progress=None) -> tuple[OnlineStructure, list]:
    """Stream ``y`` through :class:`OnlineStructure` in 20 ms chunks; return it and every update.

    ``progress(seconds)``, if given, is called about once per second of audio streamed.
    """
    ana = OnlineStructure(sr=sr, record=True)
    proc = None
    if tracker:
        from beatbus.processors.beat import BeatProcessor

        proc = BeatProcessor(backend="dsp", sr=sr)
    hop = sr // 50
    bi = 0
    meter = int(beats[:, 1].max()) if beats is not None and beats.shape[1] > 1 else None
    for i in range(0, len(y), hop):
        chunk = y[i:i + hop]
        ana.process(chunk)
        now = (i + len(chunk)) / sr
        if progress is not None and i % sr < hop:
            progress(now)
        if beats is not None:
            while bi < len(beats) and beats[bi, 0] + beat_latency <= now:
                pos = int(beats[bi, 1]) if beats.shape[1] > 1 else None
                ana.add_beat(float(beats[bi, 0]), pos, meter)
                bi += 1
        if proc is not None:
            for b in proc.process(chunk):
                ana.add_beat(b.time, b.beat_in_bar, b.meter)
    ana.finish()
    return ana, ana.updates


def _find(path: Path) -> list[Path]:
    from beatbus.errors import ConfigError

    if path.is_file():
        if path.suffix.lower() not in AUDIO_EXT:
            raise ConfigError(f"{path}: neither a folder nor an audio file ({', '.join(AUDIO_EXT)})")
        if not path.with_suffix(".sections").is_file():
            raise ConfigError(f"{path}: no annotation {path.with_suffix('.sections').name} next to it")
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder or file")
    return sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_EXT and p.with_suffix(".sections").exists())


def evaluate_dir(path: str | Path, *, modes=("offline", "online"), beats: str = "none", backend: str | None = None,
                 device: str | None = None) -> dict:
    """``{"modes": {mode: {"files": [{"file", KEYS...}], "mean": {...}}}, "beats": beats, "backend": NAME}``.

    ``backend`` and ``device`` (default: the configured ones): the offline beat decoder's, for the
    offline mode's beats unless ``beats`` is ``annotations``.
    """
    from beatbus.config import load_settings

    path = Path(path)
    settings = load_settings({"backend": backend, "device": device})
    files = _find(path)
    if not files:
        raise FileNotFoundError(f"{path}: no audio files with a .sections annotation")
    result: dict = {"beats": beats, "backend": settings.backend, "modes": {}}
    from beatbus.progress import Progress

    with Progress("eval sections", len(files) * len(modes), "files") as bar:
        for mode in modes:
            rows = []
            for audio in files:
                note = f"{mode}: {audio.name}"
                bar.set(bar.done, note=note)
                ref_int, ref_lab = load_reference(audio.with_suffix(".sections"))
                bt = _beats_for(audio, beats)
                bar_s = _bar_seconds(audio)
                y = load_audio(audio, sr=SR)
                t0 = time.perf_counter()
                if mode == "offline":
                    secs = analyze_structure(y, bt, backend=settings.backend, device=settings.device).sections
                    extra: dict = {}
                else:
                    ana, updates = run_online(y, beats=bt, tracker=beats == "tracker",
                                              progress=lambda t, note=note: bar.set(bar.done, note=f"{note} {t:.0f} s"))
                    secs = ana.sections
                    confirmed = [(u.start, u.decided_at) for u in updates if u.status == "confirmed" and u.start > 0]
                    extra = {"confirmed": confirmed, "bar_s": bar_s, "live": updates}
                dt = time.perf_counter() - t0
                est_int = np.array([[s["start"], s["end"]] for s in secs])
                m = score(ref_int, ref_lab, est_int, [s["label"] for s in secs], [s["group"] for s in secs], **extra)
                m["rtf"] = dt / (len(y) / 22050)
                rows.append({"file": audio.name, **m, "sections": [[s["start"], s["end"], s["label"]] for s in secs]})
                bar.update(1)
            mean = {}
            for k in {k for r in rows for k in r if k not in ("file", "sections")}:
                vals = [r[k] for r in rows if r.get(k) is not None]
                mean[k] = float(np.mean(vals)) if vals else None
            result["modes"][mode] = {"files": rows, "mean": mean}
    return result


def _f(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("dir", help="directory (or one file) with audio + .sections annotations")
    ap.add_argument("--mode", action="append", choices=["online", "offline"],
                    help="online and/or offline (repeatable; default both)")
    ap.add_argument("--beats", choices=["none", "annotations", "tracker"], default="none",
                    help="beat grid: the analysis's own (none, default: offline the offline beat decoder, "
                         "online the onset grid), the .beats annotations, or the beat tracker (online: causal, dsp)")
    add_backend_options(ap)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--quiet", action="store_true", help="print only the means")


def run(args: argparse.Namespace) -> int:
    res = evaluate_dir(args.dir, modes=tuple(args.mode or ("offline", "online")), beats=args.beats,
                       backend=args.backend, device=args.device)
    cols = ["F05", "F3", "pairwise_F", "label_acc", "confirm_delay_p50", "confirm_delay_bars_p50",
            "label_acc_live", "rtf"]
    head = ["F@0.5", "F@3", "pairF", "labAcc", "delay_s", "delay_bars", "labLive", "RTF"]
    print(f"beats: {res['beats']} (backend {res['backend']}); boundary F with trim=True; "
          "labels over intro/verse/chorus/bridge/outro")
    for mode, block in res["modes"].items():
        print(f"\n[{mode}]")
        print(f"{'file':36s} " + " ".join(f"{h:>10s}" for h in head))
        rows = [] if args.quiet else block["files"]
        for r in [*rows, {"file": "MEAN", **block["mean"]}]:
            print(f"{r['file'][:36]:36s} " + " ".join(f"{_f(r.get(c)):>10s}" for c in cols))
    if args.json:
        doc = {"beats": res["beats"], "backend": res["backend"],
               "modes": {m: {"files": [{k: v for k, v in r.items()} for r in b["files"]], "mean": b["mean"]}
                         for m, b in res["modes"].items()}}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``beatbus eval sections DIR [--mode online|offline] [--beats ...] [--json FILE]``."""
    ap = argparse.ArgumentParser(prog="beatbus eval sections", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    try:
        return run(ap.parse_args(argv))
    except FileNotFoundError as exc:
        from beatbus.errors import ConfigError

        raise ConfigError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
