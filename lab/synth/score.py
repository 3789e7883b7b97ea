"""A :class:`~lab.synth.plan.SongPlan` as a music21 score.

Six parts: drums (General MIDI percussion, channel 10), bass, comping chords, a sustained pad,
power chords (chorus only) and a lead melody. Each label has its own chord progression, melody,
instrumentation and velocity, and every repeat of a label plays the same notes, so sections
repeat; the chorus has every layer and the highest velocities. Build-up bars replace the
groove with a snare roll (eighths, then sixteenths) over a crescendo.

Notes sit at exact quarter-length offsets (music21 writes 10080 ticks per quarter, which
divides the eighth, triplet and swing positions used here), and tempo marks change only on
beat boundaries, so :func:`~lab.synth.plan.beat_grid` is the exact beat truth.
"""
from __future__ import annotations

import numpy as np

from .plan import LABELS, BeatGrid, SongPlan, beat_grid

__all__ = ["build_score", "chord_truth", "key_truth", "progressions", "PROGRESSIONS", "KIT", "VELOCITY", "PITCH_NAMES"]

SCALES = {False: (0, 2, 4, 5, 7, 9, 11), True: (0, 2, 3, 5, 7, 8, 10)}
# chord progressions as scale degrees, one chord per bar; each label draws its own
PROGRESSIONS = ((1, 5, 6, 4), (1, 6, 4, 5), (6, 4, 1, 5), (4, 1, 5, 6), (1, 4, 6, 5),
                (2, 5, 1, 6), (1, 4, 1, 5), (6, 5, 4, 5), (4, 5, 3, 6), (1, 3, 4, 4))
KIT = {"kick": 36, "side": 37, "snare": 38, "clap": 39, "closed": 42, "tom": 45, "open": 46,
       "crash": 49, "ride": 51}
# base velocity per (label, style): the chorus is the loudest
VELOCITY = {("intro", "normal"): 56, ("verse", "normal"): 94, ("chorus", "normal"): 114,
            ("bridge", "half-time"): 66, ("bridge", "breakdown"): 58, ("outro", "normal"): 52}
# melody density (probability of a note on each eighth) and register (scale steps above the key)
MELODY = {"verse": (0.45, 7), "chorus": (0.7, 11), "bridge": (0.25, 7)}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_QUALITY = {(4, 7): "maj", (3, 7): "min", (3, 6): "dim", (4, 8): "aug"}


def _degree_pitch(key: int, scale: tuple, step: int) -> int:
    """MIDI pitch of scale step ``step`` (0 = tonic, 7 = tonic an octave up, negative below)."""
    return key + scale[step % 7] + 12 * (step // 7)


def _triad(key: int, scale: tuple, degree: int) -> list[int]:
    root = degree - 1
    return [_degree_pitch(key, scale, root + k) for k in (0, 2, 4)]


def progressions(rng: np.random.Generator) -> dict[str, tuple[int, ...]]:
    """The chord progression (scale degrees, one chord per bar) of each label; the first draw of a song's rng."""
    order = rng.permutation(len(PROGRESSIONS))
    return {lab: PROGRESSIONS[order[i]] for i, lab in enumerate(LABELS)}


def _chord_label(triad: list[int]) -> str:
    """Harte-style label of a root-position triad, e.g. ``"A:min"`` (as ``mir_eval.chord`` reads it)."""
    root = triad[0]
    return f"{PITCH_NAMES[root % 12]}:{_QUALITY[(triad[1] - root, triad[2] - root)]}"


def key_truth(plan: SongPlan) -> tuple[int, str]:
    """``(tonic pitch class 0-11, "major" | "minor")`` of ``plan`` (one key per song)."""
    return plan.key % 12, "minor" if plan.minor else "major"


def chord_truth(plan: SongPlan, *, seed: int, grid: BeatGrid | None = None) -> list[tuple[float, float, str]]:
    """The chords :func:`build_score` plays for ``plan`` and ``seed``: ``(start, end, label)`` in seconds.

    One chord per bar (every layer of a bar plays its triad, build-ups included); bars that repeat
    the chord are merged, so each row boundary is a chord change. Labels are Harte-style
    (``C:maj``, ``A:min``, ``B:dim``: natural minor's ii is diminished); the audio after the last
    bar (the release) is not listed.
    """
    grid = grid or beat_grid(plan)
    prog = progressions(np.random.default_rng(seed))
    scale = SCALES[plan.minor]
    bpb = plan.beats_per_bar
    rows: list[list] = []
    for i, s in enumerate(plan.sections):
        first = int(np.flatnonzero(grid.section == i)[0])
        for j in range(s.bars):
            p = prog[s.label]
            b0 = first + j * bpb
            start = float(grid.times[b0])
            end = float(grid.times[b0 + bpb]) if b0 + bpb < len(grid.times) else float(grid.end)
            label = _chord_label(_triad(plan.key, scale, p[j % len(p)]))
            if rows and rows[-1][2] == label:
                rows[-1][1] = end
            else:
                rows.append([start, end, label])
    return [(a, b, lab) for a, b, lab in rows]


class _Parts:
    """The score's parts and a fast note writer (music21 ``coreInsert``)."""

    ROLES = ("drums", "bass", "comp", "pad", "power", "lead")

    def __init__(self, plan: SongPlan):
        from music21 import instrument, meter, stream, tempo  # imported late: music21 is slow to import

        self._tempo = tempo
        self.score = stream.Score()
        self.parts = {}
        for ch, role in enumerate(self.ROLES):
            part = stream.Part(id=role)
            if role == "drums":
                inst = instrument.Percussion()
                inst.midiChannel = 9                     # General MIDI channel 10 (0-based 9)
            else:
                inst = instrument.Instrument()
                inst.midiProgram = plan.programs[role]
                inst.midiChannel = ch - 1                # channels 1-5
            inst.partName = role
            part.coreInsert(0.0, inst)
            self.parts[role] = part
        self.parts["drums"].coreInsert(0.0, meter.TimeSignature(plan.meter))

    def tempo(self, offset: float, quarter_bpm: float) -> None:
        mark = self._tempo.MetronomeMark(number=round(float(quarter_bpm), 6), referent=1.0)
        self.parts["drums"].coreInsert(offset, mark)

    def note(self, role: str, offset: float, pitches, dur: float, vel: float) -> None:
        from music21 import chord, note

        v = int(np.clip(round(vel), 1, 127))
        if isinstance(pitches, (list, tuple)):
            n = chord.Chord([int(p) for p in pitches])
        else:
            n = note.Note(int(pitches))
        n.quarterLength = max(round(float(dur), 6), 1 / 48)
        n.volume.velocity = v
        self.parts[role].coreInsert(round(float(offset), 6), n)

    def finish(self):
        for role in self.ROLES:
            part = self.parts[role]
            part.coreElementsChanged()
            self.score.insert(0.0, part)
        return self.score


class _Song:
    """Note generation for one plan and seed."""

    def __init__(self, plan: SongPlan, grid: BeatGrid, rng: np.random.Generator):
        self.plan, self.grid, self.rng = plan, grid, rng
        self.bpb = plan.beats_per_bar
        self.qpb = plan.quarters_per_beat
        self.ternary = plan.meter == "6/8"
        self.sub = 3 if self.ternary else 2                 # eighths per beat
        self.scale = SCALES[plan.minor]
        self.progression = progressions(rng)
        self.melody = {lab: self._motif(*MELODY[lab]) for lab in MELODY}
        self.out = _Parts(plan)

    # -- time -----------------------------------------------------------------------
    def at(self, beat: int, frac: float) -> float:
        """Quarter-length offset of ``frac`` (0..1) into global beat ``beat``, with swing."""
        if not self.ternary and self.plan.swing:
            s = self.plan.swing
            frac = frac * (1 + s) if frac < 0.5 else 0.5 * (1 + s) + (frac - 0.5) * (1 - s)
        return (beat + frac) * self.qpb

    # -- material -------------------------------------------------------------------
    def _motif(self, density: float, register: int) -> list[list[tuple[int, int, int]]]:
        """A 4-bar melody: per bar, a list of (slot, length in slots, scale step)."""
        slots = self.bpb * self.sub
        bars = []
        step = register
        for _ in range(4):
            on = [0] + [k for k in range(1, slots) if self.rng.random() < density]
            notes = []
            for i, k in enumerate(on):
                nxt = on[i + 1] if i + 1 < len(on) else slots
                step = int(np.clip(step + self.rng.choice([-2, -1, 0, 1, 1, 2, 3, -3]), register - 4, register + 6))
                notes.append((k, nxt - k, step))
            bars.append(notes)
        return bars

    def chord(self, label: str, bar: int) -> list[int]:
        prog = self.progression[label]
        return _triad(self.plan.key, self.scale, prog[bar % len(prog)])

    # -- layers ---------------------------------------------------------------------
    def drums(self, kind: str, b0: int, vel: float, bar_in_section: int) -> None:
        hits: list[tuple[int, float, str, float]] = []      # (beat in bar, frac, drum, gain)
        bpb, t = self.bpb, self.ternary
        eighths = [k / self.sub for k in range(self.sub)]
        if kind == "light":
            hits += [(b, 0.0, "closed", 0.55) for b in range(bpb)]
        elif kind == "outro":
            hits += [(0, 0.0, "kick", 0.8)] + [(b, 0.0, "closed", 0.5) for b in range(bpb)]
        elif kind == "groove":
            hits += [(0, 0.0, "kick", 1.0)]
            if bpb == 4:
                hits += [(2, 0.0, "kick", 0.9), (1, 0.0, "snare", 0.9), (3, 0.0, "snare", 0.9)]
            elif bpb == 3:
                hits += [(1, 0.0, "snare", 0.7), (2, 0.0, "snare", 0.7)]
            else:
                hits += [(1, 0.0, "snare", 0.9)]
            hits += [(b, f, "closed", 0.7 if f == 0 else 0.5) for b in range(bpb) for f in eighths]
        elif kind == "full":
            hits += [(b, 0.0, "kick", 1.0) for b in range(bpb)]
            hits += [(b, eighths[-1], "kick", 0.75) for b in range(0, bpb, 2)]
            back = [1, 3] if bpb == 4 else [1, 2] if bpb == 3 else [1]
            hits += [(b, 0.0, d, 1.0) for b in back for d in ("snare", "clap")]
            hits += [(b, f, "open" if f else "closed", 0.8 if f else 0.6) for b in range(bpb) for f in eighths]
            if not t:
                hits += [(b, f, "closed", 0.4) for b in range(bpb) for f in (0.25, 0.75)]
            if bar_in_section % 4 == 0:
                hits.append((0, 0.0, "crash", 1.0))
        elif kind == "half":
            hits += [(0, 0.0, "kick", 0.9), (bpb // 2 if bpb > 2 else 1, 0.0, "side", 0.8)]
            hits += [(b, 0.0, "ride", 0.7) for b in range(bpb)]
        for b, f, drum, gain in hits:
            self.out.note("drums", self.at(b0 + b, f), KIT[drum], 0.25, vel * gain)

    def build_up(self, b0: int, n_beats: int, vel: float) -> None:
        """Snare roll (eighths, then sixteenths in the second half) over a crescendo."""
        for k in range(n_beats):
            progress = k / max(n_beats - 1, 1)
            subs = self.sub if progress < 0.5 else 2 * self.sub
            gain = 0.4 + 0.6 * progress
            self.out.note("drums", self.at(b0 + k, 0.0), KIT["kick"], 0.25, vel * gain)
            for j in range(subs):
                frac = j / subs
                self.out.note("drums", (b0 + k + frac) * self.qpb, KIT["snare"], 0.2,
                              vel * (gain + 0.1 * frac))

    def bar(self, label: str, style: str, bar_idx: int, b0: int, build: float | None) -> None:
        """Every layer of one bar. ``build`` is None, or the build-up progress (0..1) of this bar."""
        plan, bpb = self.plan, self.bpb
        vel = VELOCITY[(label, style)]
        triad = self.chord(label, bar_idx)
        root = triad[0]
        bass = root - 24 if root - 24 >= 28 else root - 12
        bar_q = bpb * self.qpb
        if build is not None:
            gain = 0.55 + 0.45 * build
            for k in range(bpb * self.sub):
                b, f = divmod(k, self.sub)
                self.out.note("bass", self.at(b0 + b, f / self.sub), bass, self.qpb / self.sub * 0.9, vel * gain)
                self.out.note("comp", self.at(b0 + b, f / self.sub), triad, self.qpb / self.sub * 0.8, vel * gain * 0.8)
            self.out.note("pad", self.at(b0, 0.0), [root - 12, *triad], bar_q, vel * gain * 0.7)
            return
        drum_kind = {"intro": "light", "verse": "groove", "chorus": "full", "outro": "outro",
                     "bridge": "half" if style == "half-time" else None}[label]
        if drum_kind:
            self.drums(drum_kind, b0, vel, bar_idx)
        # bass
        if label == "verse":
            for b in range(bpb):
                self.out.note("bass", self.at(b0 + b, 0.0), bass, self.qpb * 0.9, vel)
        elif label == "chorus":
            for b in range(bpb):
                for j in range(self.sub):
                    p = bass + (12 if j % 2 else 0)
                    self.out.note("bass", self.at(b0 + b, j / self.sub), p, self.qpb / self.sub * 0.9, vel)
        elif label == "outro" or (label == "bridge" and style == "half-time"):
            self.out.note("bass", self.at(b0, 0.0), bass, bar_q * 0.95, vel)
        # chords
        pad_vel = {"chorus": 0.7, "verse": 0.6}.get(label, 0.9)
        self.out.note("pad", self.at(b0, 0.0), [root - 12, *triad], bar_q, vel * pad_vel)
        if label == "verse":
            for b in range(bpb):
                self.out.note("comp", self.at(b0 + b, 0.0), triad, self.qpb * 0.5, vel * 0.8)
        elif label == "chorus":
            for b in range(bpb):
                for j in range(self.sub):
                    self.out.note("comp", self.at(b0 + b, j / self.sub), triad, self.qpb / self.sub * 0.7,
                                  vel * (0.9 if j == 0 else 0.7))
            self.out.note("power", self.at(b0, 0.0), [root - 12, root - 5, root], bar_q, vel * 0.85)
        elif label in ("outro", "bridge"):
            self.out.note("comp", self.at(b0, 0.0), triad, self.qpb, vel * 0.7)
        # melody
        if label in self.melody and not (label == "bridge" and style == "breakdown"):
            for slot, length, step in self.melody[label][bar_idx % 4]:
                b, f = divmod(slot, self.sub)
                pitch = _degree_pitch(plan.key, self.scale, step)
                dur = length / self.sub * self.qpb * 0.95
                gain = 1.0 if label == "chorus" else 0.85
                self.out.note("lead", self.at(b0 + b, f / self.sub), pitch, dur, vel * gain)

    def render(self):
        grid, bpb = self.grid, self.bpb
        qbpm = grid.bpm * self.qpb
        self.out.tempo(0.0, qbpm[0])
        for k in np.flatnonzero(np.diff(qbpm)) + 1:
            self.out.tempo(k * self.qpb, qbpm[k])
        for i, s in enumerate(self.plan.sections):
            first = int(np.flatnonzero(grid.section == i)[0])
            for j in range(s.bars):
                build = None
                if s.build_up_bars and j >= s.bars - s.build_up_bars:
                    k = j - (s.bars - s.build_up_bars)
                    build = k / max(s.build_up_bars - 1, 1) if s.build_up_bars > 1 else 0.5
                b0 = first + j * bpb
                self.bar(s.label, s.style, j, b0, build)
            if s.build_up_bars:
                n = s.build_up_bars * bpb
                self.build_up(first + s.bars * bpb - n, n, VELOCITY[("chorus", "normal")])
        return self.out.finish()


def build_score(plan: SongPlan, *, seed: int, grid: BeatGrid | None = None):
    """The music21 ``Score`` of ``plan``; note-level choices (melodies, progressions) follow ``seed``.

    Returns
    -------
    music21.stream.Score
    """
    grid = grid or beat_grid(plan)
    return _Song(plan, grid, np.random.default_rng(seed)).render()
