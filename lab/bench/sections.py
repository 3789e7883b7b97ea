"""Live churn of the section analysis: ``beatbus bench sections [INPUT ...] [--loop N] [--mix] [--json FILE]``.

Each input streams through :class:`~processors.structure.online.OnlineStructure` as the
structure daemon runs it: 20 ms chunks, with the beats of the causal beat tracker (``--backend``,
default ``dsp``) fed as they are decided. Per input, over the *live* stream (before its end):

- ``events/min``: published SectionUpdates per minute of audio, and by status (tentative,
  confirmed, revised);
- ``relabels/min``: ``revised`` updates of a section that had already ended (a past section's label
  changed);
- ``dashboard/min``: changes of the label the dashboard shows, the newest open (``end`` None),
  non-tentative section's (``api/static/app.js`` ``noteSection``, ``api/sources.py``
  ``_current_section``), its first appearance not counted;
- ``max/60s``: most events in any 60 s of audio (the bound is ``EVENTS_PER_MIN``);
- ``end``: events of the end of the stream's last word (the song labelled as a whole; outside the bound);
- ``RTF``: analysis + beat tracker compute time / audio time (file decoding not counted).

``--json`` also has the counts, ``sections`` (distinct section starts published) and
``labels_shown`` (how often the dashboard switched to each label).

Inputs: audio files or folders (searched recursively; each file its own stream), ``silence`` and
``tone`` (built in: digital silence, a 440 Hz sine, ``--minutes`` long), which are always added
(the degenerate rows) unless named or ``--no-synthetic``. ``--loop N`` plays each file N times back to
back in one stream (a looped clip); ``--mix`` plays all the files one after another as a single
stream, never ended between them (an endless DJ mix).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["SYNTHETIC", "synthetic", "stream_sections", "dashboard_labels", "churn", "bench_sections", "format_table",
           "add_arguments", "run", "main"]

SR = 22050
HOP = SR // 50                     # 20 ms chunks, as the producers send them
SYNTHETIC = ("silence", "tone")
STATUSES = ("tentative", "confirmed", "revised")


def synthetic(name: str, minutes: float, sr: int = SR) -> np.ndarray:
    """A built-in input: ``silence`` (zeros) or ``tone`` (a 440 Hz sine at -10 dBFS)."""
    n = int(round(minutes * 60 * sr))
    if name == "silence":
        return np.zeros(n, np.float32)
    t = np.arange(n) / sr
    return (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def _audio_files(paths: list[str]) -> list[Path]:
    from beatbus.errors import ConfigError
    from beatbus.lab.annotations import AUDIO_EXTS

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():   # os.walk: linked folders are followed (the game-music folders are links)
            found = sorted(Path(root) / f for root, _, names in os.walk(p, followlinks=True) for f in names
                           if Path(f).suffix.lower() in AUDIO_EXTS)
            if not found:
                raise ConfigError(f"{p}: no audio ({', '.join(AUDIO_EXTS)}) in this folder")
            out += found
        else:
            raise ConfigError(f"{p}: no such folder or file (or built-in input: {', '.join(SYNTHETIC)})")
    return out


def _plan(inputs: list[str], *, loop: int, mix: bool, synthetic_rows: bool) -> list[tuple[str, list]]:
    """``[(row name, [piece, ...])]``: a piece is a file path or a built-in name, played in order."""
    named = [x for x in inputs if x in SYNTHETIC and not Path(x).exists()]
    files = _audio_files([x for x in inputs if x not in named])
    rows: list[tuple[str, list]] = []
    if mix and files:
        name = f"mix of {len(files)} files" + (f" x{loop}" if loop > 1 else "")
        rows.append((name, [f for f in files for _ in range(loop)]))
    else:
        rows += [(f.name + (f" x{loop}" if loop > 1 else ""), [f] * loop) for f in files]
    extra = named or (list(SYNTHETIC) if synthetic_rows else [])
    rows += [(s, [s]) for s in dict.fromkeys(extra)]
    return rows


def stream_sections(pieces: list, *, backend: str = "dsp", minutes: float = 5.0, sr: int = SR,
                    progress=None) -> dict:
    """Stream ``pieces`` (paths or built-in names) back to back as one stream; its updates and costs.

    Returns ``{"live": [SectionUpdate], "end": [SectionUpdate], "seconds": audio s, "compute_s": s}``.
    ``progress(index, piece, seconds)`` is called as each piece begins (0 s) and about once per second of audio.
    """
    from beatbus.audio import load_audio
    from beatbus.processors.beat import BeatProcessor
    from beatbus.processors.structure.online import OnlineStructure

    ana = OnlineStructure(sr=sr, record=True)
    proc = BeatProcessor(backend=backend, sr=sr)
    compute = 0.0
    offset = 0                        # samples streamed before this piece

    def chunks(y: np.ndarray) -> Iterator[np.ndarray]:
        for i in range(0, len(y), HOP):
            yield y[i:i + HOP]

    for index, piece in enumerate(pieces):
        if progress is not None:
            progress(index, piece, 0.0)
        y = synthetic(piece, minutes, sr) if isinstance(piece, str) else load_audio(piece, sr=sr)
        t0 = time.perf_counter()
        for k, chunk in enumerate(chunks(y)):
            ana.process(chunk)
            for b in proc.process(chunk):
                ana.add_beat(b.time, b.beat_in_bar, b.meter)
            if progress is not None and k % 50 == 49:
                compute += time.perf_counter() - t0
                progress(index, piece, (k + 1) * HOP / sr)
                t0 = time.perf_counter()
        compute += time.perf_counter() - t0
        offset += len(y)
    live = list(ana.updates)
    t0 = time.perf_counter()
    end = ana.finish()
    compute += time.perf_counter() - t0
    return {"live": live, "end": end, "seconds": offset / sr, "compute_s": compute}


def dashboard_labels(updates: list) -> list[tuple[float, str]]:
    """``[(decided_at, label)]`` each time the label the dashboard shows changes, the first one included.

    As ``api/static/app.js`` ``noteSection`` draws it: a non-tentative update of an open section
    (``end`` None) that starts no earlier than every section known so far sets the label.
    """
    shown: list[tuple[float, str]] = []
    newest = -float("inf")
    for u in updates:
        if u.status == "tentative":
            continue                            # a mere hint: not drawn
        newest = max(newest, u.start)
        if u.end is None and u.start >= newest and (not shown or shown[-1][1] != u.label):
            shown.append((u.decided_at, u.label))
    return shown


def churn(live: list, end: list, seconds: float) -> dict:
    """The per-minute rates of one stream (see the module docstring)."""
    minutes = max(seconds / 60.0, 1e-9)
    by = {s: sum(u.status == s for u in live) for s in STATUSES}
    relabels = sum(u.status == "revised" and u.end is not None for u in live)
    shown = dashboard_labels([*live, *end])
    dash = max(len(shown) - 1, 0)                                # the first label shown is no change
    t = np.array(sorted(u.decided_at for u in live))
    window = int(max((np.searchsorted(t, x + 60.0, side="left") - i for i, x in enumerate(t)), default=0))
    return {"minutes": seconds / 60.0, "events": len(live), "events_per_min": len(live) / minutes,
            **{f"{s}_per_min": n / minutes for s, n in by.items()},
            "relabels": relabels, "relabels_per_min": relabels / minutes,
            "dashboard_changes": dash, "dashboard_changes_per_min": dash / minutes,
            "max_events_60s": window, "end_events": len(end),
            "labels_shown": {lab: sum(x == lab for _, x in shown) for lab in sorted({x for _, x in shown})}}


def bench_sections(inputs: list[str], *, loop: int = 1, mix: bool = False, backend: str = "dsp",
                   minutes: float = 5.0, synthetic_rows: bool = True) -> list[dict]:
    """One row (:func:`churn` + ``input``, ``rtf``, ``sections``) per stream of :func:`_plan`."""
    from beatbus.progress import Progress

    plan = _plan(inputs, loop=loop, mix=mix, synthetic_rows=synthetic_rows)
    rows = []
    with Progress("bench sections", sum(len(p) for _, p in plan), "pieces") as bar:
        for name, pieces in plan:
            base = bar.done

            def seen(index, piece, s, name=name, base=base):
                label = piece if isinstance(piece, str) else Path(piece).name
                bar.set(base + index, note=f"{name}: {label} {s:.0f} s")

            res = stream_sections(pieces, backend=backend, minutes=minutes, progress=seen)
            bar.set(base + len(pieces))
            row = {"input": name, **churn(res["live"], res["end"], res["seconds"]),
                   "rtf": res["compute_s"] / max(res["seconds"], 1e-9),
                   "sections": len({round(u.start, 3) for u in [*res["live"], *res["end"]]
                                    if u.status != "tentative"})}
            rows.append(row)
    return rows


_COLS = [("min", "minutes", ".1f"), ("ev/min", "events_per_min", ".2f"), ("tent", "tentative_per_min", ".2f"),
         ("conf", "confirmed_per_min", ".2f"), ("rev", "revised_per_min", ".2f"),
         ("relabel/min", "relabels_per_min", ".2f"), ("dash/min", "dashboard_changes_per_min", ".2f"),
         ("max/60s", "max_events_60s", "d"), ("end", "end_events", "d"), ("RTF", "rtf", ".4f")]


def format_table(rows: list[dict], *, backend: str) -> str:
    width = max([len("input"), *(len(r["input"]) for r in rows)])
    head = f"{'input':{width}s} " + " ".join(f"{h:>11s}" for h, _, _ in _COLS)
    lines = [f"live section churn, beats from the causal {backend} tracker; per minute of audio "
             "(tent/conf/rev: events by status; end: the stream end's last word, not in the rates)", head]
    for r in rows:
        lines.append(f"{r['input']:{width}s} " + " ".join(f"{format(r[k], spec):>11s}" for _, k, spec in _COLS))
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from beatbus.processors.beat.backends import names

    ap.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="audio files or folders (recursive), or the built-in 'silence' / 'tone'")
    ap.add_argument("--loop", type=int, default=1, metavar="N", help="play each file N times back to back (default 1)")
    ap.add_argument("--mix", action="store_true",
                    help="all files one after another as a single stream, never ended between them")
    ap.add_argument("--backend", choices=names(), default="dsp", help="causal beat tracker's backend (default dsp)")
    ap.add_argument("--minutes", type=float, default=5.0, help="length of the built-in silence and tone (default 5)")
    ap.add_argument("--no-synthetic", dest="synthetic", action="store_false",
                    help="leave out the built-in silence and tone rows (added unless an INPUT names one)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows to this file")


def run(args: argparse.Namespace) -> int:
    from beatbus.errors import ConfigError

    if args.loop < 1:
        raise ConfigError(f"--loop {args.loop} must be at least 1")
    if not args.minutes > 0:
        raise ConfigError(f"--minutes {args.minutes:g} must be positive")
    if not args.inputs and not args.synthetic:
        raise ConfigError("nothing to play: give an INPUT or leave out --no-synthetic")
    rows = bench_sections(args.inputs, loop=args.loop, mix=args.mix, backend=args.backend, minutes=args.minutes,
                          synthetic_rows=args.synthetic)
    print(format_table(rows, backend=args.backend))
    if args.json:
        doc = {"backend": args.backend, "loop": args.loop, "mix": args.mix, "rows": rows}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="beatbus bench sections", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
