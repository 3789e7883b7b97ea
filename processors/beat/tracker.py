"""Online (causal) bar-pointer HMM beat / downbeat / tempo / meter tracker.

The state space follows madmom's ``BarStateSpace`` / ``BarTransitionModel``: for every meter ``m``
(beats per bar) and every integer beat interval ``T`` (frames per beat, 55-215 BPM at 50 fps) there is
a ring of ``m * T`` states, one per frame position in the bar. The position advances one state per
frame; at each beat boundary the tempo may change with probability ``exp(-lambda * |T'/T - 1|)``
(row-normalised), and at each bar boundary the meter may change with a small probability. The
observation model is madmom's ``RNNDownBeatTrackingObservationModel``: the first ``1/obs_lambda``
of each beat are *beat* states (the first beat of the bar: *downbeat* states) and see the beat
(downbeat) activation, all other states see ``(1 - beat - downbeat) / (obs_lambda - 1)``.

Inference is the forward algorithm (filtering), one frame at a time, vectorised over states with
index arrays: a gather for the within-beat advance and one ``(K, n_tempi) @ (n_tempi, n_tempi)``
product for the beat boundaries. A beat is emitted once, when the most probable state sits
``lookahead`` frames after a beat boundary that has not been emitted yet, and only when the
tracker is confident (posterior phase concentration times activation salience) and the frame is
not gated as silence.

Module contents
---------------
Beat
    The event emitted for every tracked beat (stream times in seconds).
BarTracker
    The online tracker; ``process(activations, gate=...) -> list[Beat]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Beat", "BarTracker"]


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
        rhythm confidence of 0 and 1: white noise reaches about 0.2-0.3, steady music 0.4-0.8.
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
    HISTORY_SECONDS = 8.0  # activation history for the periodicity measure
    ONSET_ACTIVITY = 0.03  # mean onset strength below which the rhythm measure is scaled down
    RHYTHM_LOW = 0.2  # autocorrelation at the beat period that counts as no rhythm (white-noise flux: <= 0.2) ...
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
        self.rhythm_low = float(rhythm_low)
        self.rhythm_high = float(rhythm_high)
        if not 0 <= silence_decay <= 1:
            raise ValueError(f"silence_decay={silence_decay!r} must be in [0, 1]")
        self.fps = float(fps)
        self.meters = meters
        self.transition_lambda = float(transition_lambda)
        self.observation_lambda = int(observation_lambda)
        self.beat_frames = int(beat_frames)
        if not 0 < act_floor < 0.5:
            raise ValueError(f"act_floor={act_floor!r} must be in (0, 0.5)")
        self.act_floor = float(act_floor)
        self.meter_change_prob = float(meter_change_prob) if len(meters) > 1 else 0.0
        self.lookahead = int(lookahead)
        self.min_confidence = float(min_confidence)
        self.frame_delay = float(frame_delay)
        self.silence_decay = float(silence_decay)
        lo = int(np.round(60.0 * fps / max_bpm))
        hi = int(np.round(60.0 * fps / min_bpm))
        if lo < 2:
            raise ValueError(f"max_bpm={max_bpm!r} is too fast for fps={fps!r}")
        self.intervals = np.arange(lo, hi + 1)
        self._build(tempo_prior)
        self.reset()

    # ------------------------------------------------------------------ construction
    def _build(self, tempo_prior: tuple[float, float] | None) -> None:
        iv = self.intervals
        n_t = len(iv)
        meter_of, tempo_of, beat_of, pos_of = [], [], [], []
        first = []  # per meter: (m, n_t) index of the first state of each beat
        offset = 0
        for mi, m in enumerate(self.meters):
            f = np.zeros((m, n_t), dtype=np.int64)
            for ti, t in enumerate(iv):  # construction only: one block per (meter, tempo)
                q = np.arange(m * t)
                meter_of.append(np.full(m * t, mi))
                tempo_of.append(np.full(m * t, ti))
                beat_of.append(q // t)
                pos_of.append(q % t)
                f[:, ti] = offset + np.arange(m) * t
                offset += m * t
            first.append(f)
        self.n_states = offset
        self._meter = np.concatenate(meter_of)
        self._tempo = np.concatenate(tempo_of)
        self._beat = np.concatenate(beat_of)
        self._pos = np.concatenate(pos_of)
        self._interval = iv[self._tempo]
        self._meter_beats = np.asarray(self.meters)[self._meter]
        # within-beat advance: state s receives from s - 1 (first states are overwritten below)
        self._prev = np.arange(self.n_states) - 1
        self._prev[0] = 0
        dst, src, down_rows = [], [], []
        for mi, m in enumerate(self.meters):
            for b in range(m):
                dst.append(first[mi][b])
                # the last state of the previous beat = first state of this beat + T - 1 - T*...
                prev_b = (b - 1) % m
                src.append(first[mi][prev_b] + iv - 1)
                if b == 0:
                    down_rows.append(len(dst) - 1)
        self._dst = np.stack(dst)  # (K, n_t)
        self._src = np.stack(src)  # (K, n_t)
        self._down_rows = np.array(down_rows)
        # tempo transition at beat boundaries (madmom exponential_transition)
        ratio = iv[None, :] / iv[:, None]
        trans = np.exp(-self.transition_lambda * np.abs(ratio - 1.0))
        log_bpm = np.log2(60.0 * self.fps / iv)
        if tempo_prior is not None:
            centre, sigma = tempo_prior
            if not centre > 0 or not sigma > 0:
                raise ValueError(f"tempo_prior={tempo_prior!r} must be (centre_bpm > 0, sigma_octaves > 0)")
            prior_t = np.exp(-0.5 * ((log_bpm - np.log2(centre)) / sigma) ** 2)
            trans = trans * prior_t[None, :]
        else:
            prior_t = np.ones(n_t)
        trans[trans < 1e-12] = 0.0  # sparse in effect; keeps the matrix well-conditioned
        self._trans = trans / trans.sum(axis=1, keepdims=True)
        # initial distribution: prior over tempo, uniform over positions within a tempo
        w = prior_t[self._tempo] / self._interval
        self._init = w / w.sum()
        # observation class per state: 0 non-beat, 1 beat, 2 downbeat, 3/4 next to a beat/downbeat.
        # The beat region is the first 1/observation_lambda of the beat, at most beat_frames frames
        # (a wider region lets the phase slide inside it and biases beats early); its neighbours (one frame
        # before and after) see the geometric mean of beat and non-beat evidence, so a beat that
        # falls between two frames is not pushed to either side.
        region = np.clip(np.floor(self._interval / self.observation_lambda), 1, self.beat_frames).astype(np.int64)
        beat_region = self._pos < region
        near = (self._pos == region) | (self._pos == self._interval - 1)
        first_beat = self._beat == 0
        before_down = (self._pos == self._interval - 1) & (self._beat == self._meter_beats - 1)
        cls = np.zeros(self.n_states, dtype=np.int64)
        cls[near] = 3
        cls[near & ((first_beat & (self._pos == region)) | before_down)] = 4
        cls[beat_region] = 1
        cls[beat_region & first_beat] = 2
        self._cls = cls
        self._group = self._meter * n_t + self._tempo  # (meter, tempo) group per state
        self._bpm_of_tempo = 60.0 * self.fps / iv
        # uniform-posterior phase mass within +/-tol frames, to normalise the concentration
        self._phase_tol = 1
        self._phase_mass0 = float(np.sum(self._init * np.minimum(1.0, (2 * self._phase_tol + 1) / self._interval)))

    def reset(self) -> None:
        """Forget the stream: uniform posterior, no beats emitted."""
        self._alpha = self._init.copy()
        self._frame = 0  # index of the next frame to process
        self._last_beat = -(10**9)  # frame of the last emitted beat
        self._act_hist = np.zeros(int(self.HISTORY_SECONDS * self.fps))  # recent activation sums (ring buffer)
        self._onset_hist = np.zeros_like(self._act_hist)  # recent onset strength (activity)
        self._per_hist = np.zeros_like(self._act_hist)  # recent signal whose periodicity is measured
        self._rhythm = 0.0
        self._confidence = 0.0

    @property
    def confidence(self) -> float:
        """Confidence (0..1) of the most recent frame."""
        return self._confidence

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
            False where the frame carries no evidence (silence): the observation is skipped, the
            posterior drifts to uniform and nothing is emitted.
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
        act = np.asarray(activations, dtype=np.float64)
        if act.ndim != 2 or act.shape[1] != 2:
            raise ValueError(f"activations shape={act.shape} must be (n_frames, 2)")
        n = act.shape[0]
        onset = self._aux(onset, act, "onset")
        periodic = self._aux(periodic, act, "periodic")
        if gate is None:
            gate = np.ones(n, dtype=bool)
        else:
            gate = np.asarray(gate, dtype=bool).reshape(-1)
            if gate.shape[0] != n:
                raise ValueError(f"gate length={gate.shape[0]} must match activations frames={n}")
        act = np.nan_to_num(act, nan=0.0, posinf=1.0, neginf=0.0)
        eps = self.act_floor  # floor: a missing onset is strong, not infinite, evidence against a beat
        beat = np.clip(act[:, 0], eps, 1.0)
        down = np.clip(act[:, 1], eps, 1.0)
        non = np.clip(1.0 - act[:, 0] - act[:, 1], eps, 1.0) / (self.observation_lambda - 1)
        lik = np.stack([non, beat, down, np.sqrt(beat * non), np.sqrt(down * non)], axis=1)  # (n, 5)
        out: list[Beat] = []
        for i in range(n):  # frame loop only; everything per state is vectorised
            beat_ev = self._step(lik[i] if gate[i] else None, float(act[i, 0] + act[i, 1]), float(onset[i]), float(periodic[i]))
            if beat_ev is not None:
                out.append(beat_ev)
        return out

    @staticmethod
    def _aux(x: np.ndarray | None, act: np.ndarray, name: str) -> np.ndarray:
        if x is None:
            return act[:, 0] + act[:, 1]
        x = np.nan_to_num(np.asarray(x, dtype=np.float64).reshape(-1), nan=0.0, posinf=1.0, neginf=0.0)
        if x.shape[0] != act.shape[0]:
            raise ValueError(f"{name} length={x.shape[0]} must match activations frames={act.shape[0]}")
        return x

    def _step(self, lik: np.ndarray | None, act_sum: float, onset: float, periodic: float) -> Beat | None:
        a = self._alpha
        new = a[self._prev]
        inc = a[self._src] @ self._trans  # (K, n_t) mass entering each beat's first state
        if self.meter_change_prob > 0:
            d = inc[self._down_rows]
            p = self.meter_change_prob
            inc[self._down_rows] = (1 - p) * d + p * (d.sum(axis=0, keepdims=True) - d) / (len(self.meters) - 1)
        new[self._dst] = inc
        n = self._frame
        self._frame += 1
        if lik is None:
            # silence: no evidence; drift towards uniform so a long pause forgets the phase
            new = (1 - self.silence_decay) * new + self.silence_decay * self._init
            self._alpha = new / new.sum()
            self._confidence *= 0.9
            return None
        self._act_hist[n % self._act_hist.size] = act_sum
        self._onset_hist[n % self._onset_hist.size] = onset
        self._per_hist[n % self._per_hist.size] = periodic
        new *= lik[self._cls]
        s = new.sum()
        if not np.isfinite(s) or s <= 0:
            new = self._init.copy()  # numerical dead end: restart the search
        else:
            new /= s
        self._alpha = new
        state = int(np.argmax(new))
        p = int(self._pos[state])
        t = int(self._interval[state])
        c = n - p  # frame of the beat the most probable state is in
        if not (self.lookahead <= p <= self.lookahead + 2) or c - self._last_beat < 0.5 * t:
            return None
        conf = self._beat_confidence(new, p, c, n)
        self._confidence = conf
        if conf < self.min_confidence:
            return None
        self._last_beat = c
        # tempo: posterior-weighted around the best tempo of the best meter (sub-state resolution)
        mi = int(self._meter[state])
        ti = int(self._tempo[state])
        n_t = len(self.intervals)
        g = np.bincount(self._group, weights=new, minlength=len(self.meters) * n_t)[mi * n_t : (mi + 1) * n_t]
        lo, hi = max(0, ti - 2), min(n_t, ti + 3)
        w = g[lo:hi]
        bpm = float(np.sum(w * self._bpm_of_tempo[lo:hi]) / w.sum()) if w.sum() > 0 else float(self._bpm_of_tempo[ti])
        bib = int(self._beat[state]) + 1
        time = (c + self._subframe(c, n)) / self.fps
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

    def _beat_confidence(self, alpha: np.ndarray, p: int, c: int, n: int) -> float:
        """Posterior phase concentration x rhythmicity of the recent activation, both in 0..1."""
        tol = self._phase_tol
        d1 = np.abs(self._pos - p)
        d2 = self._interval - self._pos + p  # states about to start their next beat
        mass = float(alpha[(d1 <= tol) | (d2 <= tol)].sum())
        conc = max(0.0, (mass - self._phase_mass0) / (1.0 - self._phase_mass0))
        self._rhythm = self._periodicity(int(self._interval[int(np.argmax(alpha))]), n)
        rhythm = float(np.clip((self._rhythm - self.rhythm_low) / (self.rhythm_high - self.rhythm_low), 0.0, 1.0))
        return float(np.sqrt(conc * rhythm))

    def _subframe(self, c: int, n: int) -> float:
        """Sub-frame offset of the activation peak at frame ``c`` (parabolic fit, in frames)."""
        if c - 1 < 0 or c + 1 > n or n - (c - 1) >= self._act_hist.size:
            return 0.0
        size = self._act_hist.size
        a0, a1, a2 = (float(self._act_hist[k % size]) for k in (c - 1, c, c + 1))
        den = a0 - 2 * a1 + a2
        if a1 < max(a0, a2) or den >= 0:
            return 0.0
        return float(np.clip(0.5 * (a0 - a2) / den, -0.5, 0.5))

    def _periodicity(self, t: int, n: int) -> float:
        """Rhythmicity 0..1 of the recent activation at the beat period (about 0 for noise).

        The normalised autocorrelation of the periodic signal (default ``beat + downbeat``) at lags ``t`` and ``2 t`` (each the
        best of +/-1 frame), averaged, times an onset-activity factor: a network can produce
        periodic activations on a steady tone, but a steady tone has no spectral-flux onsets.
        """
        size = self._act_hist.size
        filled = min(n + 1, size)
        if filled < 3 * t + 2:
            return 0.0
        idx = np.arange(n + 1 - filled, n + 1) % size
        activity = float(self._onset_hist[idx].mean()) / self.ONSET_ACTIVITY
        if activity <= 0:
            return 0.0
        h = self._per_hist[idx]
        x = h - h.mean()
        # light smoothing so a beat that falls between two frames still correlates with itself
        x = np.convolve(x, (0.25, 0.5, 0.25), mode="same")
        e = float(x @ x)
        if e <= 1e-12:
            return 0.0
        r = 0.0
        for k in (1, 2):  # two lags, not per state
            r += max(float(x[l:] @ x[:-l]) for l in (k * t - 1, k * t, k * t + 1)) / e / 2
        return r * min(1.0, activity)
