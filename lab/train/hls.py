"""``beatbus hls train`` / ``csim``: distil the QKeras model and check the C simulation against it.

The training data are the synthetic songs of :mod:`lab.train.beat_small` (rendered or reused in
``songs_dir``); the dev set on which agreement is measured is real audio files (``audio``) or else
the last ``val_songs`` synthetic songs. Each dev song is streamed frame by frame through a fresh
C-simulation library (its GRU state carried from frame to frame) and through the QKeras sequence
model from the zero state.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError
from beatbus.hls.model import DEFAULT_WEIGHTS, distill, load_qmodel, save_qmodel, softmax
from beatbus.hls.project import DEFAULT_PROJECT, CsimLibrary, find_library

__all__ = ["CSIM_TOLERANCE", "train_hls", "audio_features", "csim_vs_qkeras", "csim_check", "format_csim"]

# max |p_csim - p_qkeras| over dev frames, on the softmax probabilities of the 3 logits: what the
# hls backend consumes (hls.backend.CsimStep); the gate stated in issue 8
CSIM_TOLERANCE = 0.02


def _songs(songs_dir, songs: int, seed: int, val_songs: int, log):
    from beatbus.lab.train.beat_small import build_dataset

    if songs <= 0:
        return [], []
    data = build_dataset(Path(songs_dir), count=songs, seed=seed, distill=0.0, log=log)
    feats = [f for f, _ in data]
    return feats[:-val_songs], feats[-val_songs:]


def audio_features(path: str | Path) -> np.ndarray:
    """Raw feature frames ``[shape=(n, 272)]`` of an audio file (the backends' front end, whole file)."""
    from beatbus.audio import load_audio
    from beatbus.processors.beat.features import beatnet_features

    return beatnet_features(load_audio(path, sr=22050))


def _audio_files(paths) -> list[Path]:
    """Files as given; folders expanded to their audio files (sorted)."""
    from beatbus.lab.annotations import AUDIO_EXTS

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in AUDIO_EXTS)
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"audio {str(p)!r} does not exist")
    return out


def csim_vs_qkeras(lib: str | Path, model, songs: list[np.ndarray]) -> dict:
    """Agreement of the C simulation with the QKeras sequence model on standardised songs.

    Returns
    -------
    dict
        ``frames``, ``max_abs_csim_qkeras`` / ``p99_abs_csim_qkeras`` / ``mean_abs_csim_qkeras``
        (probabilities, the gate), ``max_abs_logits``, ``argmax_agree``, ``probs`` (csim, QKeras)
        and ``us_per_frame``.
    """
    t0 = time.perf_counter()
    csim = [CsimLibrary(lib)(z).astype(np.float64) for z in songs]  # a fresh state per song
    t1 = time.perf_counter()
    ref = [model.predict(z[None], verbose=0)[0].astype(np.float64) for z in songs]
    t2 = time.perf_counter()
    lc, lq = np.concatenate(csim), np.concatenate(ref)
    pc, pq = softmax(lc), softmax(lq)
    d = np.abs(pc - pq)
    n = max(len(lc), 1)
    return {"frames": len(lc), "max_abs_csim_qkeras": float(d.max()),
            "p99_abs_csim_qkeras": float(np.percentile(d, 99)), "mean_abs_csim_qkeras": float(d.mean()),
            "max_abs_logits": float(np.abs(lc - lq).max()), "argmax_agree": float((lc.argmax(1) == lq.argmax(1)).mean()),
            "probs": (pc, pq), "us_per_frame": {"csim": 1e6 * (t1 - t0) / n, "qkeras": 1e6 * (t2 - t1) / n}}


def train_hls(*, checkpoint=None, songs_dir=None, songs: int = 60, seed: int = 0, epochs: int = 3,
              val_songs: int = 4, data=None, out: str | Path = DEFAULT_WEIGHTS, log=print) -> dict:
    """Distil the QKeras model from the ``small`` torch model (initialised with its weights).

    The targets are the torch model's own probabilities, so any audio serves: the synthetic
    training songs and ``data`` (recordings, files or folders, e.g. those a checkpoint was
    fine-tuned on with ``train beat-small --data``; annotations beside them are not needed).
    """
    from beatbus.processors.beat.small import load_small

    t0 = time.perf_counter()
    net = load_small(checkpoint)
    songs_dir = songs_dir or Path.home() / ".cache" / "beatbus" / "synth"
    train, _ = _songs(songs_dir, songs, seed, val_songs, log)
    files = _audio_files(data or [])
    for i, f in enumerate(files, 1):
        log(f"features {i}/{len(files)}: {f.name}")
        train.append(audio_features(f))
    model = distill(net, train, epochs=epochs, seed=seed, log=log)
    path = save_qmodel(model, net.mean.numpy(), net.std.numpy(), out)
    log(f"wrote {path}.weights.h5 / .json")
    return {"out": str(path), "seconds": time.perf_counter() - t0}


def csim_check(*, project: str | Path = DEFAULT_PROJECT, weights: str | Path = DEFAULT_WEIGHTS, checkpoint=None,
               audio=None, songs_dir=None, songs: int = 60, seed: int = 0, val_songs: int = 4, max_frames: int = 3000,
               log=print) -> dict:
    """Run the dev frames through C-sim, QKeras and torch; max abs differences of the probabilities.

    Parameters
    ----------
    audio : list of paths or None
        Real audio files (folders: all their audio files) as the dev set; None: the synthetic dev songs.

    Returns
    -------
    dict
        ``songs``, the :func:`csim_vs_qkeras` keys (without ``probs``), ``max_abs_csim_torch``,
        ``max_abs_qkeras_torch``, ``tolerance``, ``ok``.
    """
    from beatbus.processors.beat.small import NumpySmall, load_small

    files = _audio_files(audio) if audio else None  # a wrong path fails before the slow loads
    net = load_small(checkpoint)
    model, mean, std = load_qmodel(weights)
    lib = find_library(project)
    if files:
        dev = [audio_features(p) for p in files]
    else:
        _, dev = _songs(songs_dir or Path.home() / ".cache" / "beatbus" / "synth", songs, seed, val_songs, log)
    feats, n = [], 0
    for f in dev:  # the first max_frames frames
        f = f[: max(max_frames - n, 0)]
        if len(f):
            feats.append(f)
            n += len(f)
    res = csim_vs_qkeras(lib, model, [((f - mean) / std).astype(np.float32) for f in feats])
    p_csim, p_qkeras = res.pop("probs")
    npn = NumpySmall(net)
    t = time.perf_counter()
    p_torch = np.concatenate([npn(f, npn.initial_state())[0] for f in feats])  # the torch weights, numpy runtime
    res["us_per_frame"]["torch"] = 1e6 * (time.perf_counter() - t) / max(n, 1)
    res.update(songs=len(feats), max_abs_csim_torch=float(np.abs(p_csim - p_torch).max()),
               max_abs_qkeras_torch=float(np.abs(p_qkeras - p_torch).max()), tolerance=CSIM_TOLERANCE)
    res["ok"] = res["max_abs_csim_qkeras"] <= CSIM_TOLERANCE
    return res


def format_csim(res: dict) -> str:
    """The csim agreement as a small text table."""
    lines = [f"dev frames: {res['frames']} ({res['songs']} songs, streamed with state)",
             f"max |p_csim - p_qkeras| = {res['max_abs_csim_qkeras']:.4f} (tolerance {res['tolerance']})"
             f" {'OK' if res['ok'] else 'FAIL'}",
             f"p99 |p_csim - p_qkeras| = {res['p99_abs_csim_qkeras']:.4f}, mean {res['mean_abs_csim_qkeras']:.5f}",
             f"max |logits_csim - logits_qkeras| = {res['max_abs_logits']:.4f}",
             f"max |p_csim - p_torch|  = {res['max_abs_csim_torch']:.4f}",
             f"max |p_qkeras - p_torch| = {res['max_abs_qkeras_torch']:.4f}",
             f"argmax agreement csim/qkeras = {res['argmax_agree']:.4f}",
             "us per frame (this machine, whole-song batches for qkeras):"]
    lines += [f"  {k:7s} {v:9.1f}" for k, v in res["us_per_frame"].items()]
    return "\n".join(lines)
