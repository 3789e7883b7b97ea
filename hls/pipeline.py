"""``beatbus hls train`` / ``csim``: distil the QKeras model and check the C simulation against it.

The data are the synthetic songs of :mod:`processors.beat.train` (rendered or reused in
``songs_dir``); the last ``val_songs`` of them are the dev set on which agreement is measured.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .model import DEFAULT_WEIGHTS, distill, load_qmodel, save_qmodel, softmax
from .project import DEFAULT_PROJECT, CsimLibrary, find_library

__all__ = ["CSIM_TOLERANCE", "train_hls", "csim_check", "format_csim"]

# max |p_csim - p_qkeras| over dev frames (probabilities): the gate stated in issue 8
CSIM_TOLERANCE = 0.02


def _songs(songs_dir, songs: int, seed: int, val_songs: int, log):
    from processors.beat.train import build_dataset

    data = build_dataset(Path(songs_dir), count=songs, seed=seed, distill=0.0, log=log)
    feats = [f for f, _ in data]
    return feats[:-val_songs], feats[-val_songs:]


def train_hls(*, checkpoint=None, songs_dir=None, songs: int = 60, seed: int = 0, epochs: int = 3,
              val_songs: int = 4, out: str | Path = DEFAULT_WEIGHTS, log=print) -> dict:
    """Distil the QKeras model from the ``small`` torch model (initialised with its weights)."""
    from processors.beat.small import load_small

    t0 = time.perf_counter()
    net = load_small(checkpoint)
    songs_dir = songs_dir or Path.home() / ".cache" / "beatbus" / "synth"
    train, _ = _songs(songs_dir, songs, seed, val_songs, log)
    model = distill(net, train, epochs=epochs, seed=seed, log=log)
    path = save_qmodel(model, net.mean.numpy(), net.std.numpy(), out)
    log(f"wrote {path}.weights.h5 / .json")
    return {"out": str(path), "seconds": time.perf_counter() - t0}


def csim_check(*, project: str | Path = DEFAULT_PROJECT, weights: str | Path = DEFAULT_WEIGHTS, checkpoint=None,
               songs_dir=None, songs: int = 60, seed: int = 0, val_songs: int = 4, max_frames: int = 3000,
               log=print) -> dict:
    """Run the dev frames through C-sim, QKeras and torch; max abs differences of the probabilities.

    Returns
    -------
    dict
        ``frames``, ``max_abs_csim_qkeras``, ``max_abs_csim_torch``, ``max_abs_qkeras_torch``,
        ``argmax_agree`` (csim vs QKeras), ``us_per_frame`` per runtime, ``tolerance``, ``ok``.
    """
    from processors.beat.small import NumpySmall, load_small

    net = load_small(checkpoint)
    model, mean, std = load_qmodel(weights)
    lib = find_library(project)
    songs_dir = songs_dir or Path.home() / ".cache" / "beatbus" / "synth"
    _, dev = _songs(songs_dir, songs, seed, val_songs, log)
    rows = {"csim": [], "qkeras": [], "torch": []}
    cost = {"csim": 0.0, "qkeras": 0.0, "torch": 0.0}
    n = 0
    for f in dev:
        f = f[: max(max_frames - n, 0)]
        if not len(f):
            break
        n += len(f)
        z = ((f - mean) / std).astype(np.float32)
        t = time.perf_counter()
        rows["csim"].append(softmax(CsimLibrary(lib)(z).astype(np.float64)))
        cost["csim"] += time.perf_counter() - t
        t = time.perf_counter()
        rows["qkeras"].append(softmax(model.predict(z[None], verbose=0)[0].astype(np.float64)))
        cost["qkeras"] += time.perf_counter() - t
        npn = NumpySmall(net)
        t = time.perf_counter()
        rows["torch"].append(npn(f, npn.initial_state())[0])  # the torch weights, numpy runtime
        cost["torch"] += time.perf_counter() - t
    p = {k: np.concatenate(v) for k, v in rows.items()}
    res = {
        "frames": n,
        "max_abs_csim_qkeras": float(np.abs(p["csim"] - p["qkeras"]).max()),
        "p99_abs_csim_qkeras": float(np.percentile(np.abs(p["csim"] - p["qkeras"]), 99)),
        "mean_abs_csim_qkeras": float(np.abs(p["csim"] - p["qkeras"]).mean()),
        "max_abs_csim_torch": float(np.abs(p["csim"] - p["torch"]).max()),
        "max_abs_qkeras_torch": float(np.abs(p["qkeras"] - p["torch"]).max()),
        "argmax_agree": float((p["csim"].argmax(1) == p["qkeras"].argmax(1)).mean()),
        "us_per_frame": {k: 1e6 * v / max(n, 1) for k, v in cost.items()},
        "tolerance": CSIM_TOLERANCE,
    }
    res["ok"] = res["max_abs_csim_qkeras"] <= CSIM_TOLERANCE
    return res


def format_csim(res: dict) -> str:
    """The csim agreement as a small text table."""
    lines = [f"dev frames: {res['frames']}",
             f"max |p_csim - p_qkeras| = {res['max_abs_csim_qkeras']:.4f} (tolerance {res['tolerance']})"
             f" {'OK' if res['ok'] else 'FAIL'}",
             f"p99 |p_csim - p_qkeras| = {res['p99_abs_csim_qkeras']:.4f}, mean {res['mean_abs_csim_qkeras']:.5f}",
             f"max |p_csim - p_torch|  = {res['max_abs_csim_torch']:.4f}",
             f"max |p_qkeras - p_torch| = {res['max_abs_qkeras_torch']:.4f}",
             f"argmax agreement csim/qkeras = {res['argmax_agree']:.4f}",
             "us per frame (this machine, whole-song batches for qkeras):"]
    lines += [f"  {k:7s} {v:9.1f}" for k, v in res["us_per_frame"].items()]
    return "\n".join(lines)
