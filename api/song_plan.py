"""Song plans for rhythm mode: a metadata heuristic, or the offline analyses of an uploaded file.

The metadata heuristic (a JSON body: no audio to analyse):

1. tempo: the given one, else a typical tempo for the genre (:data:`GENRE_TEMPO`), else 120;
2. bars = duration x tempo / 60 / meter;
3. sections are whole 4-bar phrases (intro, bridge and outro at least one, verse and chorus at
   least two): the longest of :data:`FORMS` that fits is used, from the common pop form
   :data:`FORM` (intro 8, verse 16, chorus 16, verse 16, chorus 16, bridge 8, chorus 16, outro 8
   bars, 52 bars at the least) down to verse + chorus (16 bars); the phrases beyond the minimum
   go where a section is furthest below its share of the form, and the bars past the last whole
   phrase to the last section. Songs under 16 bars are one verse. Section times follow from
   the bars, the last one ending at ``duration``.

Audio: the file is decoded once; beats of the whole file from the offline decoder
(:func:`processors.beat.track_offline`: from the first beat played, where the causal tracker needs
a few seconds); tempo = 60 / median inter-beat interval, meter = the most common bar length;
sections from :func:`processors.structure.analyze_structure` on the same samples and beat times,
the analysis behind ``beatbus analyze --sections`` and ``beatbus structure analyze`` (``unknown``
where the structure cannot be read, e.g. nothing repeats); each section's bars = its length / the
tracked bar length, rounded.
"""
from __future__ import annotations

from collections import Counter
from os import PathLike

import numpy as np

from .models import PlannedSection, SongMetadata, SongPlan

__all__ = ["plan_from_metadata", "plan_from_audio", "sections_for", "FORM", "FORMS", "PHRASE_BARS", "GENRE_TEMPO",
           "DEFAULT_TEMPO"]

FORM: tuple[tuple[str, int], ...] = (("intro", 8), ("verse", 16), ("chorus", 16), ("verse", 16),
                                     ("chorus", 16), ("bridge", 8), ("chorus", 16), ("outro", 8))
# shorter songs drop the sections a short pop song drops first: the bridge, then a verse and chorus
FORMS: tuple[tuple[tuple[str, int], ...], ...] = (
    FORM,
    (("intro", 8), ("verse", 16), ("chorus", 16), ("verse", 16), ("chorus", 16), ("outro", 8)),
    (("intro", 8), ("verse", 16), ("chorus", 16), ("outro", 8)),
    (("verse", 16), ("chorus", 16)),
)
PHRASE_BARS = 4                     # sections are whole phrases of 4 bars (a verse or chorus at least 8)
PHRASES_MIN = {"intro": 1, "verse": 2, "chorus": 2, "bridge": 1, "outro": 1}
GENRE_TEMPO: dict[str, float] = {
    "ballad": 72, "reggae": 80, "hiphop": 90, "blues": 95, "classical": 100, "country": 110, "pop": 118,
    "rock": 120, "disco": 120, "house": 124, "electronic": 128, "jazz": 130, "techno": 132, "metal": 140,
    "punk": 160, "dnb": 174,
}
DEFAULT_TEMPO = 120.0


def _form_for(phrases: int) -> tuple[tuple[str, int], ...] | None:
    """The longest form of :data:`FORMS` whose minimal lengths fit ``phrases`` (None: none fits)."""
    for form in FORMS:
        if sum(PHRASES_MIN[label] for label, _ in form) <= phrases:
            return form
    return None


def _phrases_of(form: tuple[tuple[str, int], ...], phrases: int) -> list[int]:
    """Split ``phrases`` over ``form``: each section its minimum, the rest where it is furthest below its share.

    Shares follow the form's bar lengths, so verses and choruses grow first and stay
    twice the intro, bridge and outro.
    """
    weight = sum(bars for _, bars in form)
    got = [PHRASES_MIN[label] for label, _ in form]
    for _ in range(phrases - sum(got)):
        i = max(range(len(form)), key=lambda k: (form[k][1] * phrases / weight - got[k], -k))
        got[i] += 1
    return got


def sections_for(*, duration: float, tempo: float, meter: int, pattern_for=None) -> list[PlannedSection]:
    """The section timeline of the heuristic (see the module docstring).

    Parameters
    ----------
    duration : float
        Seconds.
    tempo : float
        Beats per minute.
    meter : int
        Beats per bar.
    pattern_for : callable, optional
        ``label -> pattern name`` to annotate each section.
    """
    bar_s = meter * 60.0 / tempo
    total = max(int(duration // bar_s), 1)
    phrases = total // PHRASE_BARS
    form = _form_for(phrases)
    if form is None:                    # under 16 bars: one verse
        plan = [("verse", total)]
    else:
        plan = [(label, n * PHRASE_BARS) for (label, _), n in zip(form, _phrases_of(form, phrases), strict=True)]
        plan[-1] = (plan[-1][0], plan[-1][1] + total - phrases * PHRASE_BARS)   # bars left over: the ending
    out, bar = [], 0
    for i, (label, bars) in enumerate(plan):
        start = bar * bar_s
        end = duration if i == len(plan) - 1 else (bar + bars) * bar_s
        bar += bars
        out.append(PlannedSection(label=label, start=round(start, 3), end=round(max(end, start + 1e-3), 3),
                                  bars=bars, pattern=pattern_for(label) if pattern_for else None))
    return out


def plan_from_metadata(meta: SongMetadata, *, pattern_for=None) -> SongPlan:
    """Plan a song from its metadata alone."""
    genre = (meta.genre or "").strip().lower().replace("-", "").replace(" ", "")
    tempo = meta.tempo or GENRE_TEMPO.get(genre, DEFAULT_TEMPO)
    return SongPlan(title=meta.title, artist=meta.artist, tempo=round(float(tempo), 2), meter=meta.meter,
                    duration=meta.duration, method="metadata-heuristic",
                    sections=sections_for(duration=meta.duration, tempo=tempo, meter=meta.meter,
                                          pattern_for=pattern_for))


def plan_from_audio(path: str | PathLike, *, duration: float, backend: str = "dsp", sr: int = 22050,
                    device: str = "cpu", title: str = "", pattern_for=None) -> SongPlan:
    """Plan a song from its audio: tracked tempo and meter, analysed sections (see the module docstring).

    Raises
    ------
    ValueError
        Fewer than 4 beats found (silence, noise, or too short to tell).
    """
    from beatbus.audio import load_audio
    from beatbus.processors.beat import track_offline
    from beatbus.processors.structure import analyze_structure

    y = load_audio(path, sr=sr)
    beats = track_offline(y, backend=backend, sr=sr, device=device)
    if len(beats) < 4:
        raise ValueError(f"found {len(beats)} beats: too few to plan a song (is it music?)")
    times = np.array([b.time for b in beats])
    tempo = float(np.clip(60.0 / np.median(np.diff(times)), 30.0, 300.0))
    meter = Counter(b.meter for b in beats).most_common(1)[0][0]
    meter = int(min(max(meter, 2), 12))
    # beat times only, as `beatbus analyze --sections` passes them (analyze_structure says why)
    structure = analyze_structure(y, beats=times, sr=sr)
    bar_s = meter * 60.0 / tempo
    sections = [PlannedSection(label=s["label"], start=s["start"], end=s["end"],
                               bars=int(round((s["end"] - s["start"]) / bar_s)),
                               pattern=pattern_for(s["label"]) if pattern_for else None)
                for s in structure.sections]
    return SongPlan(title=title, tempo=round(tempo, 2), meter=meter, duration=round(duration, 3), method="audio",
                    sections=sections, beats=len(beats))
