"""Multi-stream cost of the beat processor: ``beatbus bench beats``.

N streams of real music (``../shared/data/beats``, or click tracks when it is absent) are fed in
20 ms chunks, as live producers publish them, on one CPU core:

* ``single``: one :class:`~processors.beat.BeatProcessor` per stream, called stream after stream
  (what the processor daemon did before batching);
* ``batched``: one :class:`~processors.beat.BeatBatch` advancing all streams per 20 ms tick;
* ``reference``: a BeatNet-style inference loop as an anchor - per stream and frame our streaming
  features and one call of the torch network (sequence length 1, LSTM state carried), no tracker.
  BeatNet's own package does not import here (it needs madmom), so its realtime mode (8.9 ms per
  frame in the issue) cannot run side by side.

Per tick, the wall time divided by the number of streams is the per-frame cost per stream; the
table gives its p50 / p99, the real-time factor (compute time / audio time, per stream), the same
from the process CPU time (robust against other load on a shared machine) and the streams one core
keeps in real time (``1 / RTF`` of the CPU time). Compare rows of one run, not runs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError

__all__ = ["run_bench", "format_table", "add_arguments", "main"]

CHUNK = 441  # samples per tick: 20 ms at 22050 Hz
SR = 22050
DEFAULT_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "data" / "beats"


def _load_streams(n: int, seconds: float, audio_dir: Path | None) -> list[np.ndarray]:
    """``n`` mono 22050 Hz signals of ``seconds`` each: annotated music files in turn (different
    start offsets when a file repeats), or click tracks at different tempi without the folder."""
    from beatbus.audio import load_audio

    need = int(seconds * SR)
    files = sorted(audio_dir.glob("*.flac")) if audio_dir is not None and audio_dir.is_dir() else []
    if not files and audio_dir is not None and Path(audio_dir).resolve() != DEFAULT_AUDIO.resolve():
        # click tracks stand in only for the default folder (a checkout without ../shared): a folder
        # the user named must be there
        raise ConfigError(f"--audio {audio_dir}: no such folder" if not Path(audio_dir).is_dir()
                          else f"--audio {audio_dir}: no .flac files in it")
    signals: list[np.ndarray] = []
    cache: dict[Path, np.ndarray] = {}
    for i in range(n):
        if files:
            path = files[i % len(files)]
            y = cache.setdefault(path, load_audio(path, sr=SR))
            y = np.tile(y, -(-(need + SR) // y.size))  # long enough for any offset
            off = (i // len(files)) * SR // 3
            signals.append(np.ascontiguousarray(y[off : off + need]))
        else:
            from beatbus.producers import ClickSource

            src = ClickSource(80 + 7 * (i % 15), realtime=False, duration=seconds, meter=3 + i % 2)
            signals.append(np.concatenate([c.samples for c in src])[:need])
    return signals


def _pin_one_core() -> str:
    """Run this process on one CPU with single-threaded BLAS and torch; returns a note."""
    notes = []
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        notes.append(f"pinned to CPU {cpu}")
    except (AttributeError, OSError):
        notes.append("not pinned (no sched_setaffinity)")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        notes.append("BLAS 1 thread")
    except ImportError:
        notes.append("BLAS threads not limited (threadpoolctl missing: set OPENBLAS_NUM_THREADS=1)")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return ", ".join(notes)


def _ticks(signals: list[np.ndarray]) -> int:
    return min(s.size for s in signals) // CHUNK


def _run_single(backend: str, signals: list[np.ndarray], **kw) -> np.ndarray:
    from beatbus.processors.beat.processor import BeatProcessor

    procs = [BeatProcessor(backend=backend, **kw) for _ in signals]
    times = np.empty((_ticks(signals), 2))
    for t in range(times.shape[0]):
        t0, c0 = time.perf_counter(), time.process_time()
        for p, y in zip(procs, signals):
            p.process(y[t * CHUNK : (t + 1) * CHUNK])
        times[t] = time.perf_counter() - t0, time.process_time() - c0
    return times


def _run_batched(backend: str, signals: list[np.ndarray], **kw) -> np.ndarray:
    from beatbus.processors.beat.batch import BeatBatch

    batch = BeatBatch(backend=backend, **kw)
    for i in range(len(signals)):
        batch.add(i)
    times = np.empty((_ticks(signals), 2))
    for t in range(times.shape[0]):
        t0, c0 = time.perf_counter(), time.process_time()
        batch.process({i: y[t * CHUNK : (t + 1) * CHUNK] for i, y in enumerate(signals)})
        times[t] = time.perf_counter() - t0, time.process_time() - c0
    return times


def _run_reference(signals: list[np.ndarray], model: int = 1) -> np.ndarray:
    import torch

    from beatbus.processors.beat.bda import shared_net
    from beatbus.processors.beat.features import StreamingSpectrogram

    net = shared_net(model, "cpu")
    fronts = [StreamingSpectrogram() for _ in signals]
    states = [net.initial_state(1) for _ in signals]
    times = np.empty((_ticks(signals), 2))
    with torch.inference_mode():
        for t in range(times.shape[0]):
            t0, c0 = time.perf_counter(), time.process_time()
            for i, (fe, y) in enumerate(zip(fronts, signals)):
                feats = fe.process(y[t * CHUNK : (t + 1) * CHUNK])
                for f in feats:  # BeatNet's online loop: one network call per frame
                    _, states[i] = net(torch.from_numpy(f)[None, None], states[i])
            times[t] = time.perf_counter() - t0, time.process_time() - c0
    return times


def run_bench(
    streams: Sequence[int] = (1, 10, 20, 50),
    backends: Sequence[str] = ("beatnet", "dsp"),
    *,
    seconds: float = 10.0,
    modes: Sequence[str] = ("single", "batched"),
    reference: bool = True,
    audio_dir: Path | None = DEFAULT_AUDIO,
    warmup: float = 1.0,
    pin: bool = True,
) -> dict:
    """Measure per-frame cost and real-time factor.

    Parameters
    ----------
    streams : sequence of int
        Stream counts to measure.
    backends : sequence of str
        ``BeatProcessor`` backends.
    seconds : float
        Audio seconds per stream (the first ``warmup`` seconds are not counted).
    modes : sequence of {"single", "batched"}
    reference : bool
        Add the BeatNet-style torch-per-frame anchor (needs torch).
    audio_dir : Path or None
        Folder of ``.flac`` music; None (or a missing folder) uses click tracks.
    warmup : float
        Seconds at the start of each run that are not counted.
    pin : bool
        Pin this process to one CPU with single-threaded BLAS and torch (for the rest of its life).

    Returns
    -------
    dict
        ``{"rows": [{"backend", "mode", "streams", "frame_p50_ms", "frame_p99_ms", "rtf", "rtf_cpu",
        "streams_per_core"}, ...], "note": str}`` (per-frame costs are per stream, wall clock;
        ``rtf_cpu`` from the process CPU time).
    """
    note = _pin_one_core() if pin else "not pinned"
    rows = []
    skip = int(warmup * SR / CHUNK)
    for n in streams:
        signals = _load_streams(n, seconds + warmup, audio_dir)
        runs = [(b, m) for b in backends for m in modes]
        if reference and "beatnet" in backends:
            runs.append(("beatnet", "reference"))
        for backend, mode in runs:
            if mode == "single":
                times = _run_single(backend, signals)
            elif mode == "batched":
                times = _run_batched(backend, signals)
            elif mode == "reference":
                times = _run_reference(signals)
            else:
                raise ValueError(f"mode={mode!r} must be 'single', 'batched' or 'reference'")
            per = times[skip:, 0] / n  # wall seconds per frame and stream
            audio = per.size * CHUNK / SR
            rtf, rtf_cpu = float(per.sum() / audio), float(times[skip:, 1].sum() / n / audio)
            rows.append({
                "backend": backend if mode != "reference" else "beatnet (torch/frame)",
                "mode": mode,
                "streams": n,
                "frame_p50_ms": float(np.percentile(per, 50) * 1e3),
                "frame_p99_ms": float(np.percentile(per, 99) * 1e3),
                "rtf": rtf,
                "rtf_cpu": rtf_cpu,
                "streams_per_core": 1.0 / rtf_cpu if rtf_cpu > 0 else float("inf"),
            })
    return {"rows": rows, "note": f"{seconds:g} s of audio per stream in {CHUNK}-sample ticks; {note}"}


def format_table(result: dict) -> str:
    """Markdown table of :func:`run_bench` rows."""
    lines = [
        "| backend | mode | streams | per-frame p50 (ms/stream) | p99 | RTF (wall) | RTF (CPU) | streams/core |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['streams']} | {r['frame_p50_ms']:.3f} | {r['frame_p99_ms']:.3f} "
            f"| {r['rtf']:.4f} | {r['rtf_cpu']:.4f} | {r['streams_per_core']:.0f} |"
        )
    lines.append("")
    lines.append(f"_{result['note']}_")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``[--streams N ...] [--backend NAME ...] [--seconds S] [--mode M ...] [--no-reference]
    [--audio DIR] [--json FILE]``."""
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 20, 50], help="stream counts (default 1 10 20 50)")
    parser.add_argument("--backend", action="append", choices=("beatnet", "dsp"),
                        help="backend (repeatable; default beatnet and dsp)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio seconds per stream (default 10)")
    parser.add_argument("--mode", action="append", choices=("single", "batched"), help="mode (repeatable; default both)")
    parser.add_argument("--no-reference", action="store_true", help="skip the torch-per-frame anchor")
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="folder of .flac music (default ../shared/data/beats)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """``beatbus bench beats ...``: print the table; returns 0."""
    argv = list(argv) if argv is not None else None
    if argv and argv[:2] == ["bench", "beats"]:
        argv = argv[2:]
    parser = argparse.ArgumentParser(prog="beatbus bench beats", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.streams) or not args.seconds > 0:
        parser.error("--streams must be >= 1 and --seconds > 0")
    result = run_bench(
        args.streams,
        args.backend or ["beatnet", "dsp"],
        seconds=args.seconds,
        modes=args.mode or ["single", "batched"],
        reference=not args.no_reference,
        audio_dir=args.audio,
    )
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
