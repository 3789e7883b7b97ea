"""The tracker's tempo prior picks the metrical level of a rhythm that fits two tempi."""
from __future__ import annotations

import numpy as np

from beatbus.processors.beat.backends import TEMPO_PRIOR
from beatbus.processors.beat.tracker import BarTracker

FPS = 50.0
PULSE = 15  # frames between pulses: 0.3 s, 200 BPM; every other pulse is strong: 0.6 s, 100 BPM


def _track(tempo_prior: tuple[float, float] | None) -> tuple[float, int]:
    """Median tracked BPM and the number of beats placed on weak pulses, for 10 s of strong
    (0.9) pulses every 0.6 s with weak (0.42) pulses halfway between them."""
    act = np.zeros((int(10 * FPS), 2))
    act[::PULSE, 0] = 0.42  # weak enough that without a prior the tracker wavers between the levels
    act[:: 2 * PULSE, 0] = 0.9
    beats = BarTracker(fps=FPS, tempo_prior=tempo_prior).process(act)
    assert len(beats) >= 10
    pulse = np.array([b.time * FPS / PULSE for b in beats])
    assert np.allclose(pulse, np.round(pulse))  # every beat sits on a pulse
    on_weak = int(np.sum(np.round(pulse).astype(int) % 2 == 1))
    return float(np.median([b.bpm for b in beats])), on_weak


def test_tempo_prior_picks_the_level_nearer_its_centre() -> None:
    assert TEMPO_PRIOR[0] == 100.0  # the backends' prior: the 100 BPM level is its centre
    bpm, on_weak = _track(TEMPO_PRIOR)
    assert abs(bpm - 100.0) < 5.0
    assert on_weak == 0  # only the strong pulses are beats
    # a flat prior counts weak pulses as beats too: the prior is what settles on 100 BPM
    bpm_flat, on_weak_flat = _track(None)
    assert abs(bpm_flat - 200.0) < 10.0
    assert on_weak_flat >= 2
