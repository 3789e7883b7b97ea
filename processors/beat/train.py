"""Training of the ``small`` activation model (:mod:`processors.beat.small`).

Data: synthetic songs from :mod:`producers.synth` (music21 scores rendered by FluidSynth, with
exact ``.beats`` annotations). Targets per 20 ms frame are a mix of

* the labels: ``[beat, downbeat, non-beat]`` one-hot at the annotated frame, half weight on the
  two neighbouring frames (annotation jitter, as madmom's target widening), and
* distillation: BeatNet model 1's probabilities on the same audio (``distill`` share),

and the loss is the cross-entropy against that soft target. Everything is seeded
(``torch.manual_seed``, a numpy ``Generator``, deterministic song rendering), so
``beatbus train beat-small --seed S`` reproduces a checkpoint on the same machine.
No file of ``shared/data/beats`` is used: those are kept for evaluation.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .evaluate import load_annotations
from .features import HOP_LENGTH, SR, beatnet_features
from .processor import load_audio
from .small import DEFAULT_CHECKPOINT, SmallNet

import torch

__all__ = ["frame_targets", "song_arrays", "build_dataset", "train_small", "DEFAULT_DISTILL"]

FPS = SR / HOP_LENGTH
DEFAULT_DISTILL = 0.3


def frame_targets(times: np.ndarray, beat_in_bar: np.ndarray | None, n_frames: int) -> np.ndarray:
    """Label distribution ``[shape=(n_frames, 3)]`` over ``[beat, downbeat, non-beat]``.

    Frame ``k`` is centred on ``k / 50`` s; the annotated frame gets weight 1, its two
    neighbours 0.5 (unless another beat is closer).
    """
    y = np.zeros((n_frames, 2))
    down = np.zeros(len(times), dtype=bool) if beat_in_bar is None else np.asarray(beat_in_bar) == 1
    for w, shift in ((0.5, -1), (0.5, 1), (1.0, 0)):  # centre last so it wins over a neighbour's tail
        k = np.round(np.asarray(times) * FPS).astype(int) + shift
        ok = (k >= 0) & (k < n_frames)
        y[k[ok], :] = 0.0
        y[k[ok], down[ok].astype(int)] = np.maximum(y[k[ok], down[ok].astype(int)], w)
    return np.concatenate([y, 1.0 - y.sum(axis=1, keepdims=True)], axis=1)


def song_arrays(audio: Path, *, teacher=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features ``(n, 272)``, label targets ``(n, 3)`` and teacher probabilities ``(n, 3)`` (or None)."""
    y = load_audio(audio, sr=SR)
    feats = beatnet_features(y).astype(np.float32)
    times, bar = load_annotations(audio.with_suffix(".beats"))
    labels = frame_targets(times, bar, feats.shape[0]).astype(np.float32)
    soft = None
    if teacher is not None:
        with torch.inference_mode():
            soft = teacher(torch.from_numpy(feats)[None])[0][0].numpy().astype(np.float32)
    return feats, labels, soft


def build_dataset(songs_dir: Path, *, count: int, seed: int, distill: float = DEFAULT_DISTILL,
                  duration_range: tuple[float, float] = (25.0, 45.0), log=print) -> list[tuple[np.ndarray, np.ndarray]]:
    """Render (or reuse) ``count`` synthetic songs in ``songs_dir`` and return ``(feats, target)`` pairs.

    Songs already rendered with the same name (``synth_<seed>_<i>``) are reused; arrays are cached
    next to them as ``.npz`` (keyed by the distillation share).
    """
    from producers.synth import render_songs

    songs_dir.mkdir(parents=True, exist_ok=True)
    want = [songs_dir / f"synth_{seed}_{i:04d}.flac" for i in range(count)]
    missing = [i for i, p in enumerate(want) if not (p.is_file() and p.with_suffix(".beats").is_file())]
    for i in missing:  # one at a time so a partial run keeps what it rendered
        render_songs(songs_dir, count=1, seed=seed, first=i, duration_range=duration_range, sr=SR)
    teacher = None
    if distill > 0:
        from .bda import BDA

        teacher = BDA.from_beatnet(1)
    data = []
    for p in want:
        cache = p.with_suffix(".small.npz")
        if cache.is_file():
            z = np.load(cache)
            feats, labels, soft = z["feats"], z["labels"], (z["soft"] if "soft" in z else None)
        else:
            feats, labels, soft = song_arrays(p, teacher=teacher)
            np.savez(cache, feats=feats, labels=labels, **({"soft": soft} if soft is not None else {}))
        if distill > 0 and soft is None:
            feats, labels, soft = song_arrays(p, teacher=teacher)
        target = labels if distill <= 0 else (1.0 - distill) * labels + distill * soft
        data.append((feats, target.astype(np.float32)))
    log(f"dataset: {len(data)} songs, {sum(f.shape[0] for f, _ in data)} frames")
    return data


def train_small(
    *,
    songs: int = 60,
    seed: int = 0,
    epochs: int = 30,
    out: str | Path = DEFAULT_CHECKPOINT,
    songs_dir: str | Path | None = None,
    distill: float = DEFAULT_DISTILL,
    seq_len: int = 500,
    batch: int = 16,
    lr: float = 3e-3,
    proj: int = 32,
    hidden: int = 32,
    val_songs: int = 4,
    duration_range: tuple[float, float] = (25.0, 45.0),
    log=print,
) -> dict:
    """Train :class:`SmallNet` and save a checkpoint.

    Parameters
    ----------
    songs : int
        Synthetic songs (the last ``val_songs`` are held out for validation).
    seed : int
        Seeds the songs, the crops and the weights.
    epochs : int
        Passes over random ``seq_len``-frame crops (one crop per training song per epoch, times 4).
    out : path
        Checkpoint written (``{"config", "state_dict", "meta"}``, a few tens of kB).
    songs_dir : path or None
        Render / reuse songs here (default: ``~/.cache/beatbus/synth``).
    distill : float
        Share of BeatNet model 1's probabilities in the target (0 = labels only).
    duration_range : (float, float)
        Song lengths in s (songs already in ``songs_dir`` are reused as they are).

    Returns
    -------
    dict
        ``{"out", "train_loss", "val_loss", "seconds"}``.
    """
    if songs <= val_songs:
        raise ValueError(f"songs={songs} must exceed val_songs={val_songs}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    songs_dir = Path(songs_dir) if songs_dir is not None else Path.home() / ".cache" / "beatbus" / "synth"
    data = build_dataset(songs_dir, count=songs, seed=seed, distill=distill, duration_range=duration_range, log=log)
    train, val = data[:-val_songs], data[-val_songs:]
    net = SmallNet(proj=proj, hidden=hidden)
    allf = np.concatenate([f for f, _ in train])
    net.mean.copy_(torch.from_numpy(allf.mean(axis=0)))
    net.std.copy_(torch.from_numpy(allf.std(axis=0) + 1e-3))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))

    def loss_of(feats, target):
        z, _ = net.logits(feats)
        return -(target * torch.log_softmax(z, dim=-1)).sum(-1).mean()

    train_loss = float("nan")
    for ep in range(epochs):
        net.train()
        order = rng.permutation(np.repeat(np.arange(len(train)), 4))
        losses = []
        for i in range(0, len(order), batch):
            xs, ts = [], []
            for j in order[i : i + batch]:
                f, t = train[j]
                s = int(rng.integers(0, max(f.shape[0] - seq_len, 0) + 1))
                crop_f, crop_t = f[s : s + seq_len], t[s : s + seq_len]
                if crop_f.shape[0] < seq_len:  # short song: pad with silence-like non-beat frames
                    pad = seq_len - crop_f.shape[0]
                    crop_f = np.pad(crop_f, ((0, pad), (0, 0)))
                    crop_t = np.pad(crop_t, ((0, pad), (0, 0)))
                    crop_t[-pad:, 2] = 1.0
                xs.append(crop_f)
                ts.append(crop_t)
            loss = loss_of(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        sched.step()
        train_loss = float(np.mean(losses))
        if ep % 5 == 0 or ep == epochs - 1:
            log(f"epoch {ep + 1}/{epochs}: train loss {train_loss:.4f}")
    net.eval()
    with torch.no_grad():
        val_loss = float(np.mean([float(loss_of(torch.from_numpy(f)[None], torch.from_numpy(t)[None])) for f, t in val]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"songs": songs, "seed": seed, "epochs": epochs, "distill": distill, "val_loss": val_loss}
    torch.save({"config": net.config, "state_dict": net.state_dict(), "meta": meta}, out)
    log(f"val loss {val_loss:.4f}; wrote {out}")
    return {"out": str(out), "train_loss": train_loss, "val_loss": val_loss, "seconds": time.perf_counter() - t0}
