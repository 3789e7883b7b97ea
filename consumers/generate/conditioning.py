"""Conditioning from the live stream: tempo, meter, section, intensity, key, and recent audio.

:func:`snapshot` reads a source's latest events (one XREVRANGE per stream, no consumer
state); :func:`capture_audio` pulls its last seconds of audio; :func:`estimate_key` names
the key of that audio (chroma + Krumhansl-Kessler profiles); :func:`build_prompt` turns
it all into the text MusicGen is conditioned on. Numpy only: the stream consumer never
imports torch.
"""
from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np

from beatbus import keys
from beatbus.bus import Bus
from beatbus.schemas import AudioFrame, BeatEvent, Event, IntensityEvent, KeyEvent, SectionEvent, pcm_to_float

__all__ = ["Conditioning", "snapshot", "key_name", "capture_audio", "estimate_key", "pitch_class_profile", "build_prompt",
           "energy_word", "KEY_NAMES"]

M = msgspec.Meta
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl-Kessler key profiles (probe-tone ratings), C major / C minor.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


class Conditioning(msgspec.Struct, kw_only=True):
    """What the stream says about the music now (every field optional)."""
    source: str | None = None
    tempo: Annotated[float, M(ge=0.0, le=400.0)] | None = None
    meter: Annotated[int, M(ge=1, le=12)] | None = None
    section: str | None = None
    intensity: Annotated[float, M(ge=0.0, le=1.0)] | None = None
    key: str | None = None
    key_confidence: float | None = None


def _latest(bus: Bus, stream: str, kind: type, count: int = 8):
    for entry_id, fields in bus.newest(stream, count):
        ev = bus.decode(stream, entry_id, fields, Event)
        if isinstance(ev, kind):
            return ev
    return None


def key_name(ev: KeyEvent) -> str:
    """``"A minor"``: a KeyEvent's key as the prompt names it."""
    return f"{KEY_NAMES[ev.tonic]} {ev.mode}"


def snapshot(bus: Bus, source: str) -> Conditioning:
    """The latest beat, intensity, section and key (the harmony stage's) of ``source`` (no audio)."""
    beat = _latest(bus, keys.stream(source, keys.StreamKind.BEATS), BeatEvent)
    key = _latest(bus, keys.stream(source, keys.StreamKind.HARMONY), KeyEvent, count=512)   # chords come between keys
    level = _latest(bus, keys.stream(source, keys.StreamKind.INTENSITY), IntensityEvent)
    section = _latest(bus, keys.stream(source, keys.StreamKind.SECTIONS), SectionEvent)
    intensity = level.intensity if level is not None else (beat.intensity if beat is not None else None)
    return Conditioning(source=source, tempo=beat.bpm if beat and beat.bpm > 0 else None,
                        meter=beat.meter if beat else None, section=section.label if section else None,
                        intensity=intensity, key=key_name(key) if key else None,
                        key_confidence=key.confidence if key else None)


def capture_audio(bus: Bus, source: str, seconds: float, *, batch: int = 200) -> tuple[np.ndarray, int]:
    """The last ``seconds`` of ``source``'s audio stream as float32 mono, and its sample rate.

    Returns an empty array (and sr 0) when the stream holds no audio.
    """
    stream = keys.stream(source, keys.StreamKind.AUDIO)
    frames: list[AudioFrame] = []
    have, sr, upper = 0, 0, "+"
    while have < seconds * max(sr, 1) or sr == 0:
        entries = bus.newest(stream, batch, upper=upper)
        if not entries:
            break
        for entry_id, fields in entries:
            ev = bus.decode(stream, entry_id, fields, Event)
            if isinstance(ev, AudioFrame):
                sr = sr or ev.sr
                if ev.sr == sr:
                    frames.append(ev)
                    have += ev.n_samples
        upper = "(" + entries[-1][0]
        if len(entries) < batch or (sr and have >= seconds * sr):
            break
    if not frames:
        return np.zeros(0, dtype=np.float32), 0
    frames.sort(key=lambda f: f.sample_index)
    x = np.concatenate([pcm_to_float(f) for f in frames]).astype(np.float32)
    return x[-int(seconds * sr):], sr


def pitch_class_profile(x: np.ndarray, sr: int, *, n_fft: int = 8192, hop: int = 4096,
                        fmin: float = 55.0, fmax: float = 4000.0) -> np.ndarray:
    """Energy per pitch class (C=0 ... B=11) of ``x``, summed over time; shape (12,)."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft)[None, :], axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    band = (freqs >= fmin) & (freqs <= fmax)
    pcs = np.round(12 * np.log2(freqs[band] / 440.0) + 69).astype(int) % 12
    energy = spec[:, band].sum(axis=0)
    return np.bincount(pcs, weights=energy, minlength=12)


def estimate_key(x: np.ndarray, sr: int) -> tuple[str | None, float]:
    """Key of ``x`` as ``"A minor"``-style text and a confidence (correlation, -1..1).

    Krumhansl-Schmuckler: the pitch-class profile is correlated with the 24 rotated
    major/minor profiles. Silence or too little audio gives ``(None, 0.0)``.
    """
    if len(x) < sr // 2 or not np.any(x):
        return None, 0.0
    pcp = pitch_class_profile(x, sr)
    if pcp.sum() <= 0 or np.allclose(pcp, pcp[0]):
        return None, 0.0
    best, score = None, -2.0
    for tonic in range(12):
        for mode, profile in (("major", _MAJOR), ("minor", _MINOR)):
            r = float(np.corrcoef(pcp, np.roll(profile, tonic))[0, 1])
            if r > score:
                best, score = f"{KEY_NAMES[tonic]} {mode}", r
    return best, score


def energy_word(intensity: float | None) -> str | None:
    """A word for a 0..1 intensity (what MusicGen's captions use)."""
    if intensity is None:
        return None
    for limit, word in ((0.2, "calm"), (0.4, "mellow"), (0.6, "steady"), (0.8, "energetic")):
        if intensity < limit:
            return word
    return "intense"


def build_prompt(base: str = "", *, tempo: float | None = None, section: str | None = None,
                 intensity: float | None = None, key: str | None = None, meter: int | None = None) -> str:
    """Text prompt from the conditioning, e.g. ``"lofi beat, energetic chorus, 124 bpm, A minor, 4/4"``."""
    parts = [base.strip()] if base and base.strip() else []
    mood = " ".join(w for w in (energy_word(intensity), section if section not in (None, "unknown") else None) if w)
    if mood:
        parts.append(mood)
    if tempo:
        parts.append(f"{tempo:.0f} bpm")
    if key:
        parts.append(key)
    if meter and meter != 4:
        parts.append(f"{meter}/4")
    return ", ".join(parts)[:1000] or "music"
