"""Online (causal) bar-pointer HMM beat / downbeat / tempo / meter tracker.

The state space follows madmom's ``BarStateSpace`` / ``BarTransitionModel``: for every meter ``m``
(beats per bar) and every integer beat interval ``T`` (frames per beat, 55-215 BPM at 50 fps) there is
a ring of ``m * T`` states, one per frame position in the bar. The position advances one state per
frame; at each beat boundary the tempo may change with probability ``exp(-lambda * |T'/T - 1|)``
(row-normalised), and at each bar boundary the meter may change with a small probability. The
observation model is madmom's ``RNNDownBeatTrackingObservationModel``: the first ``1/obs_lambda``
of each beat are *beat* states (the first beat of the bar: *downbeat* states) and see the beat
(downbeat) activation, all other states see ``(1 - beat - downbeat) / (obs_lambda - 1)``.

Inference is the forward algorithm (filtering), one frame at a time, vectorised over states and
over streams: every per-stream quantity (posterior, activation history, frame counters) is a row
of a :class:`_Bank`, so the posteriors of many streams are the rows of one ``(streams, states)``
float32 matrix (13 041 states per stream by default) and the bookkeeping of a frame is a handful
of numpy operations for all streams, not a Python call per stream. A frame costs a shift of the matrix by one state
(the within-beat advance), one ``(streams * K, n_tempi) @ (n_tempi, n_tempi)`` product for the
beat boundaries (its result, the first state of every beat, is weighted by the beat or downbeat
likelihood before it is written), a weighting of the ~6 % of other states next to a beat (every
other state sees the non-beat likelihood, which the normalisation absorbs), a normalisation and
an argmax. A beat is emitted once, when the most probable state sits
``lookahead`` frames after a beat boundary that has not been emitted yet, and only when the
tracker is confident (posterior phase concentration times activation salience) and the beat
is not on silence.

Module contents
---------------
Beat
    The event emitted for every tracked beat (stream times in seconds).
BarTracker
    The online tracker; ``process(activations, gate=...) -> list[Beat]``, and
    ``BarTracker.process_many(trackers, inputs)`` to advance many streams in one batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .space import BarSpace

__all__ = ["Beat", "BarTracker"]

_DTYPE = np.float32  # the posterior is renormalised every frame: single precision is plenty


@dataclass(frozen=True, slots=True)
class Beat:
    """One tracked beat.

    Attributes
    ----------
    time : float
        Stream time (s) of the beat (stream time 0 = first sample).
    is_downbeat : bool
        True for the first beat of a bar.
    beat_in_bar : int
        Position in the bar, ``1..meter``.
    meter : int
        Beats per bar (2, 3, 4, ...).
    bpm : float
        Tempo in beats per minute.
    confidence : float
        0..1; low on silence, noise and while the tracker is still searching.
    next_beat_time : float
        Predicted stream time (s) of the next beat.
    decided_at : float
        Stream time (s) of the last audio sample used when the beat was emitted;
        detection delay = ``decided_at - time``.
    """

    time: float
    is_downbeat: bool
    beat_in_bar: int
    meter: int
    bpm: float
    confidence: float
    next_beat_time: float
    decided_at: float


class _Space(BarSpace):
    """The immutable part of a tracker: the shared :class:`~.space.BarSpace` in float32
    probabilities, observation classes and the phase measure (shared between trackers)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        n_t = self.n_tempi
        meter_beats = np.asarray(self.meters)[self.meter]
        # Within a beat, state s receives from s - 1: a shift of the whole vector by one. The first
        # state of every beat is then overwritten by the mass leaving the last state of the
        # previous beat, mixed over tempi (flat indices: the step gathers and scatters with them).
        self.dst = self.dst.reshape(-1)  # (K * n_t,)
        self.src = self.src.reshape(-1)
        trans = self.tempo_weights.copy()
        trans[trans < 1e-12] = 0.0  # sparse in effect; keeps the matrix well-conditioned
        self.trans = (trans / trans.sum(axis=1, keepdims=True)).astype(_DTYPE)
        self.init = self.start.astype(_DTYPE)
        # Observation class per state: 0 non-beat, 1 beat, 2 downbeat, 3/4 next to a beat/downbeat.
        # The neighbours of the beat region (one frame before and after) see the geometric mean of
        # beat and non-beat evidence, so a beat that falls between two frames is not pushed to either side.
        region, beat_region = self.region, self.beat_region
        near = (self.pos == region) | (self.pos == self.interval - 1)
        first_beat = self.beat == 0
        before_down = (self.pos == self.interval - 1) & (self.beat == meter_beats - 1)
        cls = np.zeros(self.n_states, dtype=np.int64)
        cls[near] = 3
        cls[near & ((first_beat & (self.pos == region)) | before_down)] = 4
        cls[beat_region] = 1
        cls[beat_region & first_beat] = 2
        # Only the states next to a beat see anything but the non-beat likelihood: the first state
        # of each beat (class by row: downbeat rows 2, others 1), and a few more (``rest``).
        self.row_cls = np.ones(self.n_rows, dtype=np.int64) - 1  # index into the 4 ratios: beat
        self.row_cls[self.down_rows] = 1  # downbeat
        assert np.array_equal(cls[self.dst].reshape(self.n_rows, n_t), (self.row_cls + 1)[:, None].repeat(n_t, 1))
        assert self.dst[0] == 0  # step() leaves state 0 to the beat-boundary write
        self.rest = np.setdiff1d(np.flatnonzero(cls), self.dst)
        self.rest_cls = cls[self.rest] - 1
        self.group = self.meter * n_t + self.tempo  # (meter, tempo) group per state
        # uniform-posterior phase mass within +/-tol frames, to normalise the concentration
        self.phase_tol = 1
        self._near: dict[int, np.ndarray] = {}
        self.phase_mass0 = float(np.sum(self.init * np.minimum(1.0, (2 * self.phase_tol + 1) / self.interval)))

    def near_phase(self, p: int) -> np.ndarray:
        """Indices of the states within ``phase_tol`` frames of position ``p`` in their beat
        (counting the wrap to the next beat), cached per ``p``."""
        idx = self._near.get(p)
        if idx is None:
            tol = self.phase_tol
            d1 = np.abs(self.pos - p)
            d2 = self.interval - self.pos + p  # states about to start their next beat
            idx = self._near[p] = np.flatnonzero((d1 <= tol) | (d2 <= tol))
        return idx

    def step(self, alpha: np.ndarray, out: np.ndarray, meter_change_prob: float, ratio: np.ndarray | None) -> None:
        """Advance ``alpha [shape=(streams, n_states)]`` one frame into ``out`` (same shape, not
        overlapping it) and weight it by the observation (unnormalised).

        ``ratio [shape=(streams, 4)]``: likelihood of the classes beat, downbeat, next to a beat,
        next to a downbeat, each divided by the non-beat likelihood (which, shared by all other
        states, the normalisation absorbs); None for no observation.
        """
        s = alpha.shape[0]
        k, n_t = self.n_rows, self.n_tempi
        inc = (alpha[:, self.src].reshape(s * k, n_t) @ self.trans).reshape(s, k, n_t)
        if meter_change_prob > 0:
            d = inc[:, self.down_rows]
            p = meter_change_prob
            inc[:, self.down_rows] = (1 - p) * d + p * (d.sum(axis=1, keepdims=True) - d) / (len(self.meters) - 1)
        if ratio is not None:
            inc *= ratio[:, self.row_cls, None]  # the first state of every beat: beat or downbeat
        # within-beat advance: a shifted copy into another buffer (in place, numpy would copy
        # the overlapping source first: twice the memory traffic of the largest operation here);
        # state 0 is the first state of a beat, written below
        out[:, 1:] = alpha[:, :-1]
        out[:, self.dst] = inc.reshape(s, k * n_t)
        if ratio is not None:
            out[:, self.rest] *= ratio[:, self.rest_cls]  # the other states next to a beat


@lru_cache(maxsize=8)
def _space(*args) -> _Space:
    return _Space(*args)


class _Bank:
    """The mutable state of trackers that step together, one row per stream.

    One tracker alone owns a bank of one row; :func:`share_rows` moves the trackers of a batch into
    rows of one bank, so that a frame of all of them is one numpy operation per quantity (a live
    processor steps 100+ streams every 20 ms; the tracker was a quarter of its time, most of it
    per-stream Python around the forward step).
    """

    FIELDS = ("alpha", "act", "onset", "per", "audible", "frame", "last_beat", "silent_run", "confidence")

    def __init__(self, n: int, n_states: int, history: int) -> None:
        self.alpha = np.empty((n, n_states), dtype=_DTYPE)  # posterior
        self.spare = np.empty_like(self.alpha)  # the next posterior is written here, then the two swap
        self.act = np.zeros((n, history))  # recent activation sums (ring buffers, frame % history)
        self.onset = np.zeros((n, history))  # recent onset strength (activity)
        self.per = np.zeros((n, history))  # recent signal whose periodicity is measured
        self.audible = np.zeros((n, history), dtype=bool)  # recent frames above the silence gate
        self.frame = np.zeros(n, dtype=np.int64)  # index of the next frame to process
        self.last_beat = np.zeros(n, dtype=np.int64)  # frame of the last emitted beat
        self.silent_run = np.zeros(n, dtype=np.int64)  # consecutive silent frames so far
        self.confidence = np.zeros(n)

    @property
    def size(self) -> int:
        return self.alpha.shape[0]

    @classmethod
    def of(cls, trackers: Sequence[BarTracker]) -> _Bank:
        """A new bank holding a copy of the rows of ``trackers``, in order."""
        bank = cls.__new__(cls)
        for f in cls.FIELDS:
            setattr(bank, f, np.stack([getattr(t._bank, f)[t._row] for t in trackers]))
        bank.spare = np.empty_like(bank.alpha)
        return bank

    def put(self, row: int, src: _Bank, src_row: int) -> None:
        """Copy row ``src_row`` of ``src`` into row ``row``."""
        for f in self.FIELDS:
            getattr(self, f)[row] = getattr(src, f)[src_row]


class BarTracker:
    """Forward-algorithm bar-pointer HMM over tempo x meter x position.

    Parameters
    ----------
    fps : float
        Activation frame rate in frames per second (50 for a 441-sample hop at 22050 Hz).
    min_bpm, max_bpm : float
        Tempo range in BPM; beat intervals are the integers ``round(60*fps/max_bpm) ..
        round(60*fps/min_bpm)`` frames.
    meters : tuple of int
        Beats per bar to model (each >= 2).
    transition_lambda : float
        Tempo-change steepness at beat boundaries (madmom: 100 at 100 fps; larger = steadier tempo).
    observation_lambda : int
        Fraction ``1/observation_lambda`` of each beat is the beat (downbeat) region; non-beat
        states see ``(1 - beat - downbeat) / (observation_lambda - 1)``.
    beat_frames : int
        Upper bound on the width of the beat region in frames.
    act_floor : float
        Activations are clipped to at least this: a missing onset is strong, not infinite,
        evidence against a beat.
    meter_change_prob : float
        Probability of switching meter at a bar boundary (keeps the other meters alive so the
        tracker can correct itself).
    lookahead : int
        Frames after a beat to wait before emitting it (adds ``lookahead / fps`` s of delay).
    min_confidence : float
        Beats whose confidence is below this are not emitted.
    frame_delay : float
        Seconds of audio beyond a frame's centre that its activation used (half the analysis
        window); added to ``decided_at``.
    silence_decay : float
        Per-frame mixing weight towards the uniform distribution while gated (silence), so a long
        pause forgets the old phase.
    tempo_prior : tuple of (float, float) or None
        ``(centre_bpm, sigma_octaves)`` log-normal prior on tempo applied to the initial
        distribution and on tempo changes; ``None`` for a flat prior.
    rhythm_low, rhythm_high : float
        Autocorrelation of the activation at the tracked beat period (and twice it) mapped to a
        rhythm confidence of 0 and 1: steady music reaches 0.4-0.8, classical music often under
        0.2 (white-noise activations reach 0.2-0.3, but noise has no coherent onset activity).
    silence_hold : float
        Seconds of continuous silence (``gate`` False) after which frames stop counting as
        evidence. A shorter silence - the gap between two clicks, a rest - is evidence of no
        onset; a stream starts as if after a long pause, so leading silence is ignored.
    time_offset : float
        Seconds added to every beat time: the activation's own bias (a network that fires a
        little before the onset), measured on annotated audio.
    """

    MIN_BPM = 55.0
    MAX_BPM = 215.0
    METERS = (2, 3, 4)
    TRANSITION_LAMBDA = 50.0  # madmom uses 100 at 100 fps; a 1-frame tempo step is twice as big at 50 fps
    OBSERVATION_LAMBDA = 16
    BEAT_FRAMES = 1
    ACT_FLOOR = 0.01
    METER_CHANGE_PROB = 1e-3
    LOOKAHEAD = 2
    MIN_CONFIDENCE = 0.05  # low: the rhythm factor already zeroes noise and steady tones
    SILENCE_DECAY = 0.02
    SILENCE_HOLD = 1.5  # s: longer than the slowest beat, so the gaps of a slow click track are evidence
    SUBFRAME_MAX = 1.5  # frames a beat may move towards its activation peak
    HISTORY_SECONDS = 8.0  # activation history for the periodicity measure
    ONSET_ACTIVITY = 0.03  # mean onset strength below which the rhythm measure is scaled down
    # autocorrelation at the beat period that counts as no rhythm ... Noise is kept out by the onset
    # activity (only flux coherent across bands counts), not by this: at 0.2 it withheld most beats of
    # classical music, whose activations repeat weakly (nested leave-one-group-out, README Accuracy)
    RHYTHM_LOW = 0.0
    RHYTHM_HIGH = 0.45  # ... and as clear rhythm

    def __init__(
        self,
        *,
        fps: float = 50.0,
        min_bpm: float = MIN_BPM,
        max_bpm: float = MAX_BPM,
        meters: tuple[int, ...] = METERS,
        transition_lambda: float = TRANSITION_LAMBDA,
        observation_lambda: int = OBSERVATION_LAMBDA,
        beat_frames: int = BEAT_FRAMES,
        act_floor: float = ACT_FLOOR,
        meter_change_prob: float = METER_CHANGE_PROB,
        lookahead: int = LOOKAHEAD,
        min_confidence: float = MIN_CONFIDENCE,
        frame_delay: float = 0.0,
        silence_decay: float = SILENCE_DECAY,
        tempo_prior: tuple[float, float] | None = None,
        rhythm_low: float = RHYTHM_LOW,
        rhythm_high: float = RHYTHM_HIGH,
        silence_hold: float = SILENCE_HOLD,
        time_offset: float = 0.0,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps={fps!r} must be positive")
        if not 0 < min_bpm < max_bpm:
            raise ValueError(f"min_bpm={min_bpm!r}, max_bpm={max_bpm!r}: need 0 < min_bpm < max_bpm")
        meters = tuple(int(m) for m in meters)
        if not meters or any(m < 1 for m in meters) or len(set(meters)) != len(meters):
            raise ValueError(f"meters={meters!r} must be distinct positive beats-per-bar counts")
        if not transition_lambda > 0:
            raise ValueError(f"transition_lambda={transition_lambda!r} must be positive")
        if int(observation_lambda) < 2:
            raise ValueError(f"observation_lambda={observation_lambda!r} must be an integer >= 2")
        if int(beat_frames) != beat_frames or beat_frames < 1:
            raise ValueError(f"beat_frames={beat_frames!r} must be a positive integer")
        if not 0 <= meter_change_prob < 1:
            raise ValueError(f"meter_change_prob={meter_change_prob!r} must be in [0, 1)")
        if int(lookahead) != lookahead or lookahead < 0:
            raise ValueError(f"lookahead={lookahead!r} must be a non-negative number of frames")
        if not 0 <= min_confidence <= 1:
            raise ValueError(f"min_confidence={min_confidence!r} must be in [0, 1]")
        if not -1 <= rhythm_low < rhythm_high <= 1:
            raise ValueError(f"rhythm_low={rhythm_low!r}, rhythm_high={rhythm_high!r}: need -1 <= low < high <= 1")
        if not 0 <= silence_decay <= 1:
            raise ValueError(f"silence_decay={silence_decay!r} must be in [0, 1]")
        if not 0 < act_floor < 0.5:
            raise ValueError(f"act_floor={act_floor!r} must be in (0, 0.5)")
        if not silence_hold >= 0:
            raise ValueError(f"silence_hold={silence_hold!r} must be >= 0 seconds")
        if not abs(time_offset) <= 0.05:
            raise ValueError(f"time_offset={time_offset!r} must be within +/-0.05 s")
        if tempo_prior is not None and not (tempo_prior[0] > 0 and tempo_prior[1] > 0):
            raise ValueError(f"tempo_prior={tempo_prior!r} must be (centre_bpm > 0, sigma_octaves > 0)")
        lo = int(np.round(60.0 * fps / max_bpm))
        hi = int(np.round(60.0 * fps / min_bpm))
        if lo < 2:
            raise ValueError(f"max_bpm={max_bpm!r} is too fast for fps={fps!r}")
        self.fps = float(fps)
        self.meters = meters
        self.transition_lambda = float(transition_lambda)
        self.observation_lambda = int(observation_lambda)
        self.beat_frames = int(beat_frames)
        self.act_floor = float(act_floor)
        self.meter_change_prob = float(meter_change_prob) if len(meters) > 1 else 0.0
        self.lookahead = int(lookahead)
        self.min_confidence = float(min_confidence)
        self.frame_delay = float(frame_delay)
        self.silence_decay = float(silence_decay)
        self.rhythm_low = float(rhythm_low)
        self.rhythm_high = float(rhythm_high)
        self.time_offset = float(time_offset)
        self._hold_frames = int(round(silence_hold * fps))
        self.intervals = np.arange(lo, hi + 1)
        prior = None if tempo_prior is None else (float(tempo_prior[0]), float(tempo_prior[1]))
        self._space_args = (self.fps, tuple(int(t) for t in self.intervals), meters, self.transition_lambda,
                            self.observation_lambda, self.beat_frames, prior)
        self._sp = _space(*self._space_args)
        self.n_states = self._sp.n_states
        self._history = int(self.HISTORY_SECONDS * self.fps)  # frames of activation history
        self._bank = _Bank(1, self.n_states, self._history)  # this stream's state: a row of a bank
        self._row = 0  # its row there (see share_rows)
        self.reset()

    @property
    def batch_key(self) -> tuple:
        """Trackers with equal keys share a state space and can be advanced in one batch."""
        return (self._space_args, self.meter_change_prob, self.silence_decay, self.lookahead, self._hold_frames)

    def reset(self) -> None:
        """Forget the stream: uniform posterior, no beats emitted."""
        b, r = self._bank, self._row
        b.alpha[r] = self._sp.init
        for f in ("act", "onset", "per", "audible", "frame", "confidence"):
            getattr(b, f)[r] = 0
        b.last_beat[r] = -(10**9)
        b.silent_run[r] = 10**9  # a stream starts as if after a long pause

    @property
    def confidence(self) -> float:
        """Confidence (0..1) of the most recent frame."""
        return float(self._bank.confidence[self._row])

    @property
    def latency(self) -> float:
        """Look-ahead of the tracker itself in seconds (``lookahead / fps``)."""
        return self.lookahead / self.fps

    # ------------------------------------------------------------------ inference
    def process(
        self,
        activations: np.ndarray,
        *,
        gate: np.ndarray | None = None,
        onset: np.ndarray | None = None,
        periodic: np.ndarray | None = None,
    ) -> list[Beat]:
        """Advance the tracker by some frames.

        Parameters
        ----------
        activations : np.ndarray [shape=(n, 2)]
            ``[beat, downbeat]`` probabilities per frame (beat excludes downbeat), frame rate ``fps``.
        gate : np.ndarray [shape=(n,), dtype=bool] or None
            False on silent frames. A silence longer than ``silence_hold`` carries no evidence: the
            posterior drifts to uniform; no beat is ever emitted on a silent frame.
        onset : np.ndarray [shape=(n,)] or None
            Spectral-flux onset strength (0..1); its recent mean is the onset activity that
            scales the rhythm confidence (a network can hallucinate periodic activations on a
            steady tone, which has no flux). None uses ``beat + downbeat``.
        periodic : np.ndarray [shape=(n,)] or None
            Signal whose autocorrelation at the tracked beat period is the rhythm confidence;
            None uses ``beat + downbeat``.

        Returns
        -------
        list of Beat
            Beats decided at these frames, in time order, each emitted once.
        """
        return BarTracker.process_many([self], [(activations, gate, onset, periodic)])[0]

    @staticmethod
    def process_many(trackers: Sequence[BarTracker], inputs: Sequence[tuple]) -> list[list[Beat]]:
        """Advance many trackers (one stream each) in one batch.

        Parameters
        ----------
        trackers : sequence of BarTracker
            Trackers with equal :attr:`batch_key`; each appears once.
        inputs : sequence of tuple
            Per tracker ``(activations, gate, onset, periodic)`` as for :meth:`process`
            (``gate``, ``onset`` and ``periodic`` may be None); the frame counts may differ.

        Returns
        -------
        list of list of Beat
            Per tracker, the beats decided at these frames.
        """
        if len(trackers) != len(inputs):
            raise ValueError(f"{len(trackers)} trackers but {len(inputs)} inputs")
        if len({t.batch_key for t in trackers}) > 1:
            raise ValueError("trackers in one batch must share their state space and parameters")
        if len({id(t) for t in trackers}) != len(trackers):
            raise ValueError("a tracker may appear only once per batch")
        out: list[list[Beat]] = [[] for _ in trackers]
        if not trackers:
            return out
        ratio, gate, act_sum, onset, periodic, counts = _prepare(trackers[0], inputs)
        # row r of the bank is trackers[r]: their own shared bank, else a copy written back at the end
        bank = trackers[0]._bank
        own = bank.size == len(trackers) and all(t._bank is bank and t._row == r for r, t in enumerate(trackers))
        if not own:
            bank = _Bank.of(trackers)
        counts = np.asarray(counts)
        starts = np.cumsum(counts) - counts
        everyone = np.arange(len(trackers))
        for i in range(int(counts.max())):  # frame loop only; everything per state and per stream is vectorised
            idx = everyone if counts.min() > i else np.flatnonzero(counts > i)
            for r, state in trackers[0]._step(bank, idx, starts[idx] + i, ratio, gate, act_sum, onset, periodic):
                beat = trackers[r]._emit(bank, r, state)
                if beat is not None:
                    out[r].append(beat)
        if not own:
            for r, t in enumerate(trackers):
                t._bank.put(t._row, bank, r)
        return out

    def _step(self, bank: _Bank, idx: np.ndarray, rows: np.ndarray, ratio: np.ndarray, gate: np.ndarray,
              act_sum: np.ndarray, onset: np.ndarray, periodic: np.ndarray) -> list[tuple[int, int]]:
        """One frame of the bank's rows ``idx`` (inputs at ``rows`` of the prepared arrays); the
        ``(row, state)`` of every stream that may have a beat to emit (its checks not yet made)."""
        sp = self._sp
        whole = idx.size == bank.size  # then the posterior is stepped in place, not gathered
        g = gate[rows]
        # a short silence (between clicks, a rest) is evidence of no onset; only a long one carries none
        silent = np.where(g, 0, bank.silent_run[idx] + 1)
        bank.silent_run[idx] = silent
        observed = silent <= self._hold_frames
        before = bank.alpha if whole else bank.alpha[idx]
        alpha = bank.spare if whole else np.empty_like(before)
        r_obs = ratio[rows]
        quiet = np.flatnonzero(~observed)
        if quiet.size:
            r_obs[quiet] = 1.0  # no evidence
        sp.step(before, alpha, self.meter_change_prob, r_obs if quiet.size < idx.size else None)
        if whole:
            bank.alpha, bank.spare = alpha, before
        if quiet.size:
            # silence: no evidence; drift towards uniform so a long pause forgets the phase
            sub = alpha[quiet]
            sub /= sub.sum(axis=1, keepdims=True)
            alpha[quiet] = (1 - self.silence_decay) * sub + self.silence_decay * sp.init
        total = alpha.sum(axis=1, keepdims=True)
        bad = ~(np.isfinite(total[:, 0]) & (total[:, 0] > 0))
        if bad.any():
            alpha[bad] = sp.init  # numerical dead end: restart the search
            total[bad] = 1.0
        alpha /= total
        best = alpha.argmax(axis=1)
        if not whole:
            bank.alpha[idx] = alpha
        # bookkeeping of every stream at once: histories, counters, the candidates for a beat
        n = bank.frame[idx]
        bank.frame[idx] = n + 1
        h = n % self._history
        bank.act[idx, h] = np.where(observed, act_sum[rows], 0.0)
        bank.onset[idx, h] = np.where(observed, onset[rows], 0.0)
        bank.per[idx, h] = np.where(observed, periodic[rows], 0.0)
        bank.audible[idx, h] = g
        if quiet.size:
            bank.confidence[idx[quiet]] *= 0.9
        p = sp.pos[best]
        t = sp.interval[best]
        # the most probable state sits just after the boundary of a beat not yet emitted
        due = observed & (p >= self.lookahead) & (p <= self.lookahead + 2) & (n - p - bank.last_beat[idx] >= 0.5 * t)
        return [(int(idx[k]), int(best[k])) for k in np.flatnonzero(due)]

    def _emit(self, bank: _Bank, r: int, state: int) -> Beat | None:
        """The beat the frame just stepped decides for row ``r`` at ``state``, if it passes the
        silence and confidence checks."""
        sp = self._sp
        n = int(bank.frame[r]) - 1
        p = int(sp.pos[state])
        t = int(sp.interval[state])
        c = n - p  # frame of the beat the most probable state is in
        size = self._history
        audible = bank.audible[r]
        if not (audible[(c - 1) % size] or audible[c % size] or audible[min(c + 1, n) % size]):
            return None  # never a beat on silence
        alpha = bank.alpha[r]
        conf = self._beat_confidence(bank, r, p, t, n)
        bank.confidence[r] = conf
        if conf < self.min_confidence:
            return None
        bank.last_beat[r] = c
        # tempo: posterior-weighted around the best tempo of the best meter (sub-frame resolution)
        mi = int(sp.meter[state])
        ti = int(sp.tempo[state])
        n_t = sp.n_tempi
        g = np.bincount(sp.group, weights=alpha, minlength=len(self.meters) * n_t)[mi * n_t : (mi + 1) * n_t]
        lo, hi = max(0, ti - 2), min(n_t, ti + 3)
        w = g[lo:hi]
        # average the beat period (the tempo grid is uniform in period, not in BPM)
        period = float(np.sum(w * self.intervals[lo:hi]) / w.sum()) if w.sum() > 0 else float(self.intervals[ti])
        bpm = 60.0 * self.fps / period
        bib = int(sp.beat[state]) + 1
        time = (c + self._subframe(bank.act[r], c, n)) / self.fps + self.time_offset
        return Beat(
            time=time,
            is_downbeat=bib == 1,
            beat_in_bar=bib,
            meter=int(self.meters[mi]),
            bpm=bpm,
            confidence=conf,
            next_beat_time=time + 60.0 / bpm,
            decided_at=n / self.fps + self.frame_delay,
        )

    def _beat_confidence(self, bank: _Bank, r: int, p: int, t: int, n: int) -> float:
        """Posterior phase concentration x rhythmicity of the recent activation, both in 0..1."""
        mass = float(bank.alpha[r][self._sp.near_phase(p)].sum(dtype=np.float64))
        m0 = self._sp.phase_mass0
        conc = max(0.0, (mass - m0) / (1.0 - m0))
        periodicity = self._periodicity(bank, r, t, n)
        rhythm = float(np.clip((periodicity - self.rhythm_low) / (self.rhythm_high - self.rhythm_low), 0.0, 1.0))
        return float(np.sqrt(conc * rhythm))

    def _subframe(self, act: np.ndarray, c: int, n: int) -> float:
        """Sub-frame offset of the activation peak nearest to frame ``c`` (in frames, -1.5..1.5).

        The peak is the largest activation (``act``: the stream's history ring) among frames
        ``c - 1 .. c + 1`` (a network may fire a frame early or late on a sharp onset), refined by
        a parabola through it and its neighbours.
        """
        size = act.size
        if c - 2 < 0 or c + 2 > n or n - (c - 2) >= size:
            return 0.0
        a = [float(act[k % size]) for k in range(c - 2, c + 3)]
        j = int(np.argmax(a[1:4])) + 1
        a0, a1, a2 = a[j - 1], a[j], a[j + 1]
        den = a0 - 2 * a1 + a2
        frac = float(np.clip(0.5 * (a0 - a2) / den, -0.5, 0.5)) if den < 0 else 0.0
        return float(np.clip(j - 2 + frac, -self.SUBFRAME_MAX, self.SUBFRAME_MAX))

    def _periodicity(self, bank: _Bank, r: int, t: int, n: int) -> float:
        """Rhythmicity 0..1 of the recent activation at the beat period (about 0 for noise).

        The normalised autocorrelation of the periodic signal (default ``beat + downbeat``) at lags
        ``t`` and ``2 t`` (each the best of +/-1 frame), averaged, times an onset-activity factor: a
        network can produce periodic activations on a steady tone, but a steady tone has no
        spectral-flux onsets.
        """
        size = self._history
        filled = min(n + 1, size)
        if filled < 3 * t + 2:
            return 0.0
        idx = np.arange(n + 1 - filled, n + 1) % size
        activity = float(bank.onset[r][idx].mean()) / self.ONSET_ACTIVITY
        if activity <= 0:
            return 0.0
        h = bank.per[r][idx]
        x = h - h.mean()
        # light smoothing so a beat that falls between two frames still correlates with itself
        x = np.convolve(x, (0.25, 0.5, 0.25), mode="same")
        e = float(x @ x)
        if e <= 1e-12:
            return 0.0
        rho = 0.0
        for k in (1, 2):  # two lags, not per state
            rho += max(float(x[lag:] @ x[:-lag]) for lag in (k * t - 1, k * t, k * t + 1)) / e / 2
        return rho * min(1.0, activity)


def _prepare(tracker: BarTracker, inputs: Sequence[tuple]) -> tuple:
    """Validate and concatenate the inputs of many streams: per frame (all streams' frames in a
    row) the observation ratios ``(n, 4)``, gate, activation sum, onset and periodic signal, and the
    frame count of each stream."""
    acts, gates, counts = [], [], []
    for a, g, _, _ in inputs:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"activations shape={a.shape} must be (n_frames, 2)")
        n = a.shape[0]
        counts.append(n)
        acts.append(a)
        if g is None:
            gates.append(np.ones(n, dtype=bool))
        else:
            g = np.asarray(g, dtype=bool).reshape(-1)
            if g.shape[0] != n:
                raise ValueError(f"gate length={g.shape[0]} must match activations frames={n}")
            gates.append(g)
    act = np.concatenate(acts) if len(acts) > 1 else acts[0]
    if not np.isfinite(act).all():
        act = np.nan_to_num(act, nan=0.0, posinf=1.0, neginf=0.0)
    total = act[:, 0] + act[:, 1]
    aux = []
    for k, name in ((2, "onset"), (3, "periodic")):
        parts = []
        for (_, _, *rest), n, start in zip(inputs, counts, np.cumsum([0, *counts[:-1]])):
            x = rest[k - 2]
            if x is None:
                parts.append(total[start : start + n])
                continue
            x = np.asarray(x, dtype=np.float64).reshape(-1)
            if x.shape[0] != n:
                raise ValueError(f"{name} length={x.shape[0]} must match activations frames={n}")
            parts.append(x)
        x = np.concatenate(parts) if len(parts) > 1 else parts[0]
        aux.append(x if np.isfinite(x).all() else np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0))
    eps = tracker.act_floor  # floor: a missing onset is strong, not infinite, evidence against a beat
    beat = np.clip(act[:, 0], eps, 1.0)
    down = np.clip(act[:, 1], eps, 1.0)
    non = np.clip(1.0 - total, eps, 1.0) / (tracker.observation_lambda - 1)
    b, d = beat / non, down / non
    # relative to non-beat: beat, downbeat, and their geometric means with non-beat (the neighbours)
    ratio = np.stack([b, d, np.sqrt(b), np.sqrt(d)], axis=1).astype(_DTYPE)
    gate = np.concatenate(gates) if len(gates) > 1 else gates[0]
    return ratio, gate, total, aux[0], aux[1], counts


def share_rows(trackers: Sequence[BarTracker]) -> None:
    """Move the state of ``trackers`` into rows of one bank so that batches of exactly these
    trackers, in this order, run without copies."""
    if not trackers:
        return
    bank = _Bank.of(trackers)
    for r, t in enumerate(trackers):
        t._bank, t._row = bank, r
