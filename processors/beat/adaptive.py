"""The beat processor's quality ladder: its configured backend, then cheaper backends.

Adaptive quality itself (the load, the rule, the order) is :class:`beatbus.quality.QualityGovernor`,
shared by every audio stage; this module says what the beat processor's levels are and what they
cost. Level 0 is the configured backend, then those of :data:`LADDER` (``small``, then ``dsp``)
that cost less than it, so a configured ``dsp`` never degrades.
"""
from __future__ import annotations

__all__ = ["LADDER", "COSTS", "levels_for", "costs_for"]

LADDER = ("small", "dsp")            # cheaper backends, most expensive first
# CPU ms per 20 ms frame per stream, 30 streams batched (README, Adaptive quality): the relative
# costs used to project a restore; a backend not listed counts as the most expensive one
COSTS = {"beatnet": 0.173, "small": 0.087, "dsp": 0.061}


def levels_for(backend: str) -> tuple[str, ...]:
    """The backends of levels 0, 1, ... for a configured ``backend``."""
    cost = COSTS.get(backend, float("inf"))
    return (backend, *(b for b in LADDER if b != backend and COSTS[b] < cost))


def costs_for(levels: tuple[str, ...]) -> tuple[float, ...]:
    """The relative cost of each level's backend."""
    return tuple(COSTS.get(b, max(COSTS.values())) for b in levels)
