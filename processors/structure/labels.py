"""The section labeller shared by the online and offline analyses.

Given segments in time order with their repetition group and loudness, it names them:

1. Silent segments are ``unknown``.
2. Chorus: among groups that repeat, the loudest; a group with >= 1 more repeat wins when it is
   within 1.5 dB ("the most repeated, energetic block").
3. Verse: the earliest other repeating group that is quieter than the chorus (a group heard
   only as the first and last segment is the intro returning as the outro, not a verse).
4. Intro: the first segment when it is not chorus or verse and >= 1 dB quieter than the median
   segment (a stream joined mid-song starts loud, and is not called an intro). Outro (only once the song has
   ended): the last segment when it is not chorus or verse, or repeats the intro.
5. Others: before the first chorus a verse (e.g. a pre-chorus); between choruses a bridge;
   after the last chorus of an ongoing song a bridge until the end shows it is the outro.
6. No repeating group in a finished song: it cannot be read by repetition, so every segment is
   ``unknown`` with low confidence, except that a clearly louder (>= 3 dB) middle segment is a
   tentative chorus and a first/last quieter one an intro/outro. In a song still under way
   (``final=False``) loudness alone gives low-confidence guesses (quiet start: intro; loud:
   chorus; else verse), and a block >= 2 dB louder than the repeating group, not yet repeated,
   is taken for the chorus.

Confidence grows with the number of repeats, the chorus's loudness margin and whether the song
has ended; it is always < 1, and <= 0.3 for ``unknown`` and for guesses without repetition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "label_segments", "LABELS"]

LABELS = ("intro", "verse", "chorus", "bridge", "outro", "unknown")


@dataclass(frozen=True)
class Segment:
    """One segment to label: time span (s), repetition group, mean loudness (dB), silence."""

    start: float
    end: float
    group: int
    energy: float
    silent: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


def label_segments(segs: list[Segment], *, final: bool = True) -> list[tuple[str, float]]:
    """``(label, confidence)`` per segment.

    Parameters
    ----------
    segs : list of Segment
        In time order.
    final : bool
        True when the song has ended (offline, or online after the stream's end): only then
        can the last segment be the outro.
    """
    n = len(segs)
    out: list[list] = [["unknown", 0.2] for _ in range(n)]
    music = [i for i, s in enumerate(segs) if not s.silent]
    for i, s in enumerate(segs):
        if s.silent:
            out[i] = ["unknown", 0.3]
    if not music:
        return [tuple(x) for x in out]
    groups: dict[int, list[int]] = {}
    for i in music:
        groups.setdefault(segs[i].group, []).append(i)

    def energy(g: int) -> float:
        idx = groups[g]
        w = np.array([max(segs[i].duration, 1e-3) for i in idx])
        return float(np.average([segs[i].energy for i in idx], weights=w))

    repeating = [g for g, idx in groups.items() if len(idx) >= 2]
    if not repeating:
        return _no_repetition(segs, music, out, final) if final else _energy_guess(segs, music, out)

    chorus = max(repeating, key=energy)
    for g in repeating:
        if g != chorus and len(groups[g]) > len(groups[chorus]) and energy(g) >= energy(chorus) - 1.5:
            chorus = g
    if not final:
        # a song under way: a clearly louder block that has not come back yet is more likely the
        # chorus than a repeating quieter one (which is then the verse)
        louder = [g for g in groups if g not in repeating and groups[g][0] != music[0]
                  and energy(g) >= energy(chorus) + 2.0]
        if louder:
            chorus = max(louder, key=energy)
    first_chorus = groups[chorus][0]
    last_chorus = groups[chorus][-1]
    # a group heard only at the very start and end is the intro coming back as the outro
    bookends = {g for g in repeating if final and set(groups[g]) == {music[0], music[-1]}}
    quieter = [g for g in repeating if g != chorus and g not in bookends and energy(g) < energy(chorus)]
    verse = min(quieter, key=lambda g: groups[g][0]) if quieter else None
    margin = energy(chorus) - np.median([segs[i].energy for i in music])
    c_conf = float(np.clip(0.45 + 0.1 * len(groups[chorus]) + 0.05 * margin + (0.1 if final else 0.0), 0.3, 0.95))
    for i in groups[chorus]:
        out[i] = ["chorus", c_conf]
    if verse is not None:
        v_conf = float(np.clip(0.4 + 0.1 * len(groups[verse]) + (0.1 if final else 0.0), 0.3, 0.9))
        for i in groups[verse]:
            out[i] = ["verse", v_conf]
    first, last = music[0], music[-1]
    median = float(np.median([segs[i].energy for i in music]))
    if out[first][0] == "unknown" and segs[first].energy <= median - 1.0:
        # intros are not the loud part; a stream joined mid-song starts loud and stays unnamed
        out[first] = ["intro", 0.7 if final else 0.55]
    if final and (out[last][0] == "unknown" or (last != first and segs[last].group == segs[first].group
                                                 and out[first][0] == "intro")):
        out[last] = ["outro", 0.7]
    for i in music:
        if out[i][0] != "unknown":
            continue
        if i < first_chorus:
            out[i] = ["verse", 0.4]
        elif i < last_chorus:
            out[i] = ["bridge", 0.5 if len(groups[segs[i].group]) == 1 else 0.35]
        else:
            # after the last chorus: a bridge for now (an ongoing song), the outro at the end
            out[i] = ["bridge" if not final else ("outro" if i == last else "bridge"), 0.35]
    return [tuple(x) for x in out]


def _energy_guess(segs: list[Segment], music: list[int], out: list[list]) -> list[tuple[str, float]]:
    """A song under way with nothing repeated yet: guess from loudness alone, with low confidence."""
    e = np.array([segs[i].energy for i in music])
    for k, i in enumerate(music):
        if k == 0 and len(music) > 1 and e[0] <= np.median(e) - 2.0:
            out[i] = ["intro", 0.3]
        elif e[k] >= e.max() - 2.0 and e[k] >= e.min() + 3.0:
            out[i] = ["chorus", 0.25]
        else:
            out[i] = ["verse", 0.2]
    return [tuple(x) for x in out]


def _no_repetition(segs: list[Segment], music: list[int], out: list[list], final: bool) -> list[tuple[str, float]]:
    energies = np.array([segs[i].energy for i in music])
    if len(music) >= 3:
        top = int(np.argmax(energies))
        if 0 < top < len(music) - 1 and energies[top] - np.median(energies) >= 3.0:
            out[music[top]] = ["chorus", 0.3]
            if energies[0] < energies[top] - 3.0:
                out[music[0]] = ["intro", 0.3]
            if final and energies[-1] < energies[top] - 3.0:
                out[music[-1]] = ["outro", 0.3]
    return [tuple(x) for x in out]
