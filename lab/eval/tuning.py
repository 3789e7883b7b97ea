"""Nested cross-validation of the beat tracker's settings (``beatbus eval beats ... --tune KEY=V1,V2``).

Each fold of leave-one-group-out picks, among every combination of the ``--tune`` values, the one
with the best ``select`` metric (beat F by default) averaged over the training groups (each group
weighs the same), and scores it on the held-out group: the mean over folds estimates what the tuning procedure gives on music it
never saw. The setting picked on all files is reported too (what would ship), with its in-sample
score marked as such.

The decoder's settings are tunable (:class:`~processors.beat.tracker.BarTracker` keywords online,
:class:`~processors.beat.offline.OfflineDecoder` keywords with ``--offline``), and the backend's own
:data:`BACKEND_KEYS` (the network's flux share): the backend's activations of every file are computed
once per backend setting and replayed for each combination, exactly as
:class:`~processors.beat.processor.BeatProcessor` feeds them (441-sample chunks, then the flush).
"""
from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from beatbus.audio import load_audio
from beatbus.errors import ConfigError
from beatbus.processors.beat import backends
from beatbus.processors.beat.backends import FPS
from beatbus.processors.beat.offline import OfflineDecoder
from beatbus.processors.beat.tracker import BarTracker, Beat

__all__ = ["BACKEND_KEYS", "parse_grid", "combinations", "backend_variants", "Replay", "replay_file", "tune"]

SR = 22050
CHUNK = 441  # as lab.eval.beats: the live producer's chunk


def _value(key: str, text: str):
    """``none`` -> None, ``100:0.5`` -> (100.0, 0.5), ``2:3:4`` for meters -> (2, 3, 4), else a number."""
    t = text.strip().lower()
    if t == "none":
        return None
    try:
        if ":" in t:
            kind = int if key == "meters" else float
            return tuple(kind(x) for x in t.split(":"))
        return int(t) if key in ("observation_lambda", "lookahead", "beat_frames") else float(t)
    except ValueError:
        raise ConfigError(f"--tune {key}: {text!r} is not a number, 'none' or a:b") from None


def parse_grid(specs: Sequence[str], *, offline: bool = False) -> dict[str, list]:
    """``["transition_lambda=50,100", "tempo_prior=none,100:0.5"]`` -> ``{key: [values]}``.

    Keys must be keywords of the decoder being tuned (BarTracker online, OfflineDecoder offline).
    """
    target = OfflineDecoder if offline else BarTracker
    known = (set(inspect.signature(target.__init__).parameters) - {"self", "fps"}) | set(BACKEND_KEYS)
    grid: dict[str, list] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError(f"--tune {spec!r} must be KEY=V1,V2,...")
        if key not in known:
            raise ConfigError(f"--tune {key}: not a setting of the {'offline' if offline else 'online'} decoder "
                              f"or of the backend "
                              f"(known: {', '.join(sorted(known))})")
        if key in grid:
            raise ConfigError(f"--tune {key} given twice")
        grid[key] = [_value(key, v) for v in values.split(",") if v.strip()]
    return grid


def combinations(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in a fixed order ({} for an empty grid)."""
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def describe(config: dict) -> str:
    """``transition_lambda=100 tempo_prior=100:0.5`` (``default`` for {})."""
    def fmt(v):
        if isinstance(v, tuple):
            return ":".join(f"{x:g}" for x in v)
        return "none" if v is None else f"{v:g}"
    return " ".join(f"{k}={fmt(v)}" for k, v in config.items()) or "default"


# settings of the backend itself, not of the decoder: each value needs the activations computed again
BACKEND_KEYS = ("onset_weight",)


def split(config: dict) -> tuple[tuple, dict]:
    """``config`` -> (its backend settings as a sorted tuple of pairs, its decoder settings)."""
    return (tuple(sorted((k, v) for k, v in config.items() if k in BACKEND_KEYS)),
            {k: v for k, v in config.items() if k not in BACKEND_KEYS})


def backend_variants(grid: dict[str, list]) -> list[tuple]:
    """The activation sets the grid needs: one per combination of backend settings (as :func:`split`
    gives them), the default's first."""
    return list(dict.fromkeys(split(c)[0] for c in [{}, *combinations(grid)]))


@dataclass
class Replay:
    """One file's backend output, kept to decode it again under other settings."""

    pieces: list  # Frames per 441-sample chunk, then the flush's
    end_s: float
    tracker_settings: dict
    latency: float


def replay_file(path: Path, backend: str, **backend_kwargs) -> Replay:
    """The backend's frames of one file, chunk by chunk as the live processor sees them."""
    y = load_audio(path, sr=SR)
    act = backends.create(backend, sr=SR, **backend_kwargs)
    pieces = [act.process(np.ascontiguousarray(y[i:i + CHUNK])) for i in range(0, y.size, CHUNK)]
    pieces.append(act.flush())
    return Replay([p for p in pieces if p[0].shape[0]], y.size / SR, dict(act.tracker_settings), act.latency)


def decode(replay: Replay, config: dict, *, offline: bool = False) -> list[Beat]:
    """Beats of a replayed file under ``config`` (which wins over the backend's tracker settings)."""
    if offline:
        settings = {**backends.offline_settings(replay.tracker_settings), **config}
        cat = [np.concatenate([p[i] for p in replay.pieces]) for i in range(3)]
        return OfflineDecoder(fps=FPS, **settings).decode(cat[0], gate=cat[1], onset=cat[2])
    settings = {**replay.tracker_settings, "frame_delay": replay.latency, **config}
    tracker = BarTracker(fps=FPS, **settings)
    beats: list[Beat] = []
    for act, gate, onset, periodic in replay.pieces:
        beats.extend(tracker.process(act, gate=gate, onset=onset, periodic=periodic))
    # as BeatProcessor.flush: nothing is decided after the stream's end
    return [replace(b, decided_at=min(b.decided_at, replay.end_s)) for b in beats]


def tune(paths: Sequence[Path], groups: Sequence[str], backend: str, grid: dict[str, list], *,
         score, metrics: Sequence[str], select: str = "F", offline: bool = False, progress=None) -> dict:
    """Leave-one-group-out nested selection over ``grid``.

    Parameters
    ----------
    paths, groups
        Annotated audio files and their groups (at least two groups).
    score : callable
        ``score(path, beats) -> dict`` of metrics for one file.
    select : str
        The metric maximised on each fold's training groups (mean of the group means).
    progress : Progress, optional
        Advanced once per file replayed and once per (combination, file) decoded.

    Returns
    -------
    dict
        ``{"grid", "select", "folds": [{"held_out", "n_train", "n_val", "config", **metrics,
        "default": {**metrics}}], "mean": {metrics}, "default_mean": {metrics}, "all_files":
        {"config", **metrics (in-sample, file mean)}, "table": [{"config", "files": {stem: select
        metric}}]}``.
    """
    combos = combinations(grid)
    if {} not in combos:
        combos = [{}] + combos  # the shipped setting, the baseline every fold is compared with
    replays: dict[tuple, list[Replay]] = {}  # per backend setting: every file's activations
    for variant in backend_variants(grid):
        replays[variant] = []
        for p in paths:
            if progress is not None:
                progress.set(progress.done, note=f"{backend} {describe(dict(variant))}: activations of {p.name}")
            replays[variant].append(replay_file(p, backend, **dict(variant)))
            if progress is not None:
                progress.update(1)
    table = np.full((len(combos), len(paths)), None, dtype=object)  # per combination, per file: metrics
    for c, config in enumerate(combos):
        variant, decoder = split(config)
        for f, (p, r) in enumerate(zip(paths, replays[variant])):
            if progress is not None:
                progress.set(progress.done, note=f"{describe(config)}: {p.name}")
            table[c, f] = score(p, decode(r, decoder, offline=offline))
            if progress is not None:
                progress.update(1)

    def mean(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
        return float(np.mean(vals)) if vals else None

    def best(cols) -> int:
        """The combination with the best mean over the groups of ``cols`` (each group weighs the
        same, as in the reported mean over folds: 45 classical clips must not outvote the rest)."""
        by_group: dict[str, list[int]] = {}
        for f in cols:
            by_group.setdefault(groups[f], []).append(f)

        def balanced(c: int) -> float:
            means = [mean([table[c, f] for f in fs], select) for fs in by_group.values()]
            means = [m for m in means if m is not None]
            return float(np.mean(means)) if means else -np.inf
        return int(np.argmax([balanced(c) for c in range(len(combos))]))  # ties: the earlier (the default first)

    folds = []
    for g in sorted(set(groups)):
        val = [f for f, x in enumerate(groups) if x == g]
        train = [f for f, x in enumerate(groups) if x != g]
        c = best(train)
        folds.append({"held_out": g, "n_train": len(train), "n_val": len(val), "config": describe(combos[c]),
                      **{k: mean([table[c, f] for f in val], k) for k in metrics},
                      "default": {k: mean([table[0, f] for f in val], k) for k in metrics}})
    everything = list(range(len(paths)))
    c_all = best(everything)
    return {
        "grid": {k: [describe({k: v}).split("=", 1)[1] for v in vs] for k, vs in grid.items()},
        "select": select,
        "n_combinations": len(combos),
        "folds": folds,
        "mean": {k: mean(folds, k) for k in metrics},
        "default_mean": {k: mean([f["default"] for f in folds], k) for k in metrics},
        "all_files": {"config": describe(combos[c_all]),
                      **{k: mean([table[c_all, f] for f in everything], k) for k in metrics}},
        # every combination's score per file, to re-select or re-group without decoding again
        "table": [{"config": describe(cfg), "files": {Path(p).stem: table[c, f][select] for f, p in enumerate(paths)}}
                  for c, cfg in enumerate(combos)],
    }
