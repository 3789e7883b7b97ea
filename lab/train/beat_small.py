"""Training of the ``small`` activation model (:mod:`processors.beat.small`).

Data: synthetic songs from :mod:`lab.synth` (music21 scores rendered by FluidSynth, with
exact ``.beats`` annotations) and, with ``data_dirs``, annotated recordings (:mod:`lab.annotations`:
``.beats``, ``.txt`` or ``.jams`` beside each audio file; your own annotations, or pseudo-labels from
``beatbus label beats`` of which only the ``# keep`` stretches are trained on). Targets per 20 ms
frame are a mix of

* the labels: ``[beat, downbeat, non-beat]`` one-hot at the annotated frame, half weight on the
  two neighbouring frames (annotation jitter, as madmom's target widening), and
* distillation: BeatNet model 1's probabilities on the same audio (``distill`` share),

and the loss is the cross-entropy against that soft target.

Real recordings are not clean FluidSynth renders: each training song also gets ``augment``
degraded copies (:func:`augment_audio`: a speed change, random EQ / tilt, band
limits like lossy codecs or small speakers, a synthetic room (exponentially decaying noise impulse
response), compression / clipping, additive noise at a random SNR, random gain, and sometimes a
noise-only or silent lead-in labelled non-beat). The teacher sees the degraded audio too. Everything is seeded
(``torch.manual_seed``, a numpy ``Generator``, deterministic song rendering), so
``beatbus train beat-small --seed S`` reproduces a checkpoint on the same machine.
No file of ``shared/data/beats`` is used: those are kept for evaluation.

Annotated recordings are split by file into training and held-out sets (the files ranked by a hash
of ``seed`` and their name; the first ``held_out`` share, at least one file of two or more, are held
out), and the held-out loss is reported each epoch beside the synthetic dev songs'. Each recording
is cut into its annotated stretches, each with :data:`CONTEXT` s of audio before it that the GRU
sees but the loss does not count; an epoch draws about one ``seq_len`` crop per ``seq_len``
annotated frames. ``init`` fine-tunes a checkpoint (its standardisation kept) instead of
starting from random weights.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from beatbus.audio import load_audio
from beatbus.errors import ConfigError
from beatbus.lab.annotations import annotated_audio, annotation_path, read_annotations
from beatbus.processors.beat.features import HOP_LENGTH, SR, beatnet_features
from beatbus.processors.beat.small import DEFAULT_CHECKPOINT, SmallNet, load_small

__all__ = ["frame_targets", "augment_audio", "song_arrays", "build_dataset", "real_dataset", "split_files",
           "train_small", "DEFAULT_DISTILL", "DEFAULT_AUGMENT", "DEFAULT_HELD_OUT"]

FPS = SR / HOP_LENGTH
DEFAULT_DISTILL = 0.3
DEFAULT_AUGMENT = 0
DEFAULT_HELD_OUT = 0.1
CONTEXT = 2.0  # s of audio before an annotated stretch: GRU warm-up, not counted in the loss
AUG_VERSION = 1  # bump when augment_audio changes (cached arrays are keyed by it)
REAL_VERSION = 1  # bump when real_dataset's arrays change


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


def _coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS noise with a random spectral slope (white .. brown) and a random slow envelope."""
    from scipy.fft import irfft, next_fast_len, rfft, rfftfreq

    nf = next_fast_len(n, real=True)
    spec = rfft(rng.standard_normal(nf))
    f = np.maximum(rfftfreq(nf, 1.0 / SR), 20.0)
    spec *= (f / 1000.0) ** (-float(rng.uniform(0.0, 1.0)))  # 0: white, 0.5: pink, 1: brown
    x = irfft(spec, nf)[:n]
    if rng.random() < 0.5:  # crowd / traffic-like slow fluctuation
        k = max(n // SR, 2)
        x *= np.interp(np.arange(n), np.linspace(0, n, k), np.exp(rng.normal(0.0, 0.5, k)))
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def augment_audio(y: np.ndarray, times: np.ndarray, bar: np.ndarray | None, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A degraded copy of ``y`` (22050 Hz mono) and its moved beat annotations.

    Random (each step with its own probability): speed change 0.92-1.08 (tempo and pitch, by
    resampling), EQ (tilt of +-4 dB/octave around 1 kHz and up to three +-10 dB bumps), high-pass
    (small speakers) and low-pass 3-11 kHz (lossy codecs), room reverb (noise impulse response
    decaying to -60 dB in 0.2-2 s, 10-70 % wet), compression / soft clipping, coloured noise at
    0-35 dB SNR, a noise-only or silent lead-in of 1-5 s (non-beat), and a random level.
    """
    import soxr
    from scipy.fft import irfft, next_fast_len, rfft, rfftfreq
    from scipy.signal import oaconvolve

    y = np.asarray(y, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if rng.random() < 0.5:  # speed (tempo and pitch together)
        speed = float(rng.uniform(0.92, 1.08))
        y = soxr.resample(y, SR * speed, SR, quality="MQ")
        times = times / speed
    n = len(y)
    nf = next_fast_len(n, real=True)  # an FFT of a prime length is slow
    spec = rfft(y, nf)
    f = np.maximum(rfftfreq(nf, 1.0 / SR), 1.0)
    lf = np.log2(f / 1000.0)
    gain_db = rng.uniform(-4.0, 4.0) * np.clip(lf, -5, 4) if rng.random() < 0.7 else np.zeros_like(f)
    for _ in range(int(rng.integers(0, 4))):  # peaks / notches
        gain_db = gain_db + rng.uniform(-10.0, 10.0) * np.exp(-0.5 * ((lf - rng.uniform(-3.5, 3.3)) / rng.uniform(0.2, 1.0)) ** 2)
    gain = 10.0 ** (gain_db / 20.0)
    if rng.random() < 0.3:  # high-pass (phone / laptop speakers)
        fc = rng.uniform(80.0, 400.0)
        gain = gain / np.sqrt(1.0 + (fc / f) ** 4)
    if rng.random() < 0.5:  # low-pass (codecs, band-limited sources)
        fc = rng.uniform(3000.0, 11000.0)
        gain = gain / np.sqrt(1.0 + (f / fc) ** 16)
    y = irfft(spec * gain, nf)[:n]
    if rng.random() < 0.5:  # room: exponentially decaying noise impulse response
        rt60 = rng.uniform(0.2, 2.0)
        t = np.arange(int(rt60 * SR)) / SR
        ir = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60)
        ir[: int(rng.uniform(0.0, 0.02) * SR)] = 0.0  # pre-delay
        wet = oaconvolve(y, ir)[:n]
        wet *= np.sqrt(np.mean(y**2) / (np.mean(wet**2) + 1e-12))
        mix = rng.uniform(0.1, 0.7)
        y = (1.0 - mix) * y + mix * wet
    y = y / (np.max(np.abs(y)) + 1e-9)
    if rng.random() < 0.4:  # compression / limiting / soft clipping
        drive = rng.uniform(1.5, 8.0)
        y = np.tanh(drive * y) / np.tanh(drive)
    if rng.random() < 0.6:  # additive noise
        snr = rng.uniform(0.0, 35.0)
        y = y + np.sqrt(np.mean(y**2)) * 10.0 ** (-snr / 20.0) * _coloured_noise(rng, n)
    if rng.random() < 0.3:  # noise-only or silent lead-in, labelled non-beat
        lead = int(rng.uniform(1.0, 5.0) * SR)
        if rng.random() < 0.3:
            pad = np.zeros(lead)
        else:
            pad = _coloured_noise(rng, lead) * np.sqrt(np.mean(y**2)) * rng.uniform(0.03, 0.5)
        y = np.concatenate([pad, y])
        times = times + lead / SR
    y = y / (np.max(np.abs(y)) + 1e-9) * 10.0 ** (rng.uniform(-30.0, -0.5) / 20.0)
    return y.astype(np.float32), times, bar


def song_arrays(audio: Path, *, teacher=None, aug_rng: np.random.Generator | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Features ``(n, 272)``, label targets ``(n, 3)``, teacher probabilities ``(n, 3)`` (or None) and
    the annotated frames ``(n,)`` (bool; None: all, the file has no ``# keep`` stretches); with
    ``aug_rng``, of a copy degraded by :func:`augment_audio`."""
    y = load_audio(audio, sr=SR)
    ann = read_annotations(annotation_path(audio) or audio.with_suffix(".beats"))
    times, bar = ann.times, ann.beat_in_bar
    keep = None if ann.keep is None else np.asarray(ann.keep, dtype=np.float64).reshape(-1, 2)
    if aug_rng is not None:
        # the stretch bounds move with the beats (speed change, lead-in): transform them as times
        both = times if keep is None else np.concatenate([times, keep.ravel()])
        y, both, bar = augment_audio(y, both, bar, aug_rng)
        times, keep = both[: times.size], (None if keep is None else both[times.size :].reshape(-1, 2))
    feats = beatnet_features(y).astype(np.float32)
    labels = frame_targets(times, bar, feats.shape[0]).astype(np.float32)
    soft = None
    if teacher is not None:
        with torch.inference_mode():
            soft = teacher(torch.from_numpy(feats)[None])[0][0].numpy().astype(np.float32)
    mask = None
    if keep is not None:
        t = np.arange(feats.shape[0]) / FPS
        mask = ((t[:, None] >= keep[None, :, 0]) & (t[:, None] <= keep[None, :, 1])).any(axis=1)
    return feats, labels, soft, mask


def _arrays(path: Path, teacher, aug_rng):
    """:func:`song_arrays`; a degraded copy's teacher pass on one torch thread (several threads only
    spin on a loaded 2-core machine: 20 s instead of 0.1 s a song). Clean songs keep the default
    thread count, so the shipped checkpoint's arrays come out bit for bit as before."""
    if aug_rng is None:
        return song_arrays(path, teacher=teacher)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return song_arrays(path, teacher=teacher, aug_rng=aug_rng)
    finally:
        torch.set_num_threads(threads)


def build_dataset(songs_dir: Path, *, count: int, seed: int, distill: float = DEFAULT_DISTILL,
                  duration_range: tuple[float, float] = (25.0, 45.0), augment: int = DEFAULT_AUGMENT,
                  val_songs: int = 4, log=print) -> list[tuple[np.ndarray, np.ndarray]]:
    """Render (or reuse) ``count`` synthetic songs in ``songs_dir`` and return ``(feats, target)`` pairs.

    Songs already rendered with the same name (``synth_<seed>_<i>``) are reused; arrays are cached
    next to them as ``.npz`` (augmented copies as ``.aug<AUG_VERSION>_<k>.small.npz``).

    The list holds, song by song, each of the first ``count - val_songs`` songs followed by its
    ``augment`` degraded copies (:func:`augment_audio`, seeded by ``(seed, song, copy)``), then the
    last ``val_songs`` songs (clean, one entry each): ``data[-val_songs:]`` is the dev set.
    """
    from beatbus.lab.synth import render_songs

    songs_dir.mkdir(parents=True, exist_ok=True)
    want = [songs_dir / f"synth_{seed}_{i:04d}.flac" for i in range(count)]
    missing = [i for i, p in enumerate(want) if not (p.is_file() and p.with_suffix(".beats").is_file())]
    from beatbus.progress import Progress

    with Progress(f"render songs -> {songs_dir}", len(missing), "songs") as bar:
        for i in missing:  # one at a time so a partial run keeps what it rendered
            bar.set(bar.done, note=want[i].name)
            render_songs(songs_dir, count=1, seed=seed, first=i, duration_range=duration_range, sr=SR)
            bar.update(1)
    teacher = None
    if distill > 0:
        from beatbus.processors.beat.bda import BDA

        teacher = BDA.from_beatnet(1)
    items = []  # (song, copy): copy 0 is the clean song
    for i in range(count):
        items += [(i, k) for k in range(1 + (augment if i < count - val_songs else 0))]
    data = []
    bar = Progress("features and targets", len(items), "songs")
    for i, k in items:
        p = want[i]
        bar.set(bar.done, note=p.name if k == 0 else f"{p.name} (degraded copy {k})")
        cache = p.with_suffix(".small.npz" if k == 0 else f".aug{AUG_VERSION}_{k}.small.npz")
        aug_rng = None if k == 0 else np.random.default_rng([seed, i, k, AUG_VERSION])
        if cache.is_file():
            z = np.load(cache)
            feats, labels, soft = z["feats"], z["labels"], (z["soft"] if "soft" in z else None)
        else:
            feats, labels, soft, _ = _arrays(p, teacher, aug_rng)
            np.savez(cache, feats=feats, labels=labels, **({"soft": soft} if soft is not None else {}))
        if distill > 0 and soft is None:
            aug_rng = None if k == 0 else np.random.default_rng([seed, i, k, AUG_VERSION])
            feats, labels, soft, _ = _arrays(p, teacher, aug_rng)
            np.savez(cache, feats=feats, labels=labels, soft=soft)
        target = labels if distill <= 0 else (1.0 - distill) * labels + distill * soft
        data.append((feats, target.astype(np.float32)))
        bar.update(1)
    bar.close()
    log(f"dataset: {len(data)} songs, {sum(f.shape[0] for f, _ in data)} frames")
    return data


def split_files(files: Sequence[Path], *, seed: int, held_out: float = DEFAULT_HELD_OUT
                ) -> tuple[list[Path], list[Path]]:
    """Training and held-out files: ranked by ``sha1(f"{seed}:{name}")``, the first ``held_out`` share
    (at least one when there are two or more files, none for ``held_out=0``) are held out.
    A file keeps its side when others are added or removed unless its rank crosses the cut."""
    if not 0.0 <= held_out < 1.0:
        raise ConfigError(f"held_out={held_out!r} must be in [0, 1)")
    ranked = sorted(files, key=lambda p: hashlib.sha1(f"{seed}:{Path(p).stem}".encode()).hexdigest())
    n = 0 if held_out == 0 or len(files) < 2 else max(1, round(held_out * len(files)))
    held = set(ranked[:n])
    return [f for f in files if f not in held], [f for f in files if f in held]


def _file_key(audio: Path, *parts) -> str:
    """Cache key of a recording's arrays: its path, size and time, its annotation's text, ``parts``."""
    st = audio.stat()
    ann = annotation_path(audio)
    h = hashlib.sha1(f"{audio.resolve()}|{st.st_size}|{st.st_mtime_ns}|{parts}|".encode())
    h.update(ann.read_bytes() if ann is not None else b"")
    return h.hexdigest()[:20]


def _segments(feats, labels, soft, mask) -> list[tuple[np.ndarray, ...]]:
    """Cut a recording's arrays into its annotated stretches, each with :data:`CONTEXT` s before it:
    ``(feats, labels, soft or None, weight)``, weight 1 on annotated frames, 0 on the context."""
    n = feats.shape[0]
    weight = np.ones(n, dtype=np.float32) if mask is None else mask.astype(np.float32)
    if mask is None:
        runs = [(0, n)]
    else:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
        runs = list(zip(edges[::2], edges[1::2]))
    ctx = int(round(CONTEXT * FPS))
    out = []
    for a, b in runs:
        lo = max(int(a) - ctx, 0)
        out.append((feats[lo:b], labels[lo:b], None if soft is None else soft[lo:b], weight[lo:b]))
    return out


def real_dataset(data_dirs: Sequence[str | Path], *, seed: int, distill: float = DEFAULT_DISTILL,
                 augment: int = DEFAULT_AUGMENT, held_out: float = DEFAULT_HELD_OUT,
                 cache_dir: str | Path | None = None, log=print) -> tuple[list, list, list[str], list[str]]:
    """Annotated recordings of ``data_dirs`` as training and held-out segments.

    Each entry is ``(feats, target, weight)``: ``target`` the labels mixed with the teacher's
    probabilities (``distill`` share), ``weight`` 1 on annotated frames and 0 on the context.
    Training files also give ``augment`` degraded copies (seeded by ``(seed, file, copy)``);
    held-out files only their clean arrays. Arrays are cached in ``cache_dir`` (default
    ``~/.cache/beatbus/real``), keyed by the file, its annotation and the copy.

    Returns
    -------
    train, held : list of (np.ndarray, np.ndarray, np.ndarray)
    train_names, held_names : list of str
        The file stems on each side.
    """
    from beatbus.progress import Progress

    files = []
    for d in map(Path, data_dirs):
        if not d.is_dir():
            raise ConfigError(f"--data {d}: no such folder")
        found = annotated_audio(d)
        if not found:
            raise ConfigError(f"--data {d}: no annotated audio (<name>.beats/.jams/.txt next to <name>.flac/...)")
        files += found
    # a pseudo-labelled file with nothing kept (`# keep none`) trains nothing, and held out it would
    # leave the held-out loss empty: it takes no part in the split
    nothing = [f for f in files if read_annotations(annotation_path(f)).keep == ()]
    if nothing:
        log(f"annotated recordings: {len(nothing)} with no kept stretch left out: {', '.join(f.stem for f in nothing)}")
    files = [f for f in files if f not in nothing]
    train_files, held_files = split_files(files, seed=seed, held_out=held_out)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "beatbus" / "real"
    cache_dir.mkdir(parents=True, exist_ok=True)
    teacher = None
    if distill > 0:
        from beatbus.processors.beat.bda import BDA

        teacher = BDA.from_beatnet(1)
    items = [(f, k, True) for f in train_files for k in range(1 + augment)] + [(f, 0, False) for f in held_files]
    train, held = [], []
    with Progress("annotated recordings", len(items), "copies") as bar:
        for f, k, is_train in items:
            bar.set(bar.done, note=f.name if k == 0 else f"{f.name} (degraded copy {k})")
            # seeded per file name and copy: the same degradations wherever the file lies
            seeds = [seed, int(hashlib.sha1(f.stem.encode()).hexdigest()[:8], 16), k, AUG_VERSION]
            cache = cache_dir / f"{_file_key(f, k, seeds if k else None, REAL_VERSION)}.npz"
            z = dict(np.load(cache)) if cache.is_file() else {}
            if not z or (teacher is not None and "soft" not in z and len(z["bounds"]) > 1):
                segs = _segments(*_arrays(f, teacher, np.random.default_rng(seeds) if k else None))
                z = {"bounds": np.cumsum([0] + [s[0].shape[0] for s in segs])}
                for i, name in enumerate(("feats", "labels", "soft", "weight")):
                    if segs and segs[0][i] is not None:
                        z[name] = np.concatenate([s[i] for s in segs])
                np.savez(cache, **z)
            bounds = z["bounds"]
            for a, b in zip(bounds[:-1], bounds[1:]):
                target = z["labels"][a:b] if distill <= 0 else (1.0 - distill) * z["labels"][a:b] + distill * z["soft"][a:b]
                (train if is_train else held).append((z["feats"][a:b], target.astype(np.float32), z["weight"][a:b]))
            bar.update(1)
    kept = [sum(float(w.sum()) for _, _, w in part) / FPS / 60 for part in (train, held)]
    log(f"annotated recordings: {len(train_files)} training ({kept[0] / (1 + augment):.1f} min annotated, "
        f"{augment} degraded copies each), {len(held_files)} held out ({kept[1]:.1f} min): "
        f"{', '.join(f.stem for f in held_files) or '-'}")
    return train, held, [f.stem for f in train_files], [f.stem for f in held_files]


def _init_net(init: str | Path | None, proj: int, hidden: int, train_feats: list[np.ndarray]) -> SmallNet:
    """A checkpoint to fine-tune (``"shipped"``: :data:`DEFAULT_CHECKPOINT`), or a fresh net standardised
    on the training frames."""
    if init is not None:
        net = load_small(DEFAULT_CHECKPOINT if str(init) == "shipped" else init)
        return net.train()
    net = SmallNet(proj=proj, hidden=hidden)
    allf = np.concatenate(train_feats)
    net.mean.copy_(torch.from_numpy(allf.mean(axis=0)))
    net.std.copy_(torch.from_numpy(allf.std(axis=0) + 1e-3))
    return net


def train_small(
    *,
    songs: int = 60,
    seed: int = 7,
    epochs: int = 40,
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
    augment: int = DEFAULT_AUGMENT,
    data_dirs: Sequence[str | Path] = (),
    held_out: float = DEFAULT_HELD_OUT,
    init: str | Path | None = None,
    cache_dir: str | Path | None = None,
    log=print,
) -> dict:
    """Train :class:`SmallNet` and save a checkpoint.

    Parameters
    ----------
    songs : int
        Synthetic songs (the last ``val_songs`` are held out for validation); 0 with ``data_dirs``:
        annotated recordings only.
    seed : int
        Seeds the songs, the crops, the weights and the held-out split of the recordings.
    epochs : int
        Passes over random ``seq_len``-frame crops (one crop per training song per epoch, times 4;
        per annotated recording, one per ``seq_len`` annotated frames).
    out : path
        Checkpoint written (``{"config", "state_dict", "meta"}``, a few tens of kB).
    songs_dir : path or None
        Render / reuse songs here (default: ``~/.cache/beatbus/synth``).
    distill : float
        Share of BeatNet model 1's probabilities in the target (0 = labels only).
    duration_range : (float, float)
        Song lengths in s (songs already in ``songs_dir`` are reused as they are).
    augment : int
        Degraded copies per training song or recording (:func:`augment_audio`); an epoch still
        draws the same crops per song, spread over its copies (``ceil(4 / (1 + augment))`` per copy).
    data_dirs : sequence of path
        Folders of annotated recordings (:func:`real_dataset`).
    held_out : float
        Share of those recordings held out (:func:`split_files`).
    init : path, "shipped" or None
        Fine-tune this checkpoint (its width, standardisation and weights) instead of a new net.
    cache_dir : path or None
        Where the recordings' arrays are cached (:func:`real_dataset`).

    Returns
    -------
    dict
        ``{"out", "train_loss", "val_loss", "held_out_loss", "seconds"}`` (a loss is None without its set).
    """
    if songs and songs <= val_songs:
        raise ValueError(f"songs={songs} must exceed val_songs={val_songs}")
    if not songs and not data_dirs:
        raise ValueError("songs=0 needs data_dirs: there would be nothing to train on")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    songs_dir = Path(songs_dir) if songs_dir is not None else Path.home() / ".cache" / "beatbus" / "synth"
    train: list = []
    val: list = []
    if songs:
        data = build_dataset(songs_dir, count=songs, seed=seed, distill=distill, duration_range=duration_range,
                             augment=augment, val_songs=val_songs, log=log)
        n = len(data) - val_songs
        train, val = [(f, t, None) for f, t in data[:n]], [(f, t, None) for f, t in data[n:]]
    per_copy = -(-4 // (1 + augment))  # crops per synthetic song's copy and epoch
    reps = [per_copy] * len(train)
    held: list = []
    held_names: list[str] = []
    if data_dirs:
        real, held, _, held_names = real_dataset(data_dirs, seed=seed, distill=distill, augment=augment, held_out=held_out,
                                          cache_dir=cache_dir, log=log)
        train += real
        reps += [max(1, -(-int(w.sum()) // (seq_len * (1 + augment)))) for _, _, w in real]
    if not train:
        raise ConfigError("no annotated frames to train on (every recording held out, or no '# keep' stretch)")
    net = _init_net(init, proj, hidden, [f for f, _, _ in train])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    weighted = any(w is not None for _, _, w in train)  # synthetic only: the plain mean, as before

    def loss_of(feats, target, weight=None):
        z, _ = net.logits(feats)
        ce = -(target * torch.log_softmax(z, dim=-1)).sum(-1)
        return ce.mean() if weight is None else (ce * weight).sum() / weight.sum().clamp_min(1e-6)

    def mean_loss(items) -> float | None:
        """Frame-weighted loss over whole songs / segments (None for an empty set)."""
        if not items:
            return None
        net.eval()
        with torch.no_grad():
            tot = [(float(loss_of(*(torch.from_numpy(a)[None] for a in (f, t, np.ones(len(f), np.float32) if w is None else w)))),
                    float(len(f) if w is None else w.sum())) for f, t, w in items]
        net.train()
        if not any(w for _, w in tot):
            return None
        return sum(x * w for x, w in tot) / sum(w for _, w in tot)

    from beatbus.progress import Progress

    train_loss = float("nan")
    val_loss = held_loss = None
    bar = Progress("train beat-small", epochs, "epochs")
    for ep in range(epochs):
        net.train()
        order = rng.permutation(np.repeat(np.arange(len(train)), reps))
        losses = []
        for i in range(0, len(order), batch):
            bar.set(ep + i / len(order), note=f"train loss {train_loss:.4f}" if ep else "")
            xs, ts, ws = [], [], []
            for j in order[i : i + batch]:
                f, t, w = train[j]
                s = int(rng.integers(0, max(f.shape[0] - seq_len, 0) + 1))
                crop_f, crop_t = f[s : s + seq_len], t[s : s + seq_len]
                crop_w = np.ones(crop_f.shape[0], np.float32) if w is None else w[s : s + seq_len]
                if crop_f.shape[0] < seq_len:  # short song: pad with silence-like non-beat frames
                    pad = seq_len - crop_f.shape[0]
                    crop_f = np.pad(crop_f, ((0, pad), (0, 0)))
                    crop_t = np.pad(crop_t, ((0, pad), (0, 0)))
                    crop_t[-pad:, 2] = 1.0
                    crop_w = np.pad(crop_w, (0, pad), constant_values=1.0 if w is None else 0.0)
                xs.append(crop_f)
                ts.append(crop_t)
                ws.append(crop_w)
            loss = loss_of(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)),
                           torch.from_numpy(np.stack(ws)) if weighted else None)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        sched.step()
        train_loss = float(np.mean(losses))
        val_loss, held_loss = mean_loss(val), mean_loss(held)
        bar.clear()
        log(f"epoch {ep + 1}/{epochs}: train loss {train_loss:.4f}"
            + ("" if val_loss is None else f", synthetic dev {val_loss:.4f}")
            + ("" if held_loss is None else f", held-out recordings {held_loss:.4f}"))
    bar.close()
    net.eval()
    if epochs == 0:
        val_loss, held_loss = mean_loss(val), mean_loss(held)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"songs": songs, "seed": seed, "epochs": epochs, "distill": distill, "augment": augment,
            "hidden": net.hidden, "val_loss": val_loss, "data": [str(d) for d in data_dirs],
            "held_out": held_names, "held_out_loss": held_loss, "init": None if init is None else str(init)}
    torch.save({"config": net.config, "state_dict": net.state_dict(), "meta": meta}, out)
    log(f"wrote {out}")
    return {"out": str(out), "train_loss": train_loss, "val_loss": val_loss, "held_out_loss": held_loss,
            "seconds": time.perf_counter() - t0}
