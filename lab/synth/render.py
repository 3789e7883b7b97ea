"""Render a :class:`~lab.synth.plan.SongPlan` to audio with FluidSynth, with exact annotations.

FluidSynth's file renderer starts a note a few milliseconds after its MIDI time (events are
applied at the next 64-sample block, plus the synth's own delay). :func:`render_offset`
measures that delay once per soundfont and rate on a click track, and :func:`render_song` drops
that many samples from the start of the audio, so the plan's beat times are the audio's beat
times within the block jitter (about +/-1.5 ms, reported in the JSON).

Files written by :func:`render_song` (``<name>`` = ``plan.name``):

- ``<name>.flac`` (or ``.wav``): mono 16-bit audio at ``sr``, peak-normalised to -1 dBFS;
- ``<name>.beats``: ``time<TAB>beat_in_bar`` per line (as ``../shared/data/beats``);
- ``<name>.sections``: ``start<TAB>end<TAB>label`` per line (as ``../shared/data/sections``);
- ``<name>.chords``: ``start<TAB>end<TAB>chord`` per line, Harte labels (``A:min``), one row per
  chord change (the ``.lab`` layout of chord annotations, readable by ``mir_eval.io.load_labeled_intervals``);
- ``<name>.json``: the plan, seed, key, sections with energy, transitions, tempo curve, render info;
- ``<name>.mid``: the MIDI file that was rendered.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beatbus.audio import read_audio
from beatbus.errors import AudioSourceError, DependencyError

from .plan import SongPlan, beat_grid, energy_of, section_times, transitions
from .score import PITCH_NAMES, build_score, chord_truth, key_truth

__all__ = ["render_song", "render_midi", "render_offset", "SongFiles", "DEFAULT_SOUNDFONT"]

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
TAIL_S = 1.0            # audio kept after the last beat ends (release and reverb)
PEAK = 10 ** (-1 / 20)  # -1 dBFS


@dataclass(frozen=True)
class SongFiles:
    """Paths of one rendered song."""

    name: str
    audio: Path
    beats: Path
    sections: Path
    meta: Path
    midi: Path
    chords: Path | None = None


def _fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise DependencyError("rendering synthetic songs needs the 'fluidsynth' program: "
                              "apt-get install fluidsynth fluid-soundfont-gm (install.sh does)")
    return exe


def render_midi(midi: str | os.PathLike, wav: str | os.PathLike, *, sr: int = 22050,
                soundfont: str = DEFAULT_SOUNDFONT, gain: float = 0.5) -> None:
    """``fluidsynth -ni -F wav -r sr soundfont midi`` (raises AudioSourceError on failure)."""
    if not Path(soundfont).is_file():
        raise AudioSourceError(f"soundfont {soundfont} not found: apt-get install fluid-soundfont-gm")
    cmd = [_fluidsynth(), "-ni", "-q", "-g", str(gain), "-F", os.fspath(wav), "-r", str(int(sr)),
           soundfont, os.fspath(midi)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not Path(wav).is_file():
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise AudioSourceError(f"fluidsynth failed on {midi} (exit {proc.returncode}): {detail[0]}")


def _onsets(y: np.ndarray, sr: int, times: np.ndarray) -> np.ndarray:
    """First sample near each expected time where the level jumps above 5x the 20 ms before it."""
    out = []
    pre, look = int(0.02 * sr), int(0.05 * sr)
    env = np.abs(y)
    for t in times:
        a = int(round(t * sr)) - pre
        seg = env[a:a + pre + look]
        floor = max(float(seg[:pre].max()) * 5.0, 1e-4)
        hit = np.flatnonzero(seg[pre:] > floor)
        out.append((a + pre + hit[0]) / sr if hit.size else np.nan)
    return np.asarray(out)


@functools.lru_cache(maxsize=8)
def render_offset(sr: int = 22050, soundfont: str = DEFAULT_SOUNDFONT) -> tuple[float, float]:
    """Measure FluidSynth's start delay on a click track.

    Renders 24 rim shots at known, deliberately non-grid times and detects their onsets.

    Returns
    -------
    (offset_s, jitter_s)
        Median delay of the audio behind the MIDI, and the largest deviation from it.
    """
    from music21 import instrument, note, stream, tempo

    times = 0.5 + np.arange(24) * 0.613 + np.arange(24) * 0.00071
    part = stream.Part()
    part.insert(0, instrument.Percussion())
    part.insert(0, tempo.MetronomeMark(number=60, referent=1.0))
    for t in times:
        n = note.Note(37)
        n.quarterLength = 0.1
        n.volume.velocity = 110
        part.insert(round(float(t), 6), n)
    score = stream.Score([part])
    with tempfile.TemporaryDirectory(prefix="bb-synth-cal-") as tmp:
        mid, wav = Path(tmp) / "cal.mid", Path(tmp) / "cal.wav"
        score.write("midi", fp=str(mid))
        render_midi(mid, wav, sr=sr, soundfont=soundfont)
        y, got_sr = read_audio(wav)
    delay = _onsets(y, got_sr, times) - times
    delay = delay[np.isfinite(delay)]
    if delay.size < len(times) // 2:
        raise AudioSourceError(f"cannot calibrate fluidsynth with {soundfont}: clicks not found in its output")
    med = float(np.median(delay))
    return med, float(np.max(np.abs(delay - med)))


def _write_audio(path: Path, y: np.ndarray, sr: int) -> None:
    import soundfile as sf

    sf.write(str(path), y, sr, subtype="PCM_16")


def render_song(plan: SongPlan, *, seed: int, out_dir: str | os.PathLike, sr: int = 22050,
                audio_format: str = "flac", soundfont: str = DEFAULT_SOUNDFONT) -> SongFiles:
    """Render ``plan`` to audio and write its exact annotations.

    Parameters
    ----------
    plan : SongPlan
    seed : int
        Note-level randomness (progressions, melodies); the same plan and seed give the same files.
    out_dir : path
        Created if missing.
    sr : int
        Output sample rate (Hz).
    audio_format : {'flac', 'wav'}
    soundfont : str
        A General MIDI soundfont (.sf2).

    Returns
    -------
    SongFiles

    Raises
    ------
    ValueError
        Bad ``audio_format``, ``sr`` or ``seed``.
    AudioSourceError, DependencyError
        FluidSynth or the soundfont is missing or fails.
    """
    if audio_format not in ("flac", "wav"):
        raise ValueError(f"audio_format={audio_format!r} must be 'flac' or 'wav'")
    if isinstance(sr, bool) or not isinstance(sr, int) or not 8000 <= sr <= 96000:
        raise ValueError(f"sr={sr!r} must be an integer rate in [8000, 96000] Hz")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = beat_grid(plan)
    files = SongFiles(name=plan.name, audio=out / f"{plan.name}.{audio_format}", beats=out / f"{plan.name}.beats",
                      sections=out / f"{plan.name}.sections", meta=out / f"{plan.name}.json",
                      midi=out / f"{plan.name}.mid", chords=out / f"{plan.name}.chords")
    score = build_score(plan, seed=int(seed), grid=grid)
    score.write("midi", fp=str(files.midi))
    offset, jitter = render_offset(sr, soundfont)
    with tempfile.TemporaryDirectory(prefix="bb-synth-") as tmp:
        wav = Path(tmp) / "render.wav"
        render_midi(files.midi, wav, sr=sr, soundfont=soundfont)
        y, got_sr = read_audio(wav)
    if got_sr != sr:
        raise AudioSourceError(f"fluidsynth rendered at {got_sr} Hz, asked for {sr} Hz")
    y = y[int(round(offset * sr)):int(round((grid.end + TAIL_S + offset) * sr))]
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0:
        y = y * (PEAK / peak)
    _write_audio(files.audio, y.astype(np.float32), sr)

    files.beats.write_text("".join(f"{t:.4f}\t{b}\n" for t, b in zip(grid.times, grid.beat_in_bar)))
    spans = section_times(plan, grid)
    files.sections.write_text("".join(f"{a:.3f}\t{b:.3f}\t{lab}\n" for a, b, lab in spans))
    files.chords.write_text("".join(f"{a:.4f}\t{b:.4f}\t{lab}\n" for a, b, lab in chord_truth(plan, seed=int(seed),
                                                                                              grid=grid)))
    tonic, mode = key_truth(plan)
    groups = {lab: i for i, lab in enumerate(dict.fromkeys(s.label for s in plan.sections))}
    meta = {
        "name": plan.name, "seed": int(seed), "sr": sr, "duration": round(len(y) / sr, 4),
        "music_end": round(grid.end, 4), "meter": plan.meter, "beats_per_bar": plan.beats_per_bar,
        "plan": plan.to_dict(), "key": {"tonic": tonic, "mode": mode, "name": f"{PITCH_NAMES[tonic]} {mode}"},
        "sections": [{"start": round(a, 4), "end": round(b, 4), "label": lab, "style": s.style,
                      "energy": energy_of(s), "group": groups[lab]}
                     for (a, b, lab), s in zip(spans, plan.sections)],
        "transitions": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items()}
                        for t in transitions(plan, grid)],
        "tempo_curve": [[round(float(t), 4), round(float(b), 3)] for t, b in zip(grid.times, grid.bpm)],
        "render": {"soundfont": os.path.basename(soundfont), "offset_s": round(offset, 5),
                   "offset_jitter_s": round(jitter, 5), "tool": "fluidsynth"},
    }
    files.meta.write_text(json.dumps(meta, indent=1) + "\n")
    return files
