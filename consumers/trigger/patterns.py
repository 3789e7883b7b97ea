"""Which error pattern a section plays, and on which beats each pattern fires, as data.

A *pattern* is an ``error_type`` the error generator knows (``minimal``, ``basic`` ...).
Each section label maps to one pattern, and each pattern has a :class:`Rule`:

=============  ===========================================  ==============================
pattern        default rule                                 as data
=============  ===========================================  ==============================
minimal        downbeats of every other bar                 ``on="downbeat", every=2``
basic          every beat                                   ``on="beat"``
business       every beat plus an accent on downbeats       ``on="beat", accent=1``
chaotic        bursts of 2-5 triggers per beat              ``burst_min=2, burst_max=5``
philosophical  every fourth downbeat                        ``on="downbeat", every=4``
=============  ===========================================  ==============================

Both maps are configurable (see :mod:`consumers.trigger.config`). Firing is a pure function
of the beat and a seed, so a redelivered stream entry yields the same triggers (same burst
size, same idempotency keys) and deduplication works.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from beatbus.errors import ConfigError
from beatbus.schemas import BeatEvent

__all__ = ["Rule", "Firing", "PatternBook", "DEFAULT_PATTERNS", "DEFAULT_SECTIONS", "SECTION_LABELS"]

M = msgspec.Meta
SECTION_LABELS = ("intro", "verse", "chorus", "bridge", "outro", "unknown")


class Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """When a pattern fires.

    Attributes
    ----------
    on : {"beat", "downbeat"}
        Eligible beats: every beat, or downbeats only.
    every : int
        Fire on every ``every``-th eligible beat: counted by beat index for ``on="beat"``,
        by bar index for ``on="downbeat"`` (1 = all of them).
    burst_min, burst_max : int
        Triggers per firing, drawn uniformly in ``[burst_min, burst_max]`` (seeded per beat).
    accent : int
        Extra triggers added on downbeats.
    spread : float
        Fraction of the beat period over which a firing's triggers are spread (0 = all at once).
    """

    on: Literal["beat", "downbeat"] = "beat"
    every: Annotated[int, M(ge=1, le=64, description="every Nth eligible beat (bars for downbeats)")] = 1
    burst_min: Annotated[int, M(ge=1, le=16, description="fewest triggers per firing")] = 1
    burst_max: Annotated[int, M(ge=1, le=16, description="most triggers per firing")] = 1
    accent: Annotated[int, M(ge=0, le=16, description="extra triggers on downbeats")] = 0
    spread: Annotated[float, M(ge=0.0, le=1.0, description="fraction of a beat a burst spans")] = 0.0

    def __post_init__(self) -> None:
        if self.burst_max < self.burst_min:
            raise ValueError(f"burst_max={self.burst_max} must be >= burst_min={self.burst_min}")


DEFAULT_PATTERNS: dict[str, Rule] = {
    "minimal": Rule(on="downbeat", every=2),
    "basic": Rule(on="beat"),
    "business": Rule(on="beat", accent=1),
    "chaotic": Rule(on="beat", burst_min=2, burst_max=5, spread=0.5),
    "philosophical": Rule(on="downbeat", every=4),
}
DEFAULT_SECTIONS: dict[str, str] = {
    "intro": "minimal", "verse": "basic", "chorus": "business", "bridge": "chaotic",
    "outro": "philosophical", "unknown": "basic",
}


@dataclass(frozen=True, slots=True)
class Firing:
    """One trigger a beat causes: its index within the beat and its delay after the beat."""

    n: int
    pattern: str
    delay: float


class PatternBook:
    """The section -> pattern map and the pattern -> rule map, checked together.

    Parameters
    ----------
    patterns : dict of str to Rule
    sections : dict of str to str
        Section label -> pattern name; labels missing here use ``sections["unknown"]``.

    Raises
    ------
    ConfigError
        A section maps to an undefined pattern, a label is not a section label, or a
        pattern name is not snake_case.
    """

    def __init__(self, patterns: dict[str, Rule] | None = None, sections: dict[str, str] | None = None):
        self.patterns = dict(DEFAULT_PATTERNS if patterns is None else patterns)
        self.sections = {**DEFAULT_SECTIONS, **(sections or {})}
        for name in self.patterns:
            if not name.replace("_", "a").isalnum() or not name.islower() or not 1 <= len(name) <= 64:
                raise ConfigError(f"trigger pattern name {name!r} must be snake_case (1-64 chars)")
        for label, pattern in self.sections.items():
            if label not in SECTION_LABELS:
                raise ConfigError(f"trigger sections.{label}: {label!r} is not one of {SECTION_LABELS}")
            if pattern not in self.patterns:
                raise ConfigError(f"trigger sections.{label} = {pattern!r} names no pattern "
                                  f"(defined: {', '.join(sorted(self.patterns))})")

    def pattern_for(self, section: str) -> str:
        """The pattern a section label plays (``unknown``'s for labels not mapped)."""
        return self.sections.get(section, self.sections["unknown"])

    def fire(self, beat: BeatEvent, section: str, *, seed: str) -> list[Firing]:
        """The triggers ``beat`` causes while ``section`` plays.

        Parameters
        ----------
        seed : str
            Stable per beat (e.g. ``source:entry_id``): it picks the burst size, so the
            same beat always fires the same triggers.

        Returns
        -------
        list of Firing
            Empty when the rule does not fire on this beat.
        """
        pattern = self.pattern_for(section)
        rule = self.patterns[pattern]
        if rule.on == "downbeat":
            if not beat.is_downbeat or beat.bar % rule.every:
                return []
        elif beat.beat % rule.every:
            return []
        count = rule.burst_min
        if rule.burst_max > rule.burst_min:
            # random.Random(str) seeds from a SHA-512 of the string: stable across processes.
            count = random.Random(seed).randint(rule.burst_min, rule.burst_max)
        if beat.is_downbeat:
            count += rule.accent
        period = 60.0 / beat.bpm if beat.bpm > 0 else 0.5
        step = rule.spread * period / count
        return [Firing(n=i, pattern=pattern, delay=i * step) for i in range(count)]
