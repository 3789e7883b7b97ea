"""Live key and chords of one stream: chroma -> beats -> chord HMM, key posterior, next change.

:class:`OnlineHarmony` takes the audio (:meth:`~OnlineHarmony.process`) and the beat processor's
beats (:meth:`~OnlineHarmony.add_beat`, in the same stream clock). Each beat gives two
observations, the mean chroma of its first half (taken as soon as the audio reaches mid-beat,
from the tempo of the beat event, so a change is heard half a beat after it happened rather than a
whole beat and the beat tracker's delay) and of its second half (once the next beat is known).
They feed the chord filter (:class:`~.chords.ChordHMM`; a change is likely at a beat's start as
the harmonic rhythm says, and unlikely mid-beat, ``MID_BEAT_P``), the key posterior
(:class:`~.chords.KeyEstimator`) and the harmonic rhythm (:class:`~.predict.HarmonicRhythm`).
Without beats (none for :data:`OnlineHarmony.BEATLESS_S` of audio, and of wall time when the
caller passes it) it takes an observation every :data:`OnlineHarmony.FALLBACK_S` and predicts no
change. Chroma frames are kept :data:`OnlineHarmony.BUFFER_S`: beats may lag the audio that much.

What is published changes only on a change, with hysteresis, at a bounded rate:

- a chord when the filter's best state differs from the one last published, has a posterior of
  at least ``CHORD_MIN_P`` (``CHORD_MIN_P_HALF`` when decided on a beat's first half) and leads
  that one by ``CHORD_MARGIN``; its time is the start of the
  beat where the best state took over (so a decision one beat late still dates the change right);
  at most ``CHORD_EVENTS_PER_MIN`` per minute of audio (a token bucket with a burst of
  ``CHORD_BURST``): over the bound a change waits, the latest state winning;
- the key once ``KEY_MIN_BEATS`` beats have been heard, then a new key only when it has been the
  most probable for ``KEY_STREAK`` beats in a row with a posterior of at least ``KEY_MIN_P``; at
  most ``KEY_EVENTS_PER_MIN`` per minute (burst 2).

Each chord decision carries the predicted next change (beats ahead, from the harmonic rhythm) as
a time: the change's beat time plus that many beats at the current beat period.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .chords import NO_CHORD, ChordHMM, KeyEstimator, chord_of, key_of
from .features import ChromaFrames, beat_sync
from .predict import HarmonicRhythm

__all__ = ["OnlineHarmony", "ChordUpdate", "KeyUpdate"]


@dataclass(frozen=True)
class ChordUpdate:
    """A chord change (times in the analyser's stream clock, s).

    Attributes
    ----------
    time : float
        When the chord began (the start of the beat where it took over).
    decided_at : float
        Stream time of the audio that decided it.
    root : int or None
        Pitch class 0-11 (C = 0); None for no chord.
    quality : {'maj', 'min', 'N'}
    confidence : float
        The filter's posterior of the chord when decided.
    beat, bar, beat_in_bar : int or None
        The beat where it began, from the beat events (None on the fallback grid).
    next_change : float or None
        When the next change is expected; ``next_change_beats`` beats after ``time``.
    """

    time: float
    decided_at: float
    root: int | None
    quality: str
    confidence: float
    beat: int | None = None
    bar: int | None = None
    beat_in_bar: int | None = None
    next_change: float | None = None
    next_change_beats: int | None = None


@dataclass(frozen=True)
class KeyUpdate:
    """A key decision: from ``time`` (s) on, decided at ``decided_at``."""

    time: float
    decided_at: float
    tonic: int
    mode: str
    confidence: float


@dataclass
class _Beat:
    time: float
    beat: int | None
    bar: int | None
    beat_in_bar: int | None
    meter: int | None
    period: float | None


class _Bucket:
    """Token bucket on stream time: ``per_min`` tokens a minute, at most ``burst`` saved."""

    def __init__(self, per_min: float, burst: float):
        self.rate, self.burst = per_min / 60.0, float(burst)
        self.tokens, self.at = float(burst), 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = max(self.at, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class OnlineHarmony:
    """Causal key and chord tracking of one stream (see the module docstring).

    Parameters
    ----------
    sr, hop_length : int
        Audio rate and frame hop (20 ms at 22050 Hz: 441).
    """

    BUFFER_S = 60.0          # chroma frames kept: beats may arrive this late behind the audio (a catch-up)
    BEATLESS_S = 2.0
    FALLBACK_S = 0.5
    CHORD_MIN_P = 0.5
    CHORD_MIN_P_HALF = 0.8   # a decision on the first half of a beat needs more
    CHORD_MARGIN = 0.2
    CHORD_EVENTS_PER_MIN = 90.0
    CHORD_BURST = 8.0
    KEY_MIN_BEATS = 8
    KEY_STREAK = 8
    KEY_MIN_P = 0.5
    KEY_EVENTS_PER_MIN = 4.0
    MID_BEAT_P = 0.02

    def __init__(self, *, sr: int = 22050, hop_length: int = 441):
        self.frames = ChromaFrames(sr=sr, hop_length=hop_length)
        self.hmm = ChordHMM()
        self.keys = KeyEstimator()
        self.rhythm = HarmonicRhythm()
        cap = int(self.BUFFER_S * self.frames.fps) + 1
        self.t: deque[float] = deque(maxlen=cap)
        self.c: deque[np.ndarray] = deque(maxlen=cap)
        self.e: deque[float] = deque(maxlen=cap)
        self.now = 0.0                       # stream time of the last frame's end
        self.pending: deque[_Beat] = deque()
        self.last: _Beat | None = None       # the beat being heard
        self.obs_start = 0.0                 # where its next observation starts (its time, or mid-beat)
        self.half_done = False               # its first half has been observed
        self.last_external = -np.inf         # time of the newest beat event
        self.start = 0.0                     # time of the first observation
        self.first_wall: float | None = None  # wall clock of the first audio, and of the newest beat
        self.beat_wall: float | None = None
        self.beats_seen = 0
        # chords
        self.best: int | None = None         # the filter's best state and since when
        self.best_since: _Beat | None = None
        self.said: int | None = None         # the chord last published
        self.waiting: ChordUpdate | None = None
        self.unproven: ChordUpdate | None = None   # the last change, until it has held two beats
        self.chord_bucket = _Bucket(self.CHORD_EVENTS_PER_MIN, self.CHORD_BURST)
        # key
        self.key_said: int | None = None
        self.key_best: int | None = None
        self.key_streak = 0
        self.key_since = 0.0
        self.key_bucket = _Bucket(self.KEY_EVENTS_PER_MIN, 2.0)
        self.ended = False

    # -- input --------------------------------------------------------------------------
    def process(self, samples: np.ndarray, *, wall: float | None = None) -> list:
        """Feed audio (mono float, any length); return the updates it led to.

        ``wall``: the wall clock (s) now, when the audio may come faster than real time (a catch-up):
        then the fallback grid also waits for :data:`BEATLESS_S` of wall time without beats, so beats
        that lag the audio are not mistaken for no beats.
        """
        if wall is not None and self.first_wall is None:
            self.first_wall = wall
        times, chroma, energy = self.frames.process(samples)
        if not times.size:
            return []
        off = self.frames.centre_offset
        for t, c, e in zip(times, chroma, energy):
            self.t.append(float(t) - off)
            self.c.append(c)
            self.e.append(float(e))
        self.now = float(times[-1])
        out = self._drain()
        cur = self.last
        if cur is not None and not self.half_done and cur.period and cur.beat is not None:
            # the first half of the beat as soon as it is heard: a change shows half a beat earlier
            mid = cur.time + 0.5 * cur.period
            if self.t[-1] >= mid and not (self.pending and self.pending[0].time <= mid + 0.05):
                out += self._observe(cur, self.obs_start, mid, first=True)
                self.obs_start, self.half_done = mid, True
        # no beats for a while: a fixed grid keeps the chords going
        start = self.obs_start if self.last is not None else 0.0
        quiet = wall is None or wall - (self.beat_wall if self.beat_wall is not None else self.first_wall) > self.BEATLESS_S
        while (quiet and not self.pending and self.now - self.last_external > self.BEATLESS_S
               and self.t[-1] >= start + self.FALLBACK_S):
            out += self._next_beat(_Beat(start + self.FALLBACK_S, None, None, None, None, None))
            start = self.obs_start
        return out

    def add_beat(self, time: float, *, beat: int | None = None, bar: int | None = None,
                 beat_in_bar: int | None = None, meter: int | None = None, bpm: float | None = None,
                 wall: float | None = None) -> list:
        """Feed a beat event (its time in this analyser's clock; ``wall``: the wall clock now, as for
        :meth:`process`); return the updates it led to."""
        t = float(time)
        if wall is not None:
            self.beat_wall = wall
        self.last_external = max(self.last_external, t)
        prev = self.pending[-1].time if self.pending else (self.obs_start if self.last is not None else -np.inf)
        if t <= prev + 0.05 or t > self.now + self.BUFFER_S:
            return []                         # a beat already passed (a replay), a double, or not of this clock
        period = 60.0 / bpm if bpm and bpm > 0 else None
        self.pending.append(_Beat(t, beat, bar, beat_in_bar, meter, period))
        return self._drain()

    def finish(self) -> list:
        """End of stream: a waiting chord goes out (whatever the rate bound)."""
        if self.ended:
            return []
        self.ended = True
        if self.waiting is not None:
            w, self.waiting = self.waiting, None
            self.said = _state(w)
            return [w]
        return []

    # -- beats -> observations ------------------------------------------------------------
    def _drain(self) -> list:
        out: list = []
        while self.pending and self.t and self.t[-1] >= self.pending[0].time:
            out += self._next_beat(self.pending.popleft())
        return out

    def _next_beat(self, nxt: _Beat) -> list:
        """Close the current beat's (rest of its) observation at ``nxt``; then ``nxt`` is the current beat."""
        cur, self.last = self.last, nxt
        start, self.obs_start = self.obs_start, nxt.time
        first, self.half_done = not self.half_done, False
        if cur is None:
            self.start = nxt.time
            return []                          # the first beat opens the first observation
        return self._observe(cur, start, nxt.time, first=first, nxt=nxt)

    def _observe(self, cur: _Beat, a: float, b: float, *, first: bool, nxt: _Beat | None = None) -> list:
        """One observation: the frames of ``[a, b)`` within beat ``cur`` (``first``: from its start)."""
        t = np.fromiter(self.t, float, len(self.t))
        lo = int(np.searchsorted(t, a))
        hi = int(np.searchsorted(t, b))
        if hi - lo < 2:                        # older than the buffer, or too short to say
            return []
        frames = np.asarray([self.c[i] for i in range(lo, hi)])
        chroma, _ = beat_sync(t[lo:hi], frames, a, b)
        energy = float(10.0 * np.log10(np.mean(10.0 ** (np.asarray([self.e[i] for i in range(lo, hi)]) / 10.0))))
        self.beats_seen += first
        silent = energy < self.hmm.loudest - 45.0
        # the key hears the chords of the observation before (this one's depend on the key)
        span = 1.0 if cur.period is None else min((b - a) / cur.period, 1.0)      # in beats
        key_post = self.keys.update(chroma, 0.0 if silent else span, self.hmm.alpha if self.hmm.n_steps else None)
        trusted = self.beats_seen >= self.KEY_MIN_BEATS
        # chords change at beats: a second half continues its beat's chord but for a slip
        p = self.rhythm.p_change(cur.beat, cur.beat_in_bar, cur.meter) if first else self.MID_BEAT_P
        post = self.hmm.step(chroma, energy, p_change=p, key_posterior=key_post if trusted else None)
        out = self._chords(post, cur, nxt, b, self.CHORD_MIN_P if nxt is not None else self.CHORD_MIN_P_HALF)
        if nxt is not None:                    # the key moves once per beat
            out += self._key(key_post, cur)
            u = self.unproven
            if u is not None and u.beat is not None and cur.beat is not None and cur.beat > u.beat:
                self.rhythm.observe(u.beat)
                self.unproven = None
        return out

    def _chords(self, post: np.ndarray, cur: _Beat, nxt: _Beat | None, end: float, min_p: float) -> list:
        best = int(np.argmax(post))
        if best != self.best:
            self.best, self.best_since = best, cur
        out: list = []
        if self.said is None or best != self.said:
            lead = post[best] - (post[self.said] if self.said is not None else 0.0)
            if post[best] >= min_p and lead >= self.CHORD_MARGIN:
                self.waiting = self._chord_update(best, float(post[best]), self.best_since, nxt, end)
        elif self.waiting is not None:
            self.waiting = None                # back to the published chord before it went out
        # the bound is per minute of audio heard: on the observations' clock, which a catch-up (audio
        # far ahead of its beats) does not bunch up as it does the audio's
        if self.waiting is not None and self.chord_bucket.take(end):
            w, self.waiting = self.waiting, None
            # a change (the first chord is not one) counts for the rhythm once it has held two beats
            self.unproven = w if self.said is not None and w.beat is not None else None
            self.said = _state(w)
            out.append(w)
        return out

    def _chord_update(self, state: int, p: float, since: _Beat, nxt: _Beat | None, end: float) -> ChordUpdate:
        root, quality = chord_of(state)
        ahead = nxt_time = None
        if since.beat is not None and state != NO_CHORD:
            ahead = self.rhythm.predict(since.beat, since.beat_in_bar, since.meter)
        if ahead is not None:
            period = since.period or (nxt.period if nxt is not None else None) or max(end - since.time, 0.05)
            nxt_time = since.time + ahead * period
        return ChordUpdate(time=since.time, decided_at=self.now, root=root, quality=quality, confidence=p,
                           beat=since.beat, bar=since.bar, beat_in_bar=since.beat_in_bar,
                           next_change=nxt_time, next_change_beats=ahead)

    def _key(self, post: np.ndarray, cur: _Beat) -> list:
        best = int(np.argmax(post))
        if best != self.key_best:
            self.key_best, self.key_streak, self.key_since = best, 0, cur.time
        self.key_streak += 1
        if best == self.key_said or self.beats_seen < self.KEY_MIN_BEATS:
            return []
        first = self.key_said is None
        if not first and (self.key_streak < self.KEY_STREAK or post[best] < self.KEY_MIN_P):
            return []
        if not self.key_bucket.take(cur.time):
            return []
        self.key_said = best
        tonic, mode = key_of(best)
        return [KeyUpdate(time=self.start if first else self.key_since, decided_at=self.now, tonic=tonic, mode=mode,
                          confidence=float(post[best]))]


def _state(u: ChordUpdate) -> int:
    if u.root is None:
        return NO_CHORD
    return u.root + (0 if u.quality == "maj" else 12)
