"""Cost of the intensity features per 20 ms frame and stream, on one core.

``beatbus intensity bench [--streams 1,8,32] [--seconds 30] [--json FILE]`` (or
``python -m beatbus.lab.bench.intensity``): feeds ``N`` independent streams of synthetic music-like
audio (noise bursts on a beat over a chord) round-robin in 441-sample chunks, as the daemon does,
and reports per-frame cost p50/p99 and the real-time factor, for the features alone and for
features + transition detector; then the online structure analysis on one stream; with librosa
installed, librosa's offline rms + centroid + onset strength on the same audio as a reference.
The process is pinned to one core.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from beatbus.processors.intensity.features import IntensityFeatures
from beatbus.processors.intensity.predict import TransitionDetector

__all__ = ["bench_features", "bench_structure", "add_arguments", "run", "main"]


def _music(seconds: float, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    beat = (t % 0.5) < 0.03
    y = y + 0.3 * beat * rng.standard_normal(t.size)
    return y.astype(np.float32)


def bench_features(*, streams: int, seconds: float, sr: int = 22050, hop: int = 441,
                   detector: bool = False) -> dict:
    """Per-frame cost (s) of ``streams`` streams processed round-robin, chunk by chunk."""
    audio = [_music(seconds, sr, k) for k in range(streams)]
    feats = [IntensityFeatures(sr=sr, hop_length=hop) for _ in range(streams)]
    dets = [TransitionDetector(fps=sr / hop) for _ in range(streams)] if detector else None
    n_chunks = len(audio[0]) // hop
    costs = np.empty(n_chunks * streams)
    k = 0
    t_all = time.perf_counter()
    for c in range(n_chunks):
        for s in range(streams):
            t0 = time.perf_counter()
            frames = feats[s].process(audio[s][c * hop:(c + 1) * hop])
            if dets is not None:
                for f in frames:
                    dets[s].push(f)
            costs[k] = time.perf_counter() - t0
            k += 1
    total = time.perf_counter() - t_all
    audio_s = n_chunks * hop / sr * streams
    return {"streams": streams, "detector": detector, "frames": int(k), "p50_ms": float(np.percentile(costs, 50) * 1e3),
            "p99_ms": float(np.percentile(costs, 99) * 1e3), "mean_ms": float(costs.mean() * 1e3),
            "rtf": total / audio_s, "streams_per_core_at_rtf_0.5": 0.5 / (total / audio_s)}


def bench_structure(*, seconds: float, sr: int = 22050, hop: int = 441) -> dict:
    """Per-chunk cost of the online structure analysis (one stream; 40 ms features, novelty, labels)."""
    from beatbus.processors.structure.online import OnlineStructure

    y = _music(seconds, sr, 0)
    ana = OnlineStructure(sr=sr)
    n = len(y) // hop
    costs = np.empty(n)
    t_all = time.perf_counter()
    for c in range(n):
        t0 = time.perf_counter()
        ana.process(y[c * hop:(c + 1) * hop])
        costs[c] = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    return {"streams": 1, "detector": False, "frames": n, "p50_ms": float(np.percentile(costs, 50) * 1e3),
            "p99_ms": float(np.percentile(costs, 99) * 1e3), "mean_ms": float(costs.mean() * 1e3),
            "rtf": total / (n * hop / sr), "streams_per_core_at_rtf_0.5": 0.5 / (total / (n * hop / sr))}


def _librosa_reference(seconds: float, sr: int, hop: int) -> dict | None:
    try:
        import librosa
    except ImportError:
        return None
    y = _music(seconds, sr, 0)
    librosa.feature.rms(y=y[:sr], hop_length=hop)            # warm-up (numba, caches)
    t0 = time.perf_counter()
    librosa.feature.rms(y=y, frame_length=1024, hop_length=hop)
    librosa.feature.spectral_centroid(y=y, sr=sr, n_fft=1024, hop_length=hop)
    librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop)
    dt = time.perf_counter() - t0
    frames = len(y) // hop
    return {"streams": 1, "detector": False, "frames": frames, "p50_ms": None, "p99_ms": None,
            "mean_ms": dt / frames * 1e3, "rtf": dt / seconds, "streams_per_core_at_rtf_0.5": 0.5 / (dt / seconds)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--streams", default="1,8,32", help="comma-separated stream counts (default 1,8,32)")
    ap.add_argument("--seconds", type=float, default=30.0, help="audio per stream (default 30)")
    ap.add_argument("--json", help="also write the rows to this file")


def run(args: argparse.Namespace) -> int:
    try:
        counts = [int(x) for x in args.streams.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or not args.seconds > 0:
        raise ValueError(f"--streams={args.streams!r} must be positive integers and --seconds > 0")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = []
    for n in counts:
        for det in (False, True):
            rows.append({"stage": "features+detector" if det else "features",
                         **bench_features(streams=n, seconds=args.seconds, detector=det)})
    rows.append({"stage": "structure (online, per 20 ms chunk)", **bench_structure(seconds=args.seconds)})
    ref = _librosa_reference(args.seconds, 22050, 441)
    if ref:
        rows.append({"stage": "librosa offline (rms+centroid+onset)", **ref})
    print(f"{'stage':38s} {'streams':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'mean ms':>7s} {'RTF':>7s} "
          f"{'streams/core@0.5':>16s}")

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    for r in rows:
        print(f"{r['stage']:38s} {r['streams']:7d} {f(r['p50_ms']):>7s} {f(r['p99_ms']):>7s} {f(r['mean_ms']):>7s} "
              f"{r['rtf']:7.4f} {r['streams_per_core_at_rtf_0.5']:16.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="beatbus intensity bench", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
