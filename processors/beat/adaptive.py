"""The beat processor's quality ladder: its configured backend, then cheaper levels.

Adaptive quality itself (the load, the rule, the order) is :class:`beatbus.quality.QualityGovernor`,
shared by every audio stage; this module says what the beat processor's levels are and what they
cost. Level 0 is the configured backend, then those levels of :data:`LADDER` (``small``, ``dsp``,
``dsp-4/4``) that cost less than it. A level is a backend and the tracker settings it runs with:
the last one, ``dsp-4/4``, tracks one meter (4 beats to the bar) instead of 2, 3 and 4: 5 796 tracker
states instead of 13 041.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Level", "LADDER", "COSTS", "levels_for", "costs_for", "level_named"]


@dataclass(frozen=True)
class Level:
    """One step of the ladder: its published name, its backend, the tracker settings it changes."""

    name: str
    backend: str
    tracker: Mapping[str, Any] = field(default_factory=dict)


LADDER = (Level("small", "small"), Level("dsp", "dsp"),
          Level("dsp-4/4", "dsp", {"meters": (4,)}))     # cheaper levels, most expensive first
# CPU ms per 20 ms frame per stream, 30 streams batched (README, Adaptive quality): the relative
# costs used to project a restore; a backend not listed counts as the most expensive one
COSTS = {"beatnet": 0.173, "small": 0.087, "dsp": 0.061, "dsp-4/4": 0.053}
_BY_NAME = {lv.name: lv for lv in LADDER}


def levels_for(backend: str) -> tuple[str, ...]:
    """The names of levels 0, 1, ... for a configured ``backend``."""
    cost = COSTS.get(backend, float("inf"))
    return (backend, *(lv.name for lv in LADDER if lv.name != backend and COSTS[lv.name] < cost))


def costs_for(levels: tuple[str, ...]) -> tuple[float, ...]:
    """The relative cost of each level."""
    return tuple(COSTS.get(name, max(COSTS.values())) for name in levels)


def level_named(name: str) -> Level:
    """The ladder's level called ``name`` (a configured backend not on the ladder: that backend)."""
    return _BY_NAME.get(name) or Level(name, name)
