"""Adaptive quality under load: :class:`QualityGovernor` picks each source's beat backend.

A processor that owns more sources than its CPU can carry falls behind on all of them. The
governor trades quality for cost instead, one source and one step at a time: a source's *level*
is 0 for the configured backend, then the cheaper backends of :data:`LADDER` (``small``, then
``dsp``; those that cost as much as the configured one or more are skipped, so a configured
``dsp`` never degrades).

The rule (``high`` is the ``adaptive_high_load`` setting, default 0.85):

- *Load* is busy seconds per second of stream time processed, summed over the rounds of the last
  ``window`` seconds (1.0: the processor is busy all the time to keep up). The service counts a
  round's wall time less its waits for the broker: on a machine too busy to give it the CPU it
  needs, the time it waits for a core is load too.
- *Overloaded*: load > ``high``, or the largest lag of a source (now minus the wall time of its
  newest audio processed) exceeds ``max_lag`` and has grown by more than 5 % of the elapsed
  time over the last ``degrade_hold`` seconds (falling behind; a constant lag - clocks of another
  host - or a shrinking one - a catch-up after a takeover - is not overload).
- *Degrade* one source one level when overloaded has held for ``degrade_hold`` seconds (2) and
  ``degrade_cooldown`` seconds (2) have passed since the last change.
- *Restore* one source one level when the projected load after restoring - the load scaled by the
  summed per-level costs of :data:`COSTS` after / before - is below ``low`` = 0.7 x ``high``,
  held for ``restore_hold`` seconds (10), at least ``restore_cooldown`` seconds (5) after the last
  change.
- Order: sources are degraded newest-acquired first, each down to the cheapest level before the
  next newest one; restoring undoes this in reverse (the oldest degraded source first). So the
  degraded sources are always the newest ones, at most one of them between levels.
- Each change clears the load window and both hold timers: the next decision is taken on at least
  a hold's worth of rounds at the new levels. With the projection, ``low`` < ``high`` and the
  holds this keeps a load near either threshold from flapping.

The governor is pure (no Redis, no clock of its own): the service feeds it after each round and
applies the decisions it returns.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["QualityGovernor", "Decision", "LADDER", "COSTS", "levels_for", "RESTORE_RATIO"]

LADDER = ("small", "dsp")            # cheaper backends, most expensive first
# CPU ms per 20 ms frame per stream, 30 streams batched (README, Adaptive quality): the relative
# costs used to project a restore; a backend not listed counts as the most expensive one
COSTS = {"beatnet": 0.144, "small": 0.124, "dsp": 0.078}
RESTORE_RATIO = 0.7                  # restore below this share of the degrade threshold


def levels_for(backend: str) -> tuple[str, ...]:
    """The backends of levels 0, 1, ... for a configured ``backend``."""
    cost = COSTS.get(backend, float("inf"))
    return (backend, *(b for b in LADDER if b != backend and COSTS[b] < cost))


@dataclass(frozen=True)
class Decision:
    """Move ``source`` to ``level`` (its ``backend``); ``load`` is the smoothed load that decided it."""

    source: str
    level: int
    backend: str
    load: float


class QualityGovernor:
    """Per-source quality levels from the processor's load (rule: the module docstring).

    Parameters
    ----------
    backend : str
        The configured backend (level 0).
    high : float
        Degrade threshold of the load; restores need a projected load < ``RESTORE_RATIO * high``.
    max_lag : float
        Lag (s) above which a growing lag counts as overload.
    window : float
        Seconds of rounds the load is averaged over.
    degrade_hold, degrade_cooldown, restore_hold, restore_cooldown : float
        Seconds (see the rule).
    levels : tuple of str, optional
        The backends of levels 0, 1, ...; default :func:`levels_for` ``(backend)``.
    """

    def __init__(self, backend: str, *, high: float = 0.85, max_lag: float = 0.5, window: float = 3.0,
                 degrade_hold: float = 2.0, degrade_cooldown: float = 2.0,
                 restore_hold: float = 10.0, restore_cooldown: float = 5.0,
                 levels: tuple[str, ...] | None = None) -> None:
        if high <= 0:
            raise ValueError(f"high={high!r} must be > 0")
        self.levels = tuple(levels) if levels else levels_for(backend)
        self.high, self.low = high, RESTORE_RATIO * high
        self.max_lag, self.window = max_lag, window
        self.degrade_hold, self.degrade_cooldown = degrade_hold, degrade_cooldown
        self.restore_hold, self.restore_cooldown = restore_hold, restore_cooldown
        self._level: dict[str, int] = {}          # insertion order = acquisition order
        self._rounds: deque[tuple[float, float, float]] = deque()   # (t, busy s, audio s)
        self._lags: deque[tuple[float, float]] = deque()            # (t, max lag s)
        self._over_since: float | None = None
        self._fits_since: float | None = None
        self._changed_at = float("-inf")
        self.load = 0.0

    # -- sources ------------------------------------------------------------------------
    def add(self, source: str) -> None:
        """A newly acquired source, at level 0 (the newest: degraded first)."""
        self._level.pop(source, None)
        self._level[source] = 0

    def remove(self, source: str) -> None:
        self._level.pop(source, None)

    def level(self, source: str) -> int:
        return self._level.get(source, 0)

    def backend(self, source: str) -> str:
        return self.levels[self.level(source)]

    # -- decisions ----------------------------------------------------------------------
    def observe(self, now: float, busy: float, audio: float, lags: dict[str, float] | None = None) -> list[Decision]:
        """One round: ``busy`` seconds for ``audio`` seconds of stream time, the lag of each
        source processed; returns the level changes to apply (at most one)."""
        self._rounds.append((now, busy, audio))
        while self._rounds and self._rounds[0][0] < now - self.window:
            self._rounds.popleft()
        spent = sum(r[2] for r in self._rounds)
        self.load = sum(r[1] for r in self._rounds) / spent if spent > 0 else 0.0
        if lags:
            self._lags.append((now, max(lags.values())))
        while len(self._lags) > 1 and self._lags[1][0] <= now - self.degrade_hold:
            self._lags.popleft()              # keep one sample at least degrade_hold old
        if len(self.levels) == 1 or not self._level:
            return []

        if self.load > self.high or self._falling_behind(now):
            self._fits_since = None
            self._over_since = now if self._over_since is None else self._over_since
            if (now - self._over_since >= self.degrade_hold and now - self._changed_at >= self.degrade_cooldown):
                return self._step(now, +1)
            return []
        self._over_since = None
        if self._restorable() is None or self._projected() >= self.low:
            self._fits_since = None
            return []
        self._fits_since = now if self._fits_since is None else self._fits_since
        if now - self._fits_since >= self.restore_hold and now - self._changed_at >= self.restore_cooldown:
            return self._step(now, -1)
        return []

    def _falling_behind(self, now: float) -> bool:
        if not self._lags or self._lags[-1][1] <= self.max_lag:
            return False
        t0, lag0 = self._lags[0]
        return now - t0 >= self.degrade_hold and self._lags[-1][1] - lag0 > 0.05 * (now - t0)

    def _degradable(self) -> str | None:
        bottom = len(self.levels) - 1
        return next((s for s in reversed(self._level) if self._level[s] < bottom), None)

    def _restorable(self) -> str | None:
        return next((s for s in self._level if self._level[s] > 0), None)

    def _cost(self, level: int) -> float:
        return COSTS.get(self.levels[level], max(COSTS.values()))

    def _projected(self) -> float:
        """The load after restoring the next source one level."""
        source = self._restorable()
        if source is None:
            return self.load
        now_cost = sum(self._cost(lv) for lv in self._level.values())
        lv = self._level[source]
        return self.load * (now_cost - self._cost(lv) + self._cost(lv - 1)) / now_cost

    def _step(self, now: float, delta: int) -> list[Decision]:
        source = self._degradable() if delta > 0 else self._restorable()
        if source is None:
            return []
        self._level[source] += delta
        self._changed_at = now
        self._over_since = self._fits_since = None
        self._rounds.clear()
        self._lags.clear()
        level = self._level[source]
        return [Decision(source, level, self.levels[level], self.load)]
