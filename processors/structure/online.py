"""Causal song structure: sections decided while the stream plays.

The same beat-synchronous features, similarity and labeller as the offline analysis, with a
novelty kernel that only sees the beats already heard. For each beat ``i`` a boundary is

- ``tentative`` once ``T`` beats after it have been heard and its novelty clears the
  threshold (``T`` = half the kernel, at least 4 beats);
- ``confirmed`` once ``C + 1`` beats after it (``C``: the kernel, capped at 3 bars and 4 s,
  at least 4 beats) show it is the local maximum of novelty and it clears the threshold; a
  tentative boundary that is not confirmed is withdrawn (a ``revised`` update of the section
  that goes on).

On each confirmation the sections heard so far are grouped by repetition and relabelled (one
*analysis*). What is published is kept stable:

- a section's label is provisional until the analysis that first sees it closed, which may
  change it once (``revised``); from then on it is *held* (hysteresis): it changes only when
  the labeller has preferred the same other label in ``RELABEL_STREAK`` (3) analyses in a row
  and, at the last of them, with a confidence at least ``RELABEL_MARGIN`` (0.1) above the held
  label's (as of the last analysis that agreed with it). Each change is published once, as
  ``revised``; a change of group alone is not published;
- at most ``EVENTS_PER_MIN`` (24) events per minute of stream, of which at most
  ``RELABELS_PER_MIN`` (4) relabels of closed sections: whatever the input (an endless mix, a
  loop, silence). Over the bound, a tentative boundary is not published (nor its withdrawal);
  any other update waits, one per section, the latest state winning, until the minute allows it
  (a relabel that is undone before it went out is never sent).

At the end of the stream the last section is closed and the song is labelled as a whole (the
outro becomes possible); that last word bypasses the hysteresis, and what waits is published
with it, whatever the bound (once per stream, at most one event per section).

Beats: :meth:`OnlineStructure.add_beat` (the beat processor's events) when they keep coming,
else the onset-based :class:`~processors.structure.grid.OnlineGrid`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from .features import FrameFeatures
from .grid import OnlineGrid
from .labels import Segment, label_segments
from .offline import HOP, MIN_GAP_BARS, MIN_GAP_S, SILENCE_ABS_DB, SILENCE_REL_DB, kernel_beats, section_at
from .segment import GROUP_THRESHOLD, group_segments, novelty_at, segment_similarity, similarity

__all__ = ["OnlineStructure", "SectionUpdate"]


@dataclass(frozen=True)
class SectionUpdate:
    """One section decision.

    Attributes
    ----------
    start, end : float, float or None
        Section span in the analyser's stream time (s); ``end`` None while it goes on.
    label : str
    confidence : float
    status : {'tentative', 'confirmed', 'revised'}
    group : int
        Repetition group id.
    decided_at : float
        Stream time (s) of the audio when this decision went out (later than it was taken when
        the rate bound held it back).
    """

    start: float
    end: float | None
    label: str
    confidence: float
    status: str
    group: int
    decided_at: float


class OnlineStructure:
    """Sections of one stream, decided causally.

    Parameters
    ----------
    sr : int
        Sample rate (Hz) of the audio given to :meth:`process`.
    hop_length : int
        Feature hop (default 40 ms).
    history_beats : int
        Beats kept for grouping; older beats are dropped (their sections keep their last
        labels), so a stream can run for days in bounded memory.
    record : bool
        Keep every update in :attr:`updates` (evaluation); off for daemons.
    """

    EXTERNAL_FRESH_S = 4.0     # external beats count as "present" for this long after the last one
    MAX_CONFIRM_BARS = 3       # confirm with at most 3 bars of future ...
    MAX_CONFIRM_S = 4.0        # ... and 4 s (4 beats at least: slow songs)
    NOVELTY_K = 1.0            # threshold: median + K * MAD of the novelty seen so far ...
    NOVELTY_FLOOR = 0.05       # ... and at least this
    WARMUP_NOVELTY = 0.15      # threshold until 16 novelty values have been seen
    PEAK_SHARE = 0.7           # ... and at most this share of their 90th percentile
    # hysteresis: analyses come one per confirmed boundary (>= 3.5 s apart, usually a section), so
    # 3 in a row is evidence lasting several sections; a label grounded on repetition (>= 0.4)
    # then replaces a loudness guess (<= 0.3), while one held with as much confidence stays
    RELABEL_STREAK = 3
    RELABEL_MARGIN = 0.1
    # rate bound (per minute of stream): sections are >= 3.5 s long, so <= 18 confirmations a
    # minute with their tentatives; relabels of the past are rarer still and 4 a minute drains
    # a whole song's corrections in a few minutes without flooding a dashboard
    EVENTS_PER_MIN = 24
    RELABELS_PER_MIN = 4

    def __init__(self, *, sr: int = 22050, hop_length: int | None = None, history_beats: int = 1500,
                 record: bool = False):
        hop = hop_length or (HOP if sr == 22050 else int(round(sr * HOP / 22050)))
        self.ff = FrameFeatures(sr=sr, hop_length=hop)
        self.sr = sr
        self.history = max(int(history_beats), 64)
        self.record = record
        self.reset()

    def reset(self) -> None:
        self.ff.reset()
        self.grid = OnlineGrid(fps=self.ff.fps)
        self.frame_t: deque[float] = deque()
        self.frame_f: deque[np.ndarray] = deque()
        self.points: list[float] = [0.0]            # beat-interval edges; B[i] covers points[i]..points[i+1]
        self.B: list[np.ndarray] = []
        self.downbeat: list[bool] = [False]
        self.pending: deque[tuple[float, bool]] = deque()
        self.last_external = -1e9
        self.bpb: int | None = None
        self.now = 0.0
        self.bounds: list[int] = [0]                 # confirmed section starts (indices into points)
        self.tentative: int | None = None
        self.nov_conf: dict[int, float] = {}
        self.nov_seen: list[float] = []
        self.published: dict[int, str] = {}          # section start -> label decided for publication
        self.labels: dict[int, tuple[str, float, int]] = {}   # held (label, confidence, group)
        self.challenge: dict[int, tuple[str, int]] = {}      # the labeller's other label, analyses in a row
        # the rate bound, keyed by section start time (indices shift when history is dropped)
        self.sent: dict[float, str] = {}
        self.backlog: dict[float, SectionUpdate] = {}
        self.sent_at: deque[float] = deque()
        self.relabel_at: deque[float] = deque()
        self.tentative_sent = False
        self.energy_max = -120.0
        self.ended = False
        self.updates: list[SectionUpdate] = []

    # -- inputs ---------------------------------------------------------------------
    def process(self, samples: np.ndarray) -> list[SectionUpdate]:
        """Feed audio (mono float, any length); return the decisions it led to."""
        times, feats, onset = self.ff.process(samples)
        if not times.size:
            return []
        self.now = float(times[-1])
        fresh = self.ff.fresh
        for t, f, new in zip(times, feats, fresh):
            if new:                     # a repeated frame (adaptive quality's stride) adds nothing to a beat's mean
                self.frame_t.append(float(t) - self.ff.centre_offset)
                self.frame_f.append(f)
                self.energy_max = max(self.energy_max, float(f[-1]))
        while self.frame_t and self.frame_t[0] < self.now - 12.0:
            self.frame_t.popleft()
            self.frame_f.popleft()
        grid_beats = self.grid.push(onset)
        if self.now - self.last_external > self.EXTERNAL_FRESH_S:
            for t in grid_beats:
                self._queue(t - self.ff.centre_offset, False)
        return self._drain()

    def add_beat(self, time: float, beat_in_bar: int | None = None, meter: int | None = None) -> list[SectionUpdate]:
        """Feed a beat event (stream time in the analyser's clock, position in bar, beats per bar)."""
        self.last_external = max(self.last_external, float(time))
        if meter:
            self.bpb = int(meter)
        self._queue(float(time), beat_in_bar == 1)
        return self._drain()

    def finish(self) -> list[SectionUpdate]:
        """End of stream: close the last section and label the song as a whole."""
        if self.ended:
            return []
        self.ended = True
        if self.frame_t and self.frame_t[-1] > self.points[-1] + 0.05:
            self._add_interval(self.now, False)
        out: list[SectionUpdate] = []
        if self.tentative is not None:
            out.extend(self._withdraw())
        out.extend(self._relabel(final=True))
        return self._emit(out, final=True)

    # -- beats -> beat-synchronous rows ----------------------------------------------
    def _queue(self, t: float, downbeat: bool) -> None:
        last = self.pending[-1][0] if self.pending else self.points[-1]
        if t > last + 0.1:
            self.pending.append((t, downbeat))

    def _drain(self) -> list[SectionUpdate]:
        out: list[SectionUpdate] = []
        while self.pending and self.frame_t and self.frame_t[-1] >= self.pending[0][0]:
            t, down = self.pending.popleft()
            # beat by beat, so that a withdrawal knows whether its tentative went out
            out.extend(self._emit(self._add_interval(t, down)))
        return out

    def _add_interval(self, t: float, downbeat: bool) -> list[SectionUpdate]:
        a = self.points[-1]
        ft = np.fromiter(self.frame_t, float, len(self.frame_t))
        sel = (ft >= a) & (ft < t)
        if sel.any():
            row = np.mean(np.array(self.frame_f, dtype=np.float32)[sel], axis=0)
        else:
            row = self.frame_f[int(np.argmin(np.abs(ft - t)))].copy()
        self.B.append(row)
        self.points.append(t)
        self.downbeat.append(downbeat)
        out = self._on_beat()
        self._compact()
        return out

    # -- decisions ------------------------------------------------------------------
    def _ibi(self) -> float:
        p = np.diff(self.points[-17:])
        return float(np.median(p)) if p.size else 0.5

    def _threshold(self) -> float:
        if len(self.nov_seen) < 16:
            return self.WARMUP_NOVELTY
        v = np.array(self.nov_seen[-400:])
        med = float(np.median(v))
        adaptive = med + self.NOVELTY_K * float(np.median(np.abs(v - med)))
        # songs of equal-length blocks keep novelty high everywhere: never ask more than most peaks reach
        return max(min(adaptive, self.PEAK_SHARE * float(np.percentile(v, 90))), self.NOVELTY_FLOOR)

    def _on_beat(self) -> list[SectionUpdate]:
        n = len(self.B)
        ibi = self._ibi()
        bpb = self.bpb or 4
        half = kernel_beats(self.bpb, ibi)
        confirm = min(half, max(4, self.MAX_CONFIRM_BARS * bpb), max(4, int(np.ceil(self.MAX_CONFIRM_S / ibi))))
        tent = max(4, half // 2)
        gap = int(np.ceil(max(MIN_GAP_BARS * bpb * ibi, MIN_GAP_S) / ibi))
        lo = max(0, n - half - confirm - 2)
        B = np.array(self.B[lo:])
        S = similarity(B, mfcc_stats=self._mfcc_stats())
        out: list[SectionUpdate] = []
        thr = self._threshold()
        last = self.bounds[-1]
        # novelty of the candidate heard ``confirm`` beats ago, with the full kernel ...
        c = n - confirm
        if c > 0 and c - lo >= 2:
            v = novelty_at(S, c - lo, half, confirm)
            self.nov_conf[c] = v
            self.nov_seen.append(v)
        del self.nov_seen[:-400]
        # ... and confirmation of the one before it, once it is known to be a local peak
        c -= 1
        v = self.nov_conf.get(c)
        # the stream's start is no boundary: a section may begin sooner after it
        room = gap if last > 0 else max(4, gap // 2)
        if v is not None and v >= thr and c - last >= room:
            around = [self.nov_conf.get(j, 0.0) for j in range(max(last + 1, c - gap), c + 2) if j != c]
            if all(v >= x for x in around):
                out.extend(self._confirm(self._snap(c)))
        # tentative: a candidate with half the future, while none is pending
        t_i = n - tent
        if self.tentative is None and t_i - self.bounds[-1] >= gap and t_i - lo >= 2:
            v = novelty_at(S, t_i - lo, half, tent)
            if v >= thr * 1.2:
                self.tentative = self._snap(t_i)
                out.append(self._guess(self.tentative, "tentative", 0.3))
        if self.tentative is not None and n - self.tentative > confirm + 2:
            out.extend(self._withdraw())
        for k in [k for k in self.nov_conf if k < n - 4 * half]:
            del self.nov_conf[k]
        return out

    def _snap(self, c: int) -> int:
        """Sections start on downbeats: move to one within a beat when bar positions are known."""
        for j in (c, c - 1, c + 1):
            if 0 < j < len(self.downbeat) and self.downbeat[j]:
                return j
        return c

    def _mfcc_stats(self) -> tuple[np.ndarray, np.ndarray]:
        m = np.array(self.B[-self.history:], dtype=np.float64)[:, 12:25]
        return m.mean(axis=0), m.std(axis=0)

    def _confirm(self, c: int) -> list[SectionUpdate]:
        if c <= self.bounds[-1]:
            return []
        self.bounds.append(c)
        self.tentative = None
        out = self._relabel(final=False)
        lab, conf, grp = self.labels.get(c, ("unknown", 0.3, 0))
        self.published[c] = lab
        out.append(SectionUpdate(self.points[c], None, lab, conf, "confirmed", grp, self.now))
        return out

    def _withdraw(self) -> list[SectionUpdate]:
        """The suspected boundary did not hold: the current section goes on (said if it was said)."""
        self.tentative = None
        if not self.tentative_sent:
            return []
        start = self.bounds[-1]
        lab, conf, grp = self.labels.get(start, ("unknown", 0.3, 0))
        return [SectionUpdate(self.points[start], None, lab, conf, "revised", grp, self.now)]

    def _segments(self) -> list[tuple[int, int]]:
        ends = [*self.bounds[1:], len(self.B)]
        return [(a, b) for a, b in zip(self.bounds, ends) if b > a]

    def _guess(self, start: int, status: str, conf: float) -> SectionUpdate:
        """A label for a section that has only begun: that of the closed section it resembles most."""
        closed = [seg for seg in self._segments() if seg[1] <= start]
        known = [self.labels[a] for a, _ in closed if a in self.labels]
        lab, grp = "unknown", 1 + max((g for _, _, g in known), default=-1)
        if closed and len(self.B) - start >= 2:
            S = similarity(np.array(self.B), mfcc_stats=self._mfcc_stats())
            sims = [segment_similarity(S, (start, len(self.B)), seg) for seg in closed]
            k = int(np.argmax(sims))
            if sims[k] >= GROUP_THRESHOLD and closed[k][0] in self.labels:
                lab, _, grp = self.labels[closed[k][0]]
        return SectionUpdate(self.points[start], None, lab, conf, status, grp, self.now)

    def _relabel(self, *, final: bool) -> list[SectionUpdate]:
        segs = self._segments()
        if not segs:
            return []
        keep_from = max(0, len(self.B) - self.history)
        S = similarity(np.array(self.B[keep_from:]), mfcc_stats=self._mfcc_stats())
        live = [(a, b) for a, b in segs if a >= keep_from]
        energy = np.array([row[-1] for row in self.B])
        gate = max(self.energy_max - SILENCE_REL_DB, SILENCE_ABS_DB)
        silent = [float(np.mean(energy[a:b])) < gate for a, b in live]
        music = [s for s, q in zip(live, silent) if not q]
        groups = group_segments(S, [(a - keep_from, b - keep_from) for a, b in music]) if music else []
        gmap = dict(zip(music, groups))
        nxt = max(groups) + 1 if groups else 0
        infos = []
        for (a, b), q in zip(live, silent):
            g = gmap.get((a, b))
            if g is None:
                g, nxt = nxt, nxt + 1
            infos.append(Segment(self.points[a], self.points[b] if b < len(self.points) else self.now, int(g),
                                 float(np.mean(energy[a:b])), q))
        labels = label_segments(infos, final=final)
        out = []
        last_start = live[-1][0]
        # sections closed before this analysis are held; the one it closes gets its first full look
        settled = self.bounds[-2] if len(self.bounds) > 1 else 0
        for (a, _), seg, (lab, conf) in zip(live, infos, labels):
            held = self.labels.get(a)
            proposal = (lab, conf, seg.group)
            lab, conf, grp = self.labels[a] = proposal if final or held is None or a >= settled \
                else self._hold(a, held, proposal)
            end = None if (a == last_start and not final) else seg.end
            if a in self.published and self.published[a] != lab:
                out.append(SectionUpdate(seg.start, end, lab, conf, "revised", grp, self.now))
                self.published[a] = lab
            elif final and a == last_start:
                out.append(SectionUpdate(seg.start, end, lab, conf, "revised" if a in self.published else "confirmed",
                                         grp, self.now))
                self.published[a] = lab
            elif a not in self.published and a != self.bounds[-1]:
                self.published[a] = lab
                out.append(SectionUpdate(seg.start, end, lab, conf, "confirmed", grp, self.now))
        return out

    def _hold(self, a: int, held: tuple[str, float, int], proposal: tuple[str, float, int]) -> tuple[str, float, int]:
        """Hysteresis: the label kept for closed section ``a`` given the labeller's latest one."""
        if proposal[0] == held[0]:
            self.challenge.pop(a, None)
            return proposal                          # agreement refreshes confidence and group
        rival, streak = self.challenge.get(a, (proposal[0], 0))
        streak = streak + 1 if rival == proposal[0] else 1
        if streak >= self.RELABEL_STREAK and proposal[1] >= held[1] + self.RELABEL_MARGIN:
            self.challenge.pop(a, None)
            return proposal
        self.challenge[a] = (proposal[0], streak)
        return held

    def _emit(self, out: list[SectionUpdate], *, final: bool = False) -> list[SectionUpdate]:
        """The rate bound: publish what the last minute of stream allows, keep the rest waiting."""
        for w in (self.sent_at, self.relabel_at):
            while w and w[0] <= self.now - 60.0:
                w.popleft()
        for u in out:
            if u.status == "tentative":
                # a hint that is stale by the time it could go out: now or never, behind what waits
                self.tentative_sent = not self.backlog and len(self.sent_at) < self.EVENTS_PER_MIN
                if self.tentative_sent:
                    self.backlog[u.start] = u
                continue
            prev = self.backlog.get(u.start)
            if prev is not None and prev.status == "confirmed":
                u = replace(u, status="confirmed")   # still its first publication
            if not final and u.end is not None and u.status == "revised" and self.sent.get(u.start) == u.label:
                self.backlog.pop(u.start, None)      # a relabel undone before it went out
                continue
            self.backlog[u.start] = u
        sent = []
        for start in sorted(self.backlog):
            u = self.backlog[start]
            relabel = u.status == "revised" and u.end is not None and start in self.sent
            if not final and (len(self.sent_at) >= self.EVENTS_PER_MIN
                              or relabel and len(self.relabel_at) >= self.RELABELS_PER_MIN):
                if u.status == "tentative":
                    del self.backlog[start]
                    self.tentative_sent = False
                continue
            del self.backlog[start]
            self.sent[start] = u.label
            self.sent_at.append(self.now)
            if relabel:
                self.relabel_at.append(self.now)
            sent.append(replace(u, decided_at=self.now))
        if self.record:
            self.updates.extend(sent)
        return sent

    def _compact(self) -> None:
        """Forget the oldest beats once twice the history has piled up; shift every index."""
        if len(self.B) < 2 * self.history:
            return
        drop = len(self.B) - self.history
        # keep whole sections: cut at the first section start at or after ``drop``
        cut = next((b for b in self.bounds if b >= drop), self.bounds[-1])
        if cut <= 0:
            return
        self.B = self.B[cut:]
        self.points = self.points[cut:]
        self.downbeat = self.downbeat[cut:]
        shift = lambda d: {k - cut: v for k, v in d.items() if k >= cut}  # noqa: E731
        self.bounds = [b - cut for b in self.bounds if b >= cut]
        self.labels, self.published, self.nov_conf = shift(self.labels), shift(self.published), shift(self.nov_conf)
        self.challenge = shift(self.challenge)
        self.sent = {t: lab for t, lab in self.sent.items() if t >= self.points[0]}
        if self.tentative is not None:
            self.tentative = self.tentative - cut if self.tentative >= cut else None
        del self.nov_seen[:-400]

    # -- views ----------------------------------------------------------------------
    @property
    def sections(self) -> list[dict]:
        """Current view: ``{"start", "end", "label", "confidence", "group"}`` per section so far."""
        out = []
        for a, b in self._segments():
            lab, conf, grp = self.labels.get(a, ("unknown", 0.2, 0))
            end = self.points[b] if b < len(self.points) else self.now
            out.append({"start": round(self.points[a], 3), "end": round(end, 3), "label": lab,
                        "confidence": round(conf, 3), "group": grp})
        if out:
            out[-1]["end"] = round(max(out[-1]["end"], self.now), 3)
        return out

    def section_at(self, t: float) -> dict | None:
        """The section containing stream time ``t`` as currently known."""
        return section_at(self.sections, t)
