"""Adaptive quality under load: :class:`QualityGovernor` picks each source's quality level.

A stage that owns more sources than its CPU can carry falls behind on all of them. The governor
trades quality for cost instead, one source and one step at a time. Each stage has a *ladder*:
level 0 is full quality, each next level is cheaper (the beat processor: its configured backend,
then ``small``, ``dsp`` and ``dsp-4/4``; intensity: spectral features at half rate; structure: half rate,
then no analysis at all). The governor knows the levels' names and relative costs, nothing else.

The rule (``high`` is the ``adaptive_high_load`` setting, default 0.85):

- *Load* is busy seconds per second of stream time processed, summed over the rounds of the last
  ``window`` seconds (1.0: the stage is busy all the time to keep up). The service counts a
  round's wall time less its waits for the broker: on a machine too busy to give it the CPU it
  needs, the time it waits for a core is load too.
- *Excess lag* is how much later than usual the stage gets to its audio: per source, the lag (now
  minus the wall time of its newest audio processed) less its own floor (the smallest lag seen,
  creeping up by ``FLOOR_CREEP`` s per s so that a changed clock offset is forgotten), the largest
  over the sources of a round, averaged over ``window``. A stage close to saturation keeps up on
  average but serves each source in longer and longer rounds: its load may sit just under
  ``high`` while its latency doubles. A constant offset (another host's clock) is no excess.
- *Overloaded*: load > ``high``, or, with the load at least ``low`` (below it the stage is idle and
  a lag comes from upstream: a broker outage, a producer catching up), excess lag > ``lag_budget``
  (0.05 s) or the largest lag of a source exceeds ``max_lag`` and has grown by more than 5 % of the
  elapsed time over the last ``degrade_hold`` seconds (falling behind).
- *Degrade* one source one level when overloaded has held for ``degrade_hold`` seconds (2) and
  ``degrade_cooldown`` seconds (2) have passed since the last change. Over the load threshold, as
  many one-level steps at once as bring the load projected with the levels' costs down to
  ``STEP_TARGET`` (0.9) x ``high``, over at most an eighth of the sources, each moved straight to
  its last level (one restart): a stage far over its capacity gets there in a few decisions, not
  one source every 2 s.
- *Restore* one source one level when the projected load after restoring - the load scaled by the
  summed per-level costs after / before - is below ``low`` = 0.7 x ``high`` and the excess lag is
  below half the budget, held for ``restore_hold`` seconds (10), at least ``restore_cooldown``
  seconds (5) after the last change.
- Order: the least recently watched source first (:attr:`QualityGovernor.watched`: when a
  dashboard last followed it; never is oldest), then the newest acquired; each goes down to the
  cheapest level before the next one. Restoring undoes this in reverse: the source being watched
  comes back first.
- Each change clears the load window and both hold timers: the next decision is taken on at least
  a hold's worth of rounds at the new levels. With the projection, ``low`` < ``high`` and the
  holds this keeps a load near either threshold from flapping.

The governor is pure (no Redis, no clock of its own): the service feeds it after each round and
applies the decisions it returns (:class:`beatbus.audio_stage.AudioStreamService`).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FULL", "QualityGovernor", "Decision", "RESTORE_RATIO", "LAG_BUDGET_S", "FLOOR_CREEP", "STEP_TARGET"]

FULL = "full"    # what every stage publishes for its level 0 (the beat stage: its configured backend)

RESTORE_RATIO = 0.7                  # restore below this share of the degrade threshold
LAG_BUDGET_S = 0.05                  # excess lag that counts as overload (the bench's 150 ms p99 less look-ahead)
STEP_TARGET = 0.9                    # a degrade aims the projected load at this share of the threshold
FLOOR_CREEP = 0.002                  # s per s: a source's lag floor forgets a smaller lag this fast (0.12 s a minute)


@dataclass(frozen=True)
class Decision:
    """Move ``source`` to ``level`` (named ``name``); ``load`` is the smoothed load that decided it."""

    source: str
    level: int
    name: str
    load: float


class QualityGovernor:
    """Per-source quality levels from a stage's load (rule: the module docstring).

    Parameters
    ----------
    levels : sequence of str
        Names of levels 0, 1, ... (full quality first).
    costs : sequence of float
        Relative cost of a source at each level (any unit; used to project a restore).
    high : float
        Degrade threshold of the load; restores need a projected load < ``RESTORE_RATIO * high``.
    lag_budget : float
        Excess lag (s) that counts as overload.
    max_lag : float
        Lag (s) above which a growing lag counts as overload.
    window : float
        Seconds of rounds the load and the excess lag are averaged over.
    degrade_hold, degrade_cooldown, restore_hold, restore_cooldown : float
        Seconds (see the rule).
    """

    def __init__(self, levels: Sequence[str], costs: Sequence[float], *, high: float = 0.85,
                 lag_budget: float = LAG_BUDGET_S, max_lag: float = 0.5, window: float = 3.0,
                 degrade_hold: float = 2.0, degrade_cooldown: float = 2.0,
                 restore_hold: float = 10.0, restore_cooldown: float = 5.0) -> None:
        if high <= 0:
            raise ValueError(f"high={high!r} must be > 0")
        if not levels or len(levels) != len(costs) or any(c <= 0 for c in costs):
            raise ValueError(f"levels={levels!r} need one positive cost each (costs={costs!r})")
        self.levels, self.costs = tuple(levels), tuple(float(c) for c in costs)
        self.high, self.low = high, RESTORE_RATIO * high
        self.lag_budget, self.max_lag, self.window = lag_budget, max_lag, window
        self.degrade_hold, self.degrade_cooldown = degrade_hold, degrade_cooldown
        self.restore_hold, self.restore_cooldown = restore_hold, restore_cooldown
        self.watched: dict[str, float] = {}       # source -> when a dashboard last followed it (unix s)
        self._level: dict[str, int] = {}          # insertion order = acquisition order
        self._rounds: deque[tuple[float, float, float, float]] = deque()   # (t, busy s, audio s, excess lag s)
        self._sums = [0.0, 0.0, 0.0]           # busy, audio and excess lag over _rounds, kept as they change
        self._added = 0
        self._lags: deque[tuple[float, float]] = deque()                   # (t, max lag s)
        self._floor: dict[str, tuple[float, float]] = {}                   # source -> (t, lag floor s)
        self._over_since: float | None = None
        self._fits_since: float | None = None
        self._changed_at = float("-inf")
        self.load = 0.0
        self.excess_lag = 0.0

    # -- sources ------------------------------------------------------------------------
    def add(self, source: str) -> None:
        """A newly acquired source, at level 0 (the newest: degraded first among the unwatched)."""
        self._level.pop(source, None)
        self._floor.pop(source, None)         # a new owner's lag: a catch-up from a checkpoint shrinks
        self._level[source] = 0

    def remove(self, source: str) -> None:
        self._level.pop(source, None)
        self._floor.pop(source, None)

    def level(self, source: str) -> int:
        return self._level.get(source, 0)

    def name(self, source: str) -> str:
        return self.levels[self.level(source)]

    # -- decisions ----------------------------------------------------------------------
    def observe(self, now: float, busy: float, audio: float, lags: dict[str, float] | None = None) -> list[Decision]:
        """One round: ``busy`` seconds for ``audio`` seconds of stream time, the lag of each
        source processed; returns the level changes to apply (at most one)."""
        excess = self._excess(now, lags) if lags else 0.0
        self._window_add(now, busy, audio, excess)
        busy_s, spent, excess_s = self._sums
        self.load = busy_s / spent if spent > 0 else 0.0
        self.excess_lag = excess_s / len(self._rounds)
        if lags:
            self._lags.append((now, max(lags.values())))
        while len(self._lags) > 1 and self._lags[1][0] <= now - self.degrade_hold:
            self._lags.popleft()              # keep one sample at least degrade_hold old
        if len(self.levels) == 1 or not self._level:
            return []

        # a lag counts only while the stage is busy: an idle one's lag comes from upstream (a broker
        # outage, a producer catching up), and a cheaper level would not shorten it
        lagging = self.load >= self.low and (self.excess_lag > self.lag_budget or self._falling_behind(now))
        if self.load > self.high or lagging:
            self._fits_since = None
            self._over_since = now if self._over_since is None else self._over_since
            if (now - self._over_since >= self.degrade_hold and now - self._changed_at >= self.degrade_cooldown):
                return self._step(now, +1)
            return []
        self._over_since = None
        if self._restorable() is None or self._projected() >= self.low or self.excess_lag >= self.lag_budget / 2:
            self._fits_since = None
            return []
        self._fits_since = now if self._fits_since is None else self._fits_since
        if now - self._fits_since >= self.restore_hold and now - self._changed_at >= self.restore_cooldown:
            return self._step(now, -1)
        return []

    def _window_add(self, now: float, busy: float, audio: float, excess: float) -> None:
        """One round into the window, the rounds older than it out. Running sums: a stage with many
        sources has hundreds of rounds in the window, and summing them every round cost 4 % of a core
        (30 sources, py-spy). Summed afresh every 4096 rounds, so no rounding error lasts."""
        rounds, sums = self._rounds, self._sums
        rounds.append((now, busy, audio, excess))
        sums[0] += busy
        sums[1] += audio
        sums[2] += excess
        while rounds[0][0] < now - self.window:
            _, b, a, e = rounds.popleft()
            sums[0] -= b
            sums[1] -= a
            sums[2] -= e
        self._added += 1
        if self._added % 4096 == 0:
            self._sums = [sum(r[i] for r in rounds) for i in (1, 2, 3)]

    def _excess(self, now: float, lags: dict[str, float]) -> float:
        """The largest lag above its source's floor this round (the floor follows the smallest lag)."""
        worst = 0.0
        for source, lag in lags.items():
            t, floor = self._floor.get(source, (now, lag))
            floor = min(lag, floor + FLOOR_CREEP * (now - t))
            self._floor[source] = (now, floor)
            worst = max(worst, lag - floor)
        return worst

    def _falling_behind(self, now: float) -> bool:
        if not self._lags or self._lags[-1][1] <= self.max_lag:
            return False
        t0, lag0 = self._lags[0]
        return now - t0 >= self.degrade_hold and self._lags[-1][1] - lag0 > 0.05 * (now - t0)

    def order(self) -> list[str]:
        """Sources in degrade order: least recently watched first, then newest acquired first."""
        newest_first = list(reversed(self._level))
        return sorted(newest_first, key=lambda s: self.watched.get(s, float("-inf")))

    def _degradable(self) -> str | None:
        bottom = len(self.levels) - 1
        return next((s for s in self.order() if self._level[s] < bottom), None)

    def _restorable(self) -> str | None:
        if not any(self._level.values()):     # the usual case: every source at full quality, no sort
            return None
        return next((s for s in reversed(self.order()) if self._level[s] > 0), None)

    def _projected(self) -> float:
        """The load after restoring the next source one level."""
        source = self._restorable()
        if source is None:
            return self.load
        now_cost = self._total_cost()
        lv = self._level[source]
        return self.load * (now_cost - self.costs[lv] + self.costs[lv - 1]) / now_cost

    def _step(self, now: float, delta: int) -> list[Decision]:
        """One step; a degrade over the load threshold takes as many one-level steps as the projected
        load needs to fall to ``STEP_TARGET`` x ``high``, over at most an eighth of the sources, and a
        source stepped more than once moves straight to its last level (one restart, not one per level)."""
        moved: dict[str, int] = {}
        before = self._total_cost()
        many = delta > 0 and self.load > self.high
        most = max(1, len(self._level) // 8) if many else 1
        while True:
            source = self._degradable() if delta > 0 else self._restorable()
            if source is None or (source not in moved and len(moved) >= most):
                break
            self._level[source] += delta
            moved[source] = self._level[source]
            if not many or self.load * self._total_cost() / before <= STEP_TARGET * self.high:
                break
        out = [Decision(source, level, self.levels[level], self.load) for source, level in moved.items()]
        if out:
            self._changed_at = now
            self._over_since = self._fits_since = None
            self._rounds.clear()
            self._sums = [0.0, 0.0, 0.0]
            self._lags.clear()
        return out

    def _total_cost(self) -> float:
        return sum(self.costs[lv] for lv in self._level.values())
