"""Pseudo-labels for training (``beatbus label beats DIR... --out DIR``).

Each recording is decoded whole by the offline tracker (:func:`~processors.beat.processor.track_offline`:
BeatNet model 1's activations, Viterbi over a bar-pointer space), and its beats are kept only in
**confident stretches**. The rule, on the decoded beats and the activation ``a = beat + downbeat``:

1. the beats are cut where one is missing (an interval over 1.5 x the median of its 8 neighbours:
   the decoder dropped beats on silence or noise there);
2. a window of ``window`` (8) consecutive beats passes when
   * its tempo is steady: every interval within ``tempo_tolerance`` (6 %) of the window's median,
   * the beats are heard: the mean of ``max(a)`` within +-2 frames of each beat is at least
     ``min_activation`` (0.3),
   * the metrical level and phase are unambiguous: the same mean halfway between the beats is at
     most ``max_offbeat`` (0.5) times the on-beat mean (a path at half the tempo, or on the
     off-beat, has strong activations between its beats);
3. a beat is confident when a passing window holds it; a run of confident beats is kept when it
   has at least ``min_beats`` (16) beats, as the stretch from half an interval before its first
   beat to half an interval after its last.

Output per recording: ``<out>/<name>.beats`` (:mod:`lab.annotations` format: ``# keep START END``
lines, ``# keep none`` when nothing passed, then the kept beats ``time<TAB>beat_in_bar``) and a
symbolic link ``<out>/<name>.<ext>`` to the audio, so ``<out>`` is an annotated folder for
``beatbus train beat-small --data``. Recordings already labelled in ``<out>`` are skipped.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beatbus.audio import load_audio
from beatbus.errors import ConfigError
from beatbus.lab.annotations import AUDIO_EXTS, write_beats
from beatbus.processors.beat.backends import FPS
from beatbus.processors.beat.offline import OfflineDecoder
from beatbus.processors.beat.processor import offline_activations
from beatbus.processors.beat.tracker import Beat

__all__ = ["Rule", "confident_stretches", "label_file", "label_dirs"]

SR = 22050


@dataclass(frozen=True)
class Rule:
    """The confidence rule of the module docstring (defaults chosen a priori, not tuned on the dev set)."""

    window: int = 8
    tempo_tolerance: float = 0.06
    min_activation: float = 0.3
    max_offbeat: float = 0.5
    min_beats: int = 16
    gap: float = 1.5


def _peak(total: np.ndarray, centres: np.ndarray, half: int = 2) -> np.ndarray:
    """``max(total)`` within ``+-half`` frames of each centre frame."""
    idx = np.clip(np.round(centres).astype(int)[:, None] + np.arange(-half, half + 1)[None, :], 0, total.size - 1)
    return total[idx].max(axis=1)


def confident_stretches(beats: Sequence[Beat], activations: np.ndarray, rule: Rule = Rule(), *,
                        fps: float = FPS) -> tuple[list[tuple[float, float]], np.ndarray]:
    """The kept stretches of one recording's decoded ``beats`` (module docstring).

    Parameters
    ----------
    beats : sequence of Beat
        The offline decoder's beats, in time order.
    activations : np.ndarray [shape=(n, 2)]
        The ``[beat, downbeat]`` activations they were decoded from (frame k at ``k / fps`` s).

    Returns
    -------
    keep : list of (float, float)
        ``(start, end)`` seconds of each kept stretch.
    kept : np.ndarray [shape=(len(beats),), dtype=bool]
        Which beats lie in a kept stretch.
    """
    n = len(beats)
    kept = np.zeros(n, dtype=bool)
    if n < max(rule.window, rule.min_beats):
        return [], kept
    t = np.array([b.time for b in beats])
    total = np.nan_to_num(np.asarray(activations, dtype=np.float64).sum(axis=1))
    ibi = np.diff(t)
    on = _peak(total, t * fps)
    off = _peak(total, (t[:-1] + ibi / 2) * fps)  # halfway to the next beat
    w = rule.window
    # 1. cut where a beat is missing: an interval far above its neighbours' median
    lo = np.clip(np.arange(ibi.size) - 4, 0, None)
    local = np.array([np.median(ibi[a : a + 9]) for a in lo])
    joined = ibi <= rule.gap * local
    # 2. windows of w beats (w - 1 intervals, all joined)
    good = np.zeros(n, dtype=bool)
    for i in range(n - w + 1):
        iv = ibi[i : i + w - 1]
        if not joined[i : i + w - 1].all():
            continue
        steady = np.all(np.abs(iv / np.median(iv) - 1.0) <= rule.tempo_tolerance)
        heard = on[i : i + w].mean() >= rule.min_activation
        clear = off[i : i + w - 1].mean() <= rule.max_offbeat * on[i : i + w].mean()
        if steady and heard and clear:
            good[i : i + w] = True
    # 3. runs of confident beats joined by ordinary intervals
    keep = []
    i = 0
    while i < n:
        if not good[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and good[j + 1] and joined[j]:
            j += 1
        if j - i + 1 >= rule.min_beats:
            kept[i : j + 1] = True
            half = np.median(ibi[i:j]) / 2
            keep.append((max(float(t[i] - half), 0.0), float(t[j] + half)))
        i = j + 1
    return keep, kept


def label_file(audio: str | Path, out_dir: str | Path, *, name: str | None = None, rule: Rule = Rule(),
               backend: str = "beatnet", model: int = 1, progress=None) -> dict:
    """Pseudo-label one recording into ``out_dir`` (``<name>.beats`` and a link to the audio).

    Parameters
    ----------
    progress : callable, optional
        Called with the seconds of audio analysed so far.

    Returns
    -------
    dict
        ``file, seconds, kept_seconds, n_beats (kept), stretches, beats_file``.
    """
    audio = Path(audio)
    out_dir = Path(out_dir)
    name = name or audio.stem
    y = load_audio(audio, sr=SR)
    step = 30 * SR

    def chunks():
        for i in range(0, y.size, step):
            yield y[i : i + step]
            if progress is not None:
                progress(min(i + step, y.size) / SR)

    act, gate, onset, settings = offline_activations(chunks(), backend=backend, sr=SR, model=model)
    beats = OfflineDecoder(fps=FPS, **settings).decode(act, gate=gate, onset=onset)
    keep, kept = confident_stretches(beats, act, rule)
    out_dir.mkdir(parents=True, exist_ok=True)
    link = out_dir / f"{name}{audio.suffix.lower()}"
    if not link.exists():
        link.symlink_to(audio.resolve())
    chosen = [b for b, k in zip(beats, kept) if k]
    path = write_beats(out_dir / f"{name}.beats", [b.time for b in chosen], [b.beat_in_bar for b in chosen],
                       keep=keep, comment=f"pseudo-labels of {audio.name}: offline {backend} model {model}, "
                                          f"confident stretches only (lab.train.label)")
    return {"file": name, "seconds": y.size / SR, "kept_seconds": float(sum(b - a for a, b in keep)),
            "n_beats": len(chosen), "stretches": len(keep), "beats_file": str(path)}


def _audio_files(paths: Sequence[str | Path]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():  # os.walk: linked folders are followed (Path.rglob does not before Python 3.13)
            out += sorted(Path(root) / f for root, _, names in os.walk(p, followlinks=True) for f in names
                          if Path(f).suffix.lower() in AUDIO_EXTS)
        else:
            raise ConfigError(f"{p}: no such folder or file")
    if not out:
        raise ConfigError(f"no audio ({', '.join(AUDIO_EXTS)}) in {', '.join(map(str, paths))}")
    return out


def _names(files: list[Path]) -> list[str]:
    """Stems, prefixed by the parent folder's name where two recordings share one."""
    stems = [f.stem for f in files]
    return [f"{f.parent.name}_{f.stem}" if stems.count(f.stem) > 1 else f.stem for f in files]


def label_dirs(paths: Sequence[str | Path], out: str | Path, *, rule: Rule = Rule(), force: bool = False,
               log=print) -> list[dict]:
    """:func:`label_file` for every audio file in ``paths`` (folders searched recursively), with progress.

    Recordings whose ``<out>/<name>.beats`` exists are skipped unless ``force``.
    """
    import soundfile as sf

    from beatbus.progress import Progress

    files = _audio_files(paths)
    out = Path(out)
    todo = [(f, n) for f, n in zip(files, _names(files)) if force or not (out / f"{n}.beats").is_file()]
    durations = []
    for f, _ in todo:
        try:
            durations.append(sf.info(str(f)).duration)
        except RuntimeError:
            raise ConfigError(f"{f}: not an audio file soundfile can read") from None
    log(f"label beats: {len(todo)} of {len(files)} recordings ({sum(durations) / 60:.1f} min) -> {out}")
    rows = []
    t0 = time.perf_counter()
    with Progress("label beats", sum(durations), "s") as bar:
        done = 0.0
        for (f, name), dur in zip(todo, durations):
            bar.set(done, note=name)
            if force:
                (out / f"{name}.beats").unlink(missing_ok=True)
            row = label_file(f, out, name=name, rule=rule,
                             progress=lambda s, d=done, n=name: bar.set(d + s, note=n))
            rows.append(row)
            done += dur
            bar.clear()
            log(f"{name}: {row['kept_seconds']:.0f} of {row['seconds']:.0f} s kept in {row['stretches']} "
                f"stretches ({row['n_beats']} beats)")
    total, kept = sum(r["seconds"] for r in rows), sum(r["kept_seconds"] for r in rows)
    log(f"labelled {len(rows)} recordings: {kept / 60:.1f} of {total / 60:.1f} min kept "
        f"({time.perf_counter() - t0:.0f} s)")
    return rows

