"""A song-level estimate from metadata only: tempo, beat interval and a plausible section plan.

For the error generator's ``/api/analyze-song`` when there is no audio. Inputs are the audio
features a catalogue gives (tempo in BPM, energy and danceability 0..1, optional loudness in
dB and valence 0..1); Spotify's own audio-features / audio-analysis endpoints are closed to new
apps, so nothing here calls it. When audio is available its analysis wins (:func:`prefer_audio`).

The heuristic (4/4 assumed: the features carry no meter):

1. Form by duration: < 75 s intro-verse-chorus-outro; < 150 s adds a second verse-chorus;
   < 240 s adds a bridge and a last chorus; longer songs add one more chorus.
2. Nominal lengths in bars: verse 16, chorus 8 (16 when danceability >= 0.7: dance tracks dwell
   on the hook), bridge 8, intro and outro 8 (4 when energy >= 0.7: energetic songs get to the
   point), then all scaled by one factor so the plan fills the duration and rounded to phrases
   (multiples of 4 bars, or of 2 below 6 bars); the outro absorbs the rounding (ending exactly
   at the song's end). Songs shorter than 8 bars are one verse.
3. Section energy (0..1): the song's energy (blended 70/30 with loudness mapped from
   -30..-5 dB when given) times 0.5 (intro, outro), 0.8 (verse), 0.7 (bridge); the chorus gets
   +0.2 x (0.5 + danceability / 2), capped at 1.
4. Confidence 0.3: a guess from metadata, to be replaced by audio analysis.
"""
from __future__ import annotations

import math

from beatbus.errors import ConfigError

__all__ = ["plan_from_metadata", "prefer_audio", "FORMS_BY_DURATION"]

FORMS_BY_DURATION = (
    (75.0, ("intro", "verse", "chorus", "outro")),
    (150.0, ("intro", "verse", "chorus", "verse", "chorus", "outro")),
    (240.0, ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro")),
    (math.inf, ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "chorus", "outro")),
)
ENERGY_FACTOR = {"intro": 0.5, "verse": 0.8, "bridge": 0.7, "outro": 0.5}


def _phrase(bars: float) -> int:
    """Whole phrases: multiples of 4 bars from 6 bars up, else of 2 (at least 2)."""
    return max(4, 4 * int(round(bars / 4))) if bars >= 6 else max(2, 2 * int(round(bars / 2)))


def _number(name: str, value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if (value <= lo if lo_open else value < lo) or value > hi:
        left = "(" if lo_open else "["
        raise ConfigError(f"{name}={value!r} is out of range: must be in {left}{lo:g}, {hi:g}]")
    return float(value)


def plan_from_metadata(name: str, artist: str, duration: float, tempo: float, energy: float,
                       danceability: float, loudness: float | None = None, valence: float | None = None) -> dict:
    """Tempo, beat interval and a section plan from a song's metadata (see the module docstring).

    Parameters
    ----------
    name, artist : str
    duration : float
        Seconds, in (0, 3600].
    tempo : float
        BPM, in (0, 300].
    energy, danceability : float
        0..1.
    loudness : float, optional
        Integrated loudness in dB, -60..5.
    valence : float, optional
        0..1 (echoed; it does not change the plan).

    Returns
    -------
    dict
        ``name, artist, duration, tempo, beat_interval, meter, bar_duration, sections`` (each
        ``label, start, duration, end, bars, energy``), ``source`` ("metadata"), ``confidence``.

    Raises
    ------
    ConfigError (a ValueError)
        A missing, non-numeric or out-of-range field, named in the message.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name={name!r} must be a non-empty string")
    if not isinstance(artist, str):
        raise ConfigError(f"artist={artist!r} must be a string")
    duration = _number("duration", duration, 0.0, 3600.0, lo_open=True)
    tempo = _number("tempo", tempo, 0.0, 300.0, lo_open=True)
    energy = _number("energy", energy, 0.0, 1.0)
    danceability = _number("danceability", danceability, 0.0, 1.0)
    if loudness is not None:
        loudness = _number("loudness", loudness, -60.0, 5.0)
    if valence is not None:
        valence = _number("valence", valence, 0.0, 1.0)

    beat = 60.0 / tempo
    bar = 4 * beat
    total_bars = duration / bar
    form = next(f for limit, f in FORMS_BY_DURATION if duration < limit)
    if total_bars < 8:
        form = ("verse",)              # too short for a form: one section
    nominal = {"intro": 4 if energy >= 0.7 else 8, "verse": 16, "chorus": 16 if danceability >= 0.7 else 8,
               "bridge": 8, "outro": 4 if energy >= 0.7 else 8}
    scale = total_bars / sum(nominal[s] for s in form)
    bars = [_phrase(nominal[s] * scale) for s in form]
    # the outro absorbs the rounding; take bars back from the longest sections if it has < 2
    while len(bars) > 1 and round(total_bars) - sum(bars[:-1]) < 2 and max(bars[:-1]) > 2:
        k = max(range(len(bars) - 1), key=lambda i: bars[i])
        bars[k] -= 2
    if len(bars) > 1:
        bars[-1] = max(1, int(round(total_bars)) - sum(bars[:-1]))
    level = energy if loudness is None else 0.7 * energy + 0.3 * min(max((loudness + 30.0) / 25.0, 0.0), 1.0)
    sections, t = [], 0.0
    for i, (label, n) in enumerate(zip(form, bars)):
        dur = n * bar if i < len(form) - 1 else max(duration - t, 0.0)
        e = min(1.0, level + 0.2 * (0.5 + danceability / 2)) if label == "chorus" else level * ENERGY_FACTOR[label]
        sections.append({"label": label, "start": round(t, 3), "duration": round(dur, 3), "end": round(t + dur, 3),
                         "bars": n if i < len(form) - 1 else round(dur / bar, 2), "energy": round(e, 3)})
        t += dur
    return {"name": name, "artist": artist, "duration": duration, "tempo": tempo, "beat_interval": round(beat, 6),
            "meter": 4, "bar_duration": round(bar, 6), "sections": sections, "valence": valence,
            "source": "metadata", "confidence": 0.3}


def prefer_audio(plan: dict, analysis: dict | None) -> dict:
    """The metadata plan, replaced by audio analysis where there is any.

    ``analysis`` is ``beatbus analyze --sections --json`` output (``tempo``, ``sections``); its
    sections (unless they are only ``unknown``) and its tempo (when > 0) win.
    """
    if not analysis:
        return plan
    out = dict(plan)
    secs = analysis.get("sections") or []
    if secs and any(s.get("label") != "unknown" for s in secs):
        out["sections"] = [{"label": s["label"], "start": s["start"], "duration": round(s["end"] - s["start"], 3),
                            "end": s["end"], "confidence": s.get("confidence")} for s in secs]
        out["source"] = "audio"
        out["confidence"] = round(float(sum(s.get("confidence", 0.5) for s in secs) / len(secs)), 3)
    tempo = analysis.get("tempo") or 0
    if tempo > 0:
        out["tempo"] = float(tempo)
        out["beat_interval"] = round(60.0 / tempo, 6)
        out["bar_duration"] = round(4 * 60.0 / tempo, 6)
        out["source"] = "audio"
    return out
