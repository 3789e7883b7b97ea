"""The clock's schedule: beat events in, timed cues (start, ticks, beats, bars, tempo, stop) out.

Pure: no Redis, no ports, no threads; every call takes the wall time (Unix seconds) it runs at,
so a test drives it on a clock of its own.

Model. A :class:`Plan` maps the clock's beat position (a float; integer = a beat) to the wall
time the beat is *heard*. Every tick is at an absolute position, ``start + k / ppqn``, and its
time is read off the plan, never added up from intervals: rounding never accumulates into drift.

- Lock: the transport starts after ``lock_beats`` consecutive steady beats (the tracker's
  indices consecutive, each interval within 15 % of its period), at the next predicted downbeat
  that can still be sent in time; the clock's beat numbers are the tracker's at lock.
- Following: each beat event carries the tracker's prediction of the next beat
  (``next_beat_system_time``). It is matched *by time* to the clock beat nearest to it (the
  tracker's indices fall behind the grid when it skips a beat). A phase error up to
  ``resync_beats`` of a beat is caught up over ``catch_up_beats`` beats by a bounded change of the
  period (at most ``max_adjust``), then the plan runs on at the smoothed tempo; a larger error
  (a tracker correction) makes the plan jump to the prediction.
- Tempo: an exponential average of the tracker's tempo over ``tempo_smoothing_beats`` beats;
  a change of more than 8 % that holds for two beats is taken at once (a real tempo change).
- Stop: no beat for ``silence_timeout_s`` (the music stopped) or the source's stream ended;
  the next lock starts the transport again.

``lead_s`` (the output latency) moves every send time earlier: a cue is *sent* at
``due - lead_s`` so it is *heard* at ``due``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from beatbus.schemas import BeatEvent

__all__ = ["Plan", "Cue", "ClockScheduler", "PPQN", "MIN_BPM", "MAX_BPM"]

PPQN = 24                     # MIDI clock: 24 pulses per quarter note (one beat)
MIN_BPM, MAX_BPM = 20.0, 400.0
STEADY = 0.15                 # a beat interval within 15 % of the period counts as steady
TEMPO_JUMP = 0.08             # a tempo this far off for two beats is a tempo change, taken at once
STALE_S = 5.0                 # a beat event older than this is of no use to a clock
START_MARGIN_S = 0.002        # the first tick must still be ahead by this when the transport is armed


@dataclass(frozen=True, slots=True)
class Plan:
    """Beat position <-> wall time: from ``(pos0, t0)`` at ``period`` s/beat up to beat ``pos1``,
    then at ``after`` s/beat (a phase correction that ends on a beat, then the tempo)."""

    pos0: float
    t0: float
    period: float
    pos1: float
    after: float

    @classmethod
    def steady(cls, pos: float, t: float, period: float) -> Plan:
        return cls(pos, t, period, pos, period)

    def time(self, pos: float) -> float:
        """Wall time of beat position ``pos``."""
        if pos <= self.pos1:
            return self.t0 + (pos - self.pos0) * self.period
        return self.t0 + (self.pos1 - self.pos0) * self.period + (pos - self.pos1) * self.after

    def pos(self, t: float) -> float:
        """Beat position at wall time ``t``."""
        t1 = self.time(self.pos1)
        if t <= t1:
            return self.pos0 + (t - self.t0) / self.period
        return self.pos1 + (t - t1) / self.after


@dataclass(frozen=True, slots=True)
class Cue:
    """Something the outputs send: ``kind`` at wall time ``due`` (when it is heard).

    ``kind``: ``start``, ``tick`` (``tick`` = pulses since the start), ``beat`` (``beat``,
    ``beat_in_bar``, ``bar``, ``meter``, ``bpm``, ``confidence``), ``bar`` (``bar``, ``meter``,
    ``song_position`` = 16th notes since the start, counted in whole bars), ``tempo`` (``bpm``),
    ``stop``.
    """

    due: float
    kind: str
    tick: int = 0
    beat: int = 0
    beat_in_bar: int = 1
    bar: int = 0
    meter: int = 4
    bpm: float = 0.0
    confidence: float = 0.0
    song_position: int = 0


@dataclass(frozen=True, slots=True)
class _Bars:
    """Bar position of clock beat ``beat``: ``beat_in_bar`` of bar ``bar`` in a bar of ``meter``."""

    beat: int
    beat_in_bar: int
    bar: int
    meter: int

    def at(self, b: int) -> tuple[int, int]:
        k = self.beat_in_bar - 1 + (b - self.beat)
        return k % self.meter + 1, self.bar + k // self.meter


def _finite(*xs) -> bool:
    return all(x is None or math.isfinite(x) for x in xs)


@dataclass
class ClockScheduler:
    """Beat events -> :class:`Cue` s on an absolute schedule (see the module docstring).

    Parameters
    ----------
    lead_s : float
        Output latency: cues are sent this much before they are to be heard.
    lock_beats : int
        Consecutive steady beats before the transport starts.
    catch_up_beats : int
        Beats over which a phase error is caught up (1: by the next beat).
    tempo_smoothing_beats : float
        Beats of the exponential average of the tempo (1: the tracker's tempo as is).
    resync_beats : float
        A phase error larger than this (in beats) jumps instead of catching up.
    max_adjust : float
        Largest change of the period while catching up (0.15 = +/-15 %).
    silence_timeout_s : float
        No beat for this long: the transport stops.
    tempo_step_bpm : float
        A ``tempo`` cue goes out when the tempo moved this much since the last one.
    ppqn : int
        Ticks per beat.
    """

    lead_s: float = 0.0
    lock_beats: int = 3
    catch_up_beats: int = 2
    tempo_smoothing_beats: float = 4.0
    resync_beats: float = 0.25
    max_adjust: float = 0.15
    silence_timeout_s: float = 3.0
    tempo_step_bpm: float = 1.0
    ppqn: int = PPQN
    plan: Plan | None = None
    tempo_period: float = 0.5
    start_pos: int | None = None          # the clock beat the transport starts (started) on
    running: bool = False
    tick: int = 0                         # the next tick to send, counted from the start
    confidence: float = 0.0
    stats: dict = field(default_factory=lambda: {"beats": 0, "ignored": 0, "locks": 0, "resyncs": 0,
                                                 "tempo_changes": 0, "stops": 0})
    _bars: _Bars | None = None
    _last: BeatEvent | None = None
    _last_time: float | None = None
    _run: int = 0
    _tempo_jumps: int = 0
    _song16: int = 0                      # 16ths since the start, whole bars
    _bar_no: int = 0                      # the clock's own bar count: the tracker's at the start, then +1 a bar
    _bar_meter: int = 4                   # meter of the bar in progress
    _tempo_sent: float | None = None
    _pending: list[Cue] = field(default_factory=list)

    # -- input -----------------------------------------------------------------------------
    @property
    def bpm(self) -> float:
        """The smoothed tempo (what ``tempo`` and ``beat`` cues say)."""
        return 60.0 / self.tempo_period

    def on_beat(self, ev: BeatEvent, now: float) -> bool:
        """Take a beat event at wall time ``now``; False when it was of no use (counted in ``stats``)."""
        if not _finite(ev.bpm, ev.system_time, ev.next_beat_system_time, ev.confidence) \
                or not MIN_BPM <= ev.bpm <= MAX_BPM:
            return self._ignore()
        if self._last_time is not None and ev.system_time < self._last_time - 1e-6:
            return self._ignore()                  # out of order
        if now - ev.system_time > STALE_S:
            return self._ignore()
        self.stats["beats"] += 1
        period = 60.0 / ev.bpm
        nxt = ev.next_beat_system_time
        if not 0.25 * period < nxt - ev.system_time < 2.5 * period:
            nxt = ev.system_time + period          # a prediction that contradicts the tempo
        last = self._last
        steady = last is not None and ev.beat == last.beat + 1 \
            and abs(ev.system_time - last.system_time - period) < STEADY * period
        self._run = self._run + 1 if steady else 1
        self._last, self._last_time, self.confidence = ev, ev.system_time, ev.confidence
        meter = max(1, ev.meter)
        k = (ev.beat_in_bar - 1) % meter + 1       # the next beat's place in the bar
        nxt_bib, nxt_bar = k % meter + 1, ev.bar + (1 if k == meter else 0)
        if self.plan is None:
            if self._run < self.lock_beats:
                return True
            self.tempo_period = period
            self.plan = Plan.steady(ev.beat + 1, nxt, period)
            self._bars = _Bars(ev.beat + 1, nxt_bib, nxt_bar, meter)
            self.stats["locks"] += 1
            self._arm(now)
            return True
        self._follow_tempo(period)
        t0 = now + self.lead_s                      # cues heard before t0 are sent already: keep them
        p0 = self.plan.pos(t0)
        j = round(self.plan.pos(nxt))
        err = nxt - self.plan.time(j)
        if abs(err) > self.resync_beats * self.tempo_period:
            self.plan = Plan.steady(j, nxt, self.tempo_period)
            self.stats["resyncs"] += 1
        else:
            m = j + max(1, self.catch_up_beats) - 1
            while m - p0 < 0.5:
                m += 1
            t_m = nxt + (m - j) * self.tempo_period
            p = (t_m - t0) / (m - p0)
            p = min(max(p, self.tempo_period * (1 - self.max_adjust)), self.tempo_period * (1 + self.max_adjust))
            self.plan = Plan(p0, t0, p, float(m), self.tempo_period)
        self._bars = _Bars(j, nxt_bib, nxt_bar, meter)
        if not self.running:
            self._arm(now)                          # the first downbeat may have moved
        return True

    def on_end(self, now: float) -> None:
        """The source's stream ended: stop now."""
        self._halt(now)

    def _ignore(self) -> bool:
        self.stats["ignored"] += 1
        return False

    def _follow_tempo(self, period: float) -> None:
        if abs(period - self.tempo_period) > TEMPO_JUMP * self.tempo_period:
            self._tempo_jumps += 1
            if self._tempo_jumps >= 2:
                self.tempo_period, self._tempo_jumps = period, 0
                self.stats["tempo_changes"] += 1
            return
        self._tempo_jumps = 0
        self.tempo_period += (period - self.tempo_period) / max(1.0, self.tempo_smoothing_beats)

    def _arm(self, now: float) -> None:
        """Choose the first downbeat whose first tick can still be sent in time."""
        assert self.plan is not None and self._bars is not None
        b = math.ceil(self.plan.pos(now + self.lead_s + START_MARGIN_S))
        while self._bars.at(b)[0] != 1:
            b += 1
        self.start_pos, self.tick = b, 0

    def _halt(self, due: float) -> None:
        if self.running:
            self._pending.append(Cue(due, "stop", tick=self.tick))
            self.stats["stops"] += 1
        self.plan = self._bars = self._last = None
        self.start_pos, self.running, self.tick, self._run = None, False, 0, 0
        self._tempo_sent = None

    # -- output ----------------------------------------------------------------------------
    def _silence_at(self) -> float | None:
        if self.plan is None or self._last_time is None:
            return None
        return self._last_time + self.silence_timeout_s

    def next_send(self) -> float | None:
        """When the next cue is to be sent (wall s); None while nothing is scheduled."""
        if self._pending:
            return min(c.due for c in self._pending)
        times = []
        if self.plan is not None and self.start_pos is not None:
            times.append(self.plan.time(self.start_pos + self.tick / self.ppqn) - self.lead_s)
        silence = self._silence_at()
        if silence is not None:
            times.append(silence)
        return min(times) if times else None

    def due(self, now: float) -> list[Cue]:
        """Every cue whose send time is at or before ``now``, in order (each is returned once)."""
        out, self._pending = self._pending, []
        silence = self._silence_at()
        while self.plan is not None and self.start_pos is not None:
            q = self.start_pos + self.tick / self.ppqn
            due = self.plan.time(q)
            if due - self.lead_s > now or (silence is not None and due - self.lead_s >= silence):
                break
            out += self._cues_at(due)
            self.tick += 1
        if silence is not None and now >= silence:
            self._halt(silence)
            out, self._pending = out + self._pending, []
        return out

    def _cues_at(self, due: float) -> list[Cue]:
        """The cues of tick ``self.tick`` (heard at ``due``)."""
        if self.tick % self.ppqn:
            return [Cue(due, "tick", tick=self.tick)]
        assert self.start_pos is not None and self._bars is not None
        b = self.start_pos + self.tick // self.ppqn
        bib, bar = self._bars.at(b)
        meter, bpm = self._bars.meter, self.bpm
        cues = []
        if self.tick == 0:
            self.running, self._song16, self._bar_meter, self._bar_no = True, 0, meter, bar
            cues.append(Cue(due, "start"))
        elif bib == 1:
            self._song16 += 4 * self._bar_meter     # whole bars: a moved downbeat realigns the receiver
            self._bar_meter = meter
            self._bar_no += 1                       # never skipped or repeated when the tracker renumbers
        bar = self._bar_no
        if bib == 1:
            cues.append(Cue(due, "bar", beat=b, bar=bar, meter=meter, song_position=self._song16))
        if self._tempo_sent is None or abs(bpm - self._tempo_sent) >= self.tempo_step_bpm:
            self._tempo_sent = bpm
            cues.append(Cue(due, "tempo", bpm=bpm))
        cues.append(Cue(due, "beat", beat=b, beat_in_bar=bib, bar=bar, meter=meter, bpm=bpm,
                        confidence=self.confidence))
        cues.append(Cue(due, "tick", tick=self.tick))
        return cues
