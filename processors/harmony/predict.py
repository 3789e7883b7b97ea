"""Harmonic rhythm: where on the beat grid chords change, and when the next change comes.

From the beat indices of the last :data:`HarmonicRhythm.MEMORY` chord changes (the caller passes
only changes that held for two beats or more: a flurry of wrong chords says nothing about the
rhythm) it finds the *change grid*: a period ``P`` (2-16 beats) and phase such that many of the
changes fall on ``phase + k * P`` (one chord per bar in 4/4: ``P`` = 4), the one that maximises
the share of changes on it minus ``GRID_PENALTY / P`` (all changes are on the grid of period 1,
half of them on a grid twice too long: the penalty picks the longest period that explains most of
them), with at least :data:`GRID_SHARE` of them on it. Beat indices count beats since the stream
began, so the grid does not depend on the beat tracker's bar positions (a tracker whose downbeat
is a beat off, or that hesitates between 2 and 4 beats per bar, still gives the right grid).

- :meth:`HarmonicRhythm.p_change`: the probability of a change at a beat, for the chord model's
  transition (:mod:`.chords`): the share of grid points that carried a change on the grid, the
  share of other beats that did elsewhere. Until a grid is known: changes on downbeats (the
  tracker's bar positions), ``DOWNBEAT_P`` there and ``OFFBEAT_P`` elsewhere.
- :meth:`HarmonicRhythm.predict`: beats from a change to the next expected one, the next grid
  point (``P`` from a change on the grid); until a grid is known, the next downbeat.
"""
from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["HarmonicRhythm", "GRID_SHARE", "GRID_PENALTY", "DOWNBEAT_P", "OFFBEAT_P"]

GRID_SHARE = 0.5            # share of changes a grid must explain
GRID_PENALTY = 1.2
DOWNBEAT_P = 0.5
OFFBEAT_P = 0.04
MAX_PERIOD = 16
MAX_METER = 12


class HarmonicRhythm:
    """The change grid of the chord changes heard so far, and predictions from it."""

    MEMORY = 16
    MIN_CHANGES = 3

    def __init__(self):
        self.changes: deque[int] = deque(maxlen=self.MEMORY)       # beat indices
        self._grid: tuple[int, int, float, float] | None = None

    def observe(self, beat: int, beat_in_bar: int | None = None) -> None:
        """A chord change at beat index ``beat`` (``beat_in_bar`` is not needed: the grid is in beat indices)."""
        if self.changes and beat <= self.changes[-1]:
            return
        self.changes.append(int(beat))
        self._grid = self._find_grid()

    def _find_grid(self) -> tuple[int, int, float, float] | None:
        """``(period, phase, p_on, p_off)`` of the best grid (see the module docstring), or None."""
        if len(self.changes) < self.MIN_CHANGES:
            return None
        g = np.asarray(self.changes)
        best, best_score = None, -np.inf
        for period in range(2, MAX_PERIOD + 1):
            counts = np.bincount(g % period, minlength=period)
            phase = int(np.argmax(counts))
            share = counts[phase] / len(g)
            score = share - GRID_PENALTY / period
            if share >= GRID_SHARE and score > best_score:
                best, best_score = (period, phase, int(counts[phase])), score
        if best is None:
            return None
        period, phase, on = best
        span = int(g[-1] - g[0]) + 1
        points = max(span // period, 1)
        p_on = on / points
        p_off = (len(g) - on) / max(span - points, 1)
        return period, phase, float(np.clip(p_on, 0.1, 0.8)), float(np.clip(p_off, 0.01, 0.1))

    @property
    def grid(self) -> tuple[int, int] | None:
        """``(period, phase)`` in beat indices, or None while unknown."""
        return None if self._grid is None else self._grid[:2]

    def p_change(self, beat: int | None, beat_in_bar: int | None = None, meter: int | None = None) -> float:
        """Probability of a change at beat index ``beat`` (position ``beat_in_bar`` of ``meter``)."""
        if self._grid is not None and beat is not None:
            period, phase, p_on, p_off = self._grid
            return p_on if beat % period == phase else p_off
        if beat_in_bar and meter and 1 <= beat_in_bar <= meter <= MAX_METER:
            return DOWNBEAT_P if beat_in_bar == 1 else OFFBEAT_P
        return 0.15

    def predict(self, beat: int, beat_in_bar: int | None = None, meter: int | None = None) -> int | None:
        """Beats from a change at beat index ``beat`` to the next one expected (>= 1), or None (no grid, no bars)."""
        if self._grid is not None:
            period, phase = self._grid[:2]
            return (phase - beat) % period or period
        if beat_in_bar and meter and 1 <= beat_in_bar <= meter <= MAX_METER:
            return (1 - beat_in_bar) % meter or meter          # the next downbeat
        return None
