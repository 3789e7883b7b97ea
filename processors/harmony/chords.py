"""Causal chord and key estimation from beat-synchronous chroma (no Redis, no audio here).

Chords: a hidden Markov model over 25 states, the 12 major and 12 minor triads and ``N`` (no
chord), run as a forward filter, one step per beat:

- emission: ``exp(kappa * cos(chroma, template))`` with binary triad templates (root, third,
  fifth); ``N`` scores a fixed similarity :data:`N_SIMILARITY`, and takes over outright when the
  beat is silent (its energy :data:`SILENCE_DB` below the stream's loudest beat, or below
  :data:`SILENCE_ABS_DB`);
- transition: stay with ``1 - p_change``, where ``p_change`` is the probability of a change at
  this beat from the harmonic rhythm (:mod:`.predict`: changes tend to land on downbeats); a
  change goes to the other chords in proportion to their fit to the current key (diatonic triads
  ``DIATONIC_WEIGHT`` times the others), so the key steers the chords without forbidding
  borrowed ones.

Key: Krumhansl-Kessler probe-tone profiles (major and minor, rotated to the 12 tonics) correlated
with a leaky running sum of the beats' normalised chroma (half-life :data:`KEY_HALF_LIFE_BEATS`
beats, so the posterior moves over bars, not beats); ``softmax(beta * correlation)`` is the
posterior over the 24 keys.

State indices: ``0..11`` major with root C..B, ``12..23`` minor, ``24`` = N. Keys: ``0..11``
major with tonic C..B, ``12..23`` minor.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PITCH_NAMES", "N_STATES", "NO_CHORD", "TEMPLATES", "make_templates", "KEY_PROFILES", "chord_name", "chord_of",
           "key_name", "key_of", "normalise_chroma", "diatonic_weights", "key_chord_fit", "ChordHMM", "KeyEstimator"]

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
N_STATES = 25
NO_CHORD = 24
N_SIMILARITY = 0.62          # cosine a chord must beat to be preferred over "no chord" (a flat chroma scores 0.55)
SILENCE_DB = 45.0            # a beat this far below the stream's loudest is silent: N
SILENCE_ABS_DB = -85.0
DIATONIC_WEIGHT = 4.0
PARTIALS = 0.6               # templates: harmonic h of each note weighs PARTIALS ** (h - 1)
ROOT_WEIGHT = 2.0            # and the root counts double
CHORD_COMPRESSION = 10.0     # chroma -> log(1 + c * chroma / peak) before the chord templates
KEY_COMPRESSION = 100.0      # and before the key profiles
KEY_HALF_LIFE_BEATS = 48.0
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def make_templates(partials: float = 0.0, root: float = 1.0) -> np.ndarray:
    """(24, 12) unit-norm triad templates; each note adds its first 6 harmonics, harmonic h weighted
    ``partials ** (h - 1)`` (0: the notes alone), and the root counts ``root`` times."""
    t = np.zeros((24, 12))
    for r in range(12):
        for row, third in ((r, 4), (12 + r, 3)):
            for note, w in ((r, root), (r + third, 1.0), (r + 7, 1.0)):
                for h in range(1, 7):
                    t[row, (note + int(round(12 * np.log2(h)))) % 12] += w * (partials ** (h - 1) if h > 1 else 1.0)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


TEMPLATES = make_templates(PARTIALS, ROOT_WEIGHT)     # (24, 12), unit rows
KEY_PROFILES = np.vstack([np.roll(KK_MAJOR, k) for k in range(12)] + [np.roll(KK_MINOR, k) for k in range(12)])


def chord_of(state: int) -> tuple[int | None, str]:
    """State index -> ``(root pitch class, "maj" | "min")``, or ``(None, "N")``."""
    if state == NO_CHORD:
        return None, "N"
    return state % 12, "maj" if state < 12 else "min"


def chord_name(state: int) -> str:
    """Harte-style label: ``"C:maj"``, ``"A:min"``, ``"N"``."""
    root, quality = chord_of(state)
    return "N" if root is None else f"{PITCH_NAMES[root]}:{quality}"


def key_of(key: int) -> tuple[int, str]:
    """Key index -> ``(tonic pitch class, "major" | "minor")``."""
    return key % 12, "major" if key < 12 else "minor"


def key_name(key: int) -> str:
    tonic, mode = key_of(key)
    return f"{PITCH_NAMES[tonic]} {mode}"


def normalise_chroma(chroma: np.ndarray, compression: float = CHORD_COMPRESSION) -> np.ndarray:
    """Log-compressed (``log(1 + compression * chroma / peak)``; 0: none), unit-norm chroma; zeros stay zeros."""
    c = np.asarray(chroma, dtype=float)
    peak = float(c.max()) if c.size else 0.0
    if not peak > 0:
        return np.zeros_like(c)
    c = np.log1p(compression * c / peak) if compression > 0 else c / peak
    return c / np.linalg.norm(c)


def diatonic_weights() -> np.ndarray:
    """(24 keys, 24 chords): ``DIATONIC_WEIGHT`` for the key's major/minor triads, 1 otherwise.

    Major key: I, IV, V major; ii, iii, vi minor. Minor key (natural and harmonic): i, iv, v minor;
    III, VI, VII major, and V major (the harmonic minor's dominant).
    """
    w = np.ones((24, 24))
    for k in range(12):
        for step in (0, 5, 7):
            w[k, (k + step) % 12] = DIATONIC_WEIGHT
        for step in (2, 4, 9):
            w[k, 12 + (k + step) % 12] = DIATONIC_WEIGHT
        for step in (0, 5, 7):
            w[12 + k, 12 + (k + step) % 12] = DIATONIC_WEIGHT
        for step in (3, 8, 10, 7):
            w[12 + k, (k + step) % 12] = DIATONIC_WEIGHT
    return w


_DIATONIC = diatonic_weights()


class ChordHMM:
    """Forward filter over the 25 chord states, one :meth:`step` per beat.

    Parameters
    ----------
    kappa : float
        Sharpness of the emission (per unit of cosine similarity).
    """

    def __init__(self, *, kappa: float = 40.0, compression: float = CHORD_COMPRESSION):
        self.kappa, self.compression = float(kappa), float(compression)
        self.reset()

    def reset(self) -> None:
        self.alpha = np.full(N_STATES, 1.0 / N_STATES)
        self.loudest = -np.inf
        self.n_steps = 0

    def emission(self, chroma: np.ndarray, energy_db: float) -> np.ndarray:
        """Likelihood of one beat's mean chroma under each state (up to a constant)."""
        self.loudest = max(self.loudest, float(energy_db))
        if energy_db < SILENCE_ABS_DB or energy_db < self.loudest - SILENCE_DB:
            e = np.full(N_STATES, 1e-6)
            e[NO_CHORD] = 1.0
            return e
        c = normalise_chroma(chroma, self.compression)
        sim = np.append(TEMPLATES @ c, N_SIMILARITY)
        return np.exp(self.kappa * (sim - sim.max()))

    def step(self, chroma: np.ndarray, energy_db: float, *, p_change: float = 0.1,
             key_posterior: np.ndarray | None = None) -> np.ndarray:
        """Advance one beat; returns the filtered posterior over the 25 states.

        Parameters
        ----------
        chroma : ndarray [shape=(12,)]
            The beat's mean chroma (power, any scale).
        energy_db : float
            The beat's mean frame energy (dB).
        p_change : float
            Probability that the chord changes at this beat.
        key_posterior : ndarray [shape=(24,)], optional
            Weights the chords a change may go to by their fit to the key.
        """
        p = float(np.clip(p_change, 1e-3, 0.95))
        dest = np.ones(N_STATES)
        if key_posterior is not None:
            dest[:24] = np.asarray(key_posterior, dtype=float) @ _DIATONIC
        dest /= dest.sum()
        a = self.alpha
        # stay with 1 - p; change with p, to the other states in proportion to dest
        prior = (1.0 - p) * a + p * _change_prior(a, dest)
        post = prior * self.emission(chroma, energy_db)
        total = float(post.sum())
        self.alpha = post / total if total > 0 and np.isfinite(total) else np.full(N_STATES, 1.0 / N_STATES)
        self.n_steps += 1
        return self.alpha


def _change_prior(a: np.ndarray, dest: np.ndarray) -> np.ndarray:
    """Where a change leads: from state i to j != i with ``dest[j] / (1 - dest[i])``, weighted by ``a[i]``.

    Summed over i != j that is ``dest[j] * (S - a[j] / (1 - dest[j]))`` with ``S = sum_i a[i] / (1 - dest[i])``:
    O(states), not the O(states^2) of the matrix.
    """
    r = a / np.maximum(1.0 - dest, 1e-12)
    return dest * (float(r.sum()) - r)


def key_chord_fit() -> np.ndarray:
    """(24 keys, 24 chords): how typical each major/minor triad is of each key.

    Major key: I, IV, V 1; ii, iii, vi 0.6. Minor key: i, iv, v 1; III, VI, VII 0.6 and V major
    (harmonic minor) 0.5; any other triad 0. Relative keys share their six triads: what tells
    them apart is which of them are the primary (1.0) ones, i.e. whether the frequent chords are
    major or minor.
    """
    w = np.zeros((24, 24))
    for k in range(12):
        for step in (0, 5, 7):
            w[k, (k + step) % 12] = 1.0
            w[12 + k, 12 + (k + step) % 12] = 1.0
        for step in (2, 4, 9):
            w[k, 12 + (k + step) % 12] = 0.6
        for step in (3, 8, 10):
            w[12 + k, (k + step) % 12] = 0.6
        w[12 + k, (k + 7) % 12] = 0.5
    return w


_KEY_CHORDS = key_chord_fit()


class KeyEstimator:
    """Key posterior from leaky running sums of the beats' chroma and chords.

    ``log posterior = beta * corr(chroma sum, Krumhansl-Kessler profile) + gamma * chord fit``,
    the chord fit being the share of the running chord posterior mass on the key's triads
    weighted by :func:`key_chord_fit` (pitch content alone confuses relative keys, which have the
    same notes; the chords' qualities tell them apart).

    Parameters
    ----------
    half_life_beats : float
        Beats for a past beat's weight to halve.
    beta, gamma : float
        Sharpness of the posterior per unit of correlation and of chord fit.
    """

    def __init__(self, *, half_life_beats: float = KEY_HALF_LIFE_BEATS, beta: float = 20.0, gamma: float = 40.0):
        self.decay = 0.5 ** (1.0 / float(half_life_beats))
        self.beta, self.gamma = float(beta), float(gamma)
        self.reset()

    def reset(self) -> None:
        self.hist = np.zeros(12)
        self.chords = np.zeros(24)
        self.weight = 0.0
        self.posterior = np.full(24, 1.0 / 24)

    def update(self, chroma: np.ndarray, weight: float = 1.0, chords: np.ndarray | None = None) -> np.ndarray:
        """Add an observation of ``weight`` beats (0 for a silent one: nothing moves): its chroma and,
        optionally, the chord posterior over the 25 states; returns the posterior over the 24 keys."""
        c = normalise_chroma(chroma, KEY_COMPRESSION)
        fade = self.decay ** weight
        self.hist = fade * self.hist + weight * c
        self.weight = fade * self.weight + weight
        self.chords *= fade
        if chords is not None:
            self.chords += weight * np.asarray(chords, dtype=float)[:24]
        if not self.hist.any():
            return self.posterior
        score = self.beta * self.correlations()
        mass = float(self.chords.sum())
        if mass > 0:
            score = score + self.gamma * (_KEY_CHORDS @ self.chords) / mass
        self.posterior = _softmax(score)
        return self.posterior

    def correlations(self) -> np.ndarray:
        """Pearson correlation of the running chroma with each of the 24 key profiles."""
        h = self.hist - self.hist.mean()
        p = KEY_PROFILES - KEY_PROFILES.mean(axis=1, keepdims=True)
        den = np.linalg.norm(p, axis=1) * max(float(np.linalg.norm(h)), 1e-12)
        return (p @ h) / den


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
