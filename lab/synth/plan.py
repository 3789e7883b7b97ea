"""Song plans: the form, tempo curve and style of a synthetic song, and their ground truth.

A :class:`SongPlan` is plain data (JSON-serialisable through :meth:`SongPlan.to_dict`). Everything
the annotations need (beat times, section times, energy transitions) is computed here from the
plan alone, so the labels are exact by construction; :mod:`lab.synth.score` turns the same
plan into notes.

Ground-truth conventions
------------------------
- Beats: one per metrical beat (quarter note in 3/4 and 4/4, dotted quarter in 6/8, so 6/8
  has 2 beats per bar); ``bpm`` counts those beats. Tempo is constant within a beat and may
  change only at beat boundaries (ramps are staircases of one step per beat), so beat times
  are exact sums of beat durations.
- Section energy levels (0..1) are fixed per label and style (:data:`ENERGY`); the chorus is
  always the most energetic.
- Transitions: a ``build-up`` spans the last ``build_up_bars`` bars before the next section;
  a ``drop`` is a section start whose energy rises by >= 0.4 to >= 0.8; a ``breakdown`` is a
  section start whose energy falls by >= 0.5; a ``tempo-change`` is a section start whose
  tempo steps by >= 4 %; a ``tempo-ramp`` is a section whose tempo glides to ``tempo_end``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Section", "SongPlan", "BeatGrid", "LABELS", "METERS", "ENERGY", "FORMS",
           "random_plan", "beat_grid", "section_times", "transitions", "energy_of"]

LABELS = ("intro", "verse", "chorus", "bridge", "outro")
# meter -> (beats per bar, quarter notes per beat, eighth-note subdivisions per beat)
METERS = {"3/4": (3, 1.0, 2), "4/4": (4, 1.0, 2), "6/8": (2, 1.5, 3)}
METER_BY_NUMBER = {3: "3/4", 4: "4/4", 6: "6/8"}
STYLES = {"intro": ("normal",), "verse": ("normal",), "chorus": ("normal",),
          "bridge": ("half-time", "breakdown"), "outro": ("normal",)}
ENERGY = {("intro", "normal"): 0.25, ("verse", "normal"): 0.6, ("chorus", "normal"): 1.0,
          ("bridge", "half-time"): 0.4, ("bridge", "breakdown"): 0.2, ("outro", "normal"): 0.25}
FORMS = (
    ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
    ("intro", "verse", "chorus", "verse", "chorus", "outro"),
    ("verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
)
TEMPO_LIMITS = (30.0, 300.0)
MIN_SECTION_S = 6.0       # random plans keep sections at least this long (intro/outro >= 4 s)
# General MIDI programs (0-based) to draw from, per role
PROGRAMS = {
    "bass": (32, 33, 34, 38),                 # acoustic, finger, pick, synth bass
    "comp": (0, 4, 16, 24, 27),               # piano, e-piano, organ, nylon and clean guitar
    "pad": (48, 50, 89, 91),                  # strings, synth strings, warm and choir pads
    "power": (29, 30, 61, 62),                # overdriven / distortion guitar, brass sections
    "lead": (56, 65, 73, 80, 81, 11),         # trumpet, alto sax, flute, square, saw, vibraphone
}


@dataclass(frozen=True)
class Section:
    """One section of a song.

    Parameters
    ----------
    label : {'intro', 'verse', 'chorus', 'bridge', 'outro'}
    bars : int
        Length in bars (>= 1).
    style : str
        ``normal``; a bridge is ``half-time`` or ``breakdown`` (drums out).
    build_up_bars : int
        The last ``build_up_bars`` bars are a build-up into the next section (snare roll,
        crescendo), 0 for none; must be < ``bars``.
    tempo : float, optional
        Tempo (BPM) at the section start; None continues the previous section's end tempo.
    tempo_end : float, optional
        Ramp the tempo linearly (one step per beat) to this BPM over the section.
    """

    label: str
    bars: int
    style: str = "normal"
    build_up_bars: int = 0
    tempo: float | None = None
    tempo_end: float | None = None

    def check(self, where: str) -> None:
        if self.label not in LABELS:
            raise ValueError(f"{where}.label={self.label!r} must be one of {', '.join(LABELS)}")
        if isinstance(self.bars, bool) or not isinstance(self.bars, int) or self.bars < 1:
            raise ValueError(f"{where}.bars={self.bars!r} must be a positive integer")
        if self.style not in STYLES[self.label]:
            raise ValueError(f"{where}.style={self.style!r} must be one of {STYLES[self.label]} "
                             f"for a {self.label}")
        if not isinstance(self.build_up_bars, int) or not 0 <= self.build_up_bars < self.bars:
            raise ValueError(f"{where}.build_up_bars={self.build_up_bars!r} must be in [0, bars)")
        for name in ("tempo", "tempo_end"):
            val = getattr(self, name)
            if val is not None and not (isinstance(val, (int, float)) and math.isfinite(val)
                                        and TEMPO_LIMITS[0] <= val <= TEMPO_LIMITS[1]):
                raise ValueError(f"{where}.{name}={val!r} must be a tempo in {TEMPO_LIMITS} BPM")


@dataclass(frozen=True)
class SongPlan:
    """Everything that defines a synthetic song except note-level randomness (the seed).

    Parameters
    ----------
    name : str
        File stem of the rendered files (letters, digits, ``_ . -``).
    tempo : float
        Initial tempo in beats per minute (beats as defined by the meter).
    meter : {'3/4', '4/4', '6/8'}
    sections : tuple of Section
    swing : float
        0 (straight) to 0.5: off-beat eighths move from 1/2 to ``(1 + swing) / 2`` of the beat
        (1/3 gives triplet swing). Ignored in 6/8, which is already ternary.
    key : int
        MIDI pitch of the tonic (48..72).
    minor : bool
    programs : dict
        General MIDI program (0-based) per role: ``bass``, ``comp``, ``pad``, ``power``, ``lead``.
    """

    name: str
    tempo: float
    sections: tuple[Section, ...]
    meter: str = "4/4"
    swing: float = 0.0
    key: int = 60
    minor: bool = False
    programs: dict = field(default_factory=lambda: {"bass": 33, "comp": 0, "pad": 48, "power": 29,
                                                     "lead": 80})

    def __post_init__(self) -> None:
        object.__setattr__(self, "sections", tuple(
            s if isinstance(s, Section) else Section(**s) for s in self.sections))
        self.check()

    def check(self) -> None:
        """Validate every field; raises ValueError naming the first bad one."""
        import re

        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", self.name):
            raise ValueError(f"name={self.name!r} must be 1-100 of A-Z a-z 0-9 _ . -")
        if not (isinstance(self.tempo, (int, float)) and math.isfinite(self.tempo)
                and TEMPO_LIMITS[0] <= self.tempo <= TEMPO_LIMITS[1]):
            raise ValueError(f"tempo={self.tempo!r} must be in {TEMPO_LIMITS} BPM")
        if self.meter not in METERS:
            raise ValueError(f"meter={self.meter!r} must be one of {', '.join(METERS)}")
        if not self.sections:
            raise ValueError("sections must not be empty")
        for i, s in enumerate(self.sections):
            s.check(f"sections[{i}]")
        if not 0.0 <= self.swing <= 0.5:
            raise ValueError(f"swing={self.swing!r} must be in [0, 0.5]")
        if not isinstance(self.key, int) or not 48 <= self.key <= 72:
            raise ValueError(f"key={self.key!r} must be a MIDI pitch in [48, 72]")
        for role in PROGRAMS:
            p = self.programs.get(role)
            if not isinstance(p, int) or not 0 <= p <= 127:
                raise ValueError(f"programs[{role!r}]={p!r} must be a General MIDI program 0..127")

    @property
    def beats_per_bar(self) -> int:
        return METERS[self.meter][0]

    @property
    def quarters_per_beat(self) -> float:
        return METERS[self.meter][1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sections"] = [asdict(s) for s in self.sections]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SongPlan:
        return cls(**{**d, "sections": tuple(Section(**s) for s in d["sections"])})


@dataclass(frozen=True)
class BeatGrid:
    """Exact beat positions of a plan.

    Attributes
    ----------
    times : np.ndarray [shape=(n,)]
        Onset time (s) of every beat.
    beat_in_bar : np.ndarray [shape=(n,), dtype=int]
        1-based position in the bar.
    bpm : np.ndarray [shape=(n,)]
        Tempo during each beat.
    section : np.ndarray [shape=(n,), dtype=int]
        Index of the section each beat belongs to.
    end : float
        Time at which the last beat ends (end of the song's music).
    """

    times: np.ndarray
    beat_in_bar: np.ndarray
    bpm: np.ndarray
    section: np.ndarray
    end: float


def energy_of(section: Section) -> float:
    return ENERGY[(section.label, section.style)]


def beat_grid(plan: SongPlan) -> BeatGrid:
    """Beat times, bar positions and tempo of every beat of ``plan``."""
    bpb = plan.beats_per_bar
    bpms, secs = [], []
    tempo = float(plan.tempo)
    for i, s in enumerate(plan.sections):
        start = float(s.tempo) if s.tempo is not None else tempo
        end = float(s.tempo_end) if s.tempo_end is not None else start
        n = s.bars * bpb
        bpms.extend(start + (end - start) * np.arange(n) / max(n - 1, 1))
        secs.extend([i] * n)
        tempo = end
    bpm = np.asarray(bpms, dtype=float)
    dur = 60.0 / bpm
    times = np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    in_bar = np.arange(len(bpm)) % bpb + 1
    return BeatGrid(times=times, beat_in_bar=in_bar, bpm=bpm, section=np.asarray(secs), end=float(np.sum(dur)))


def section_times(plan: SongPlan, grid: BeatGrid | None = None) -> list[tuple[float, float, str]]:
    """``(start, end, label)`` of every section, in seconds."""
    grid = grid or beat_grid(plan)
    out = []
    for i, s in enumerate(plan.sections):
        idx = np.flatnonzero(grid.section == i)
        end = grid.times[idx[-1] + 1] if idx[-1] + 1 < len(grid.times) else grid.end
        out.append((float(grid.times[idx[0]]), float(end), s.label))
    return out


def transitions(plan: SongPlan, grid: BeatGrid | None = None) -> list[dict]:
    """Ground-truth energy and tempo transitions of ``plan`` (see the module docstring)."""
    grid = grid or beat_grid(plan)
    spans = section_times(plan, grid)
    bpb = plan.beats_per_bar
    out: list[dict] = []
    for i, s in enumerate(plan.sections):
        start, end, _ = spans[i]
        first = int(np.flatnonzero(grid.section == i)[0])
        if i > 0:
            prev = plan.sections[i - 1]
            e0, e1 = energy_of(prev), energy_of(s)
            if e1 - e0 >= 0.4 - 1e-9 and e1 >= 0.8:
                out.append({"kind": "drop", "time": start, "energy_from": e0, "energy_to": e1})
            elif e0 - e1 >= 0.5 - 1e-9:
                out.append({"kind": "breakdown", "time": start, "energy_from": e0, "energy_to": e1})
            before = float(grid.bpm[first - 1])
            if abs(grid.bpm[first] - before) / before >= 0.04:
                out.append({"kind": "tempo-change", "time": start, "bpm_from": before,
                            "bpm_to": float(grid.bpm[first])})
        if s.tempo_end is not None and s.tempo_end != (s.tempo or grid.bpm[first]):
            out.append({"kind": "tempo-ramp", "time": start, "end": end,
                        "bpm_from": float(grid.bpm[first]), "bpm_to": float(s.tempo_end)})
        if s.build_up_bars:
            b0 = first + (s.bars - s.build_up_bars) * bpb
            out.append({"kind": "build-up", "time": float(grid.times[b0]), "end": end})
    return sorted(out, key=lambda t: (t["time"], t["kind"]))


def _tempo_move(tempo: float, factor: float, lo: float, hi: float) -> float:
    """``tempo * factor`` kept in [lo, hi]; the other direction when that range has no room."""
    new = tempo * factor
    if not lo <= new <= hi:
        new = tempo / factor
    return float(np.round(np.clip(new, lo, hi), 1))


def random_plan(seed: int | np.random.Generator, *, name: str = "song", meters=(3, 4, 6),
                tempo_range=(60.0, 200.0), duration_range=(30.0, 90.0), swing_prob: float = 0.25,
                ramp_prob: float = 0.25, step_prob: float = 0.15, build_prob: float = 0.7) -> SongPlan:
    """Draw a plan: a form from :data:`FORMS`, a meter, a tempo, swing, ramps and build-ups.

    Sections last >= 6 s (2, 4, 8 or 16 bars; intro and outro may be half that, >= 4 s); the
    form is drawn among those that fit ``duration_range`` (slow songs get the shorter forms).

    Parameters
    ----------
    seed : int or numpy Generator
    meters : iterable of {3, 4, 6}
        Candidate meters (3/4, 4/4, 6/8).
    tempo_range : (float, float)
        BPM range of the initial tempo (6/8 tempos count dotted quarters and are kept <= 140).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    meters = tuple(meters)
    bad = [m for m in meters if m not in METER_BY_NUMBER]
    if not meters or bad:
        raise ValueError(f"meters={meters!r} must be a non-empty subset of 3, 4, 6")
    lo, hi = (float(x) for x in tempo_range)
    if not (TEMPO_LIMITS[0] <= lo <= hi <= TEMPO_LIMITS[1]):
        raise ValueError(f"tempo_range={tempo_range!r} must be LO,HI within {TEMPO_LIMITS} BPM")
    dlo, dhi = (float(x) for x in duration_range)
    if not 5.0 <= dlo <= dhi:
        raise ValueError(f"duration_range={duration_range!r} must be LO,HI seconds with 5 <= LO <= HI")
    meter = METER_BY_NUMBER[int(rng.choice(meters))]
    if meter == "6/8" and lo <= 140.0:
        hi = min(hi, 140.0)
    tempo = float(np.round(rng.uniform(lo, hi), 1))
    bpb = METERS[meter][0]
    bar_s = bpb * 60.0 / tempo
    # sections of >= MIN_SECTION_S (2, 4, 8 or 16 bars; one length per label keeps repeats aligned)
    base = next((n for n in (2, 4, 8, 16) if n * bar_s >= MIN_SECTION_S), 16)
    fits = [f for f in FORMS if len(f) * base * bar_s <= dhi] or [min(FORMS, key=len)]
    form = fits[int(rng.integers(len(fits)))]
    while len(form) * base * bar_s < dlo and base < 16:
        base *= 2
    bars = {lab: base for lab in LABELS}
    if base >= 4 and base // 2 * bar_s >= 4.0 and rng.random() < 0.5:
        bars["intro"] = bars["outro"] = base // 2
    bridge_style = str(rng.choice(STYLES["bridge"]))
    sections = []
    tempo_now = tempo
    for i, lab in enumerate(form):
        nxt = form[i + 1] if i + 1 < len(form) else None
        build = 0
        if nxt == "chorus" and bars[lab] >= 4 and rng.random() < build_prob:
            build = 1 if bars[lab] <= 4 or rng.random() < 0.5 else 2
        kw: dict = {}
        if lab == "bridge" and rng.random() < step_prob:
            kw["tempo"] = _tempo_move(tempo_now, float(rng.choice([0.85, 1.15])), lo, hi)
            tempo_now = kw["tempo"]
        if lab in ("outro", "bridge") and rng.random() < ramp_prob:
            kw["tempo_end"] = _tempo_move(tempo_now, 0.85 if lab == "outro" else 1.08, lo, hi)
            tempo_now = kw["tempo_end"]
        sections.append(Section(lab, bars[lab], style=bridge_style if lab == "bridge" else "normal",
                                build_up_bars=build, **kw))
    swing = float(np.round(rng.choice([1 / 3, 0.2]), 3)) if meter != "6/8" and rng.random() < swing_prob else 0.0
    programs = {role: int(rng.choice(opts)) for role, opts in PROGRAMS.items()}
    return SongPlan(name=name, tempo=tempo, meter=meter, sections=tuple(sections), swing=swing,
                    key=int(rng.integers(52, 65)), minor=bool(rng.random() < 0.4), programs=programs)

