"""README (Beats): white, pink and brown noise at any level produce no beats, on every backend.

Each clip is written to a file and tracked through the public ``track_file``: online (the streaming
``BeatProcessor`` in 20 ms chunks) and offline (``track_offline``, whose Viterbi path runs through
noise too, so it keeps only beats with music-like onsets around them). A probe found ``dsp``
inventing 1-4 low-confidence beats on pink noise (6 of 30 clips) and on the start of loud brown
noise before its flux was checked for cross-band coherence like the networks' flux is.
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from beatbus.processors.beat import track_file

SR = 22050
SECONDS = 15
COLOURS = ("white", "pink", "brown")
LEVELS = (0.01, 0.1, 0.8)  # peak amplitude: -40, -20 and -2 dBFS
SEEDS = (3, 5, 8)  # seeds on which the unchecked dsp flux invented beats (every colour)


def coloured_noise(colour: str, seed: int, n: int) -> np.ndarray:
    """Gaussian noise with power ~ 1/f^0 (white), 1/f (pink) or 1/f^2 (brown), peak 1."""
    w = np.random.default_rng(seed).standard_normal(n)
    if colour != "white":
        f = np.arange(1, n // 2 + 2, dtype=np.float64)
        w = np.fft.irfft(np.fft.rfft(w) / (np.sqrt(f) if colour == "pink" else f), n)
    return w / np.abs(w).max()


@pytest.fixture(scope="module")
def noise_files(tmp_path_factory):
    """(colour, level, seed) -> a 16-bit WAV file of that noise."""
    root = tmp_path_factory.mktemp("noise")
    files = {}
    for colour in COLOURS:
        for level in LEVELS:
            for seed in SEEDS:
                path = root / f"{colour}-{level}-{seed}.wav"
                sf.write(path, level * coloured_noise(colour, seed, SR * SECONDS), SR, subtype="PCM_16")
                files[colour, level, seed] = path
    return files


@pytest.mark.parametrize("mode", ["online", "offline"])
@pytest.mark.parametrize("backend", ["dsp", "beatnet", "small"])
@pytest.mark.parametrize("colour", COLOURS)
def test_noise_of_any_colour_and_level_gives_no_beats(noise_files, backend: str, colour: str, mode: str) -> None:
    if backend != "dsp":
        pytest.importorskip("torch")
    invented = {}
    for level in LEVELS:
        for seed in SEEDS:
            beats = track_file(noise_files[colour, level, seed], backend=backend, mode=mode)
            if beats:
                invented[level, seed] = [(round(b.time, 2), round(b.confidence, 2)) for b in beats]
    assert not invented, f"{backend} ({mode}) invented beats on {colour} noise (level, seed): (time, confidence): {invented}"


def test_the_noise_really_has_its_colour() -> None:
    # spectral slope in dB per octave between 200 Hz and 6.4 kHz: 0 (white), -3 (pink), -6 (brown)
    n = SR * SECONDS
    freqs = np.fft.rfftfreq(n, 1 / SR)
    octaves = [(200 * 2**k, 400 * 2**k) for k in range(5)]
    for colour, slope in (("white", 0.0), ("pink", -3.0), ("brown", -6.0)):
        power = np.abs(np.fft.rfft(coloured_noise(colour, 0, n))) ** 2
        db = [10 * np.log10(power[(freqs >= lo) & (freqs < hi)].mean()) for lo, hi in octaves]
        assert np.polyfit(np.arange(len(db)), db, 1)[0] == pytest.approx(slope, abs=0.5), colour
