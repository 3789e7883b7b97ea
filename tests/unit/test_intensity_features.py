"""Intensity features on signals with known answers; streaming equals whole-signal; bad input."""
import numpy as np
import pytest

from beatbus.kweight import SILENCE_LUFS, k_weighting, lufs
from beatbus.processors.beat.intensity import BeatIntensity
from beatbus.processors.intensity import IntensityFeatures

SR = 22050


def _tone(freq, seconds, amp, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _last(x, **kw):
    return IntensityFeatures(**kw).process(x)[-1]


def test_k_filter_matches_the_bs1770_table_at_48k():
    (b1, a1), (b2, a2) = k_weighting(48000)
    assert np.allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    assert np.allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    assert np.allclose(b2, [1.0, -2.0, 1.0]) and np.allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)
    with pytest.raises(ValueError, match="sr"):
        k_weighting(2000)


@pytest.mark.parametrize("sr", [22050, 48000])
def test_minus_20_dbfs_1khz_tone_reads_minus_23_lufs(sr):
    f = _last(_tone(1000.0, 4.0, 0.1, sr), sr=sr, hop_length=sr // 50)
    assert f.loudness == pytest.approx(-23.01, abs=0.1)      # BS.1770: -3.01 LUFS for a 0 dBFS sine
    assert f.momentary == pytest.approx(-23.01, abs=0.1)
    assert f.rms == pytest.approx(0.1 / np.sqrt(2), rel=0.01)


def test_short_term_loudness_is_a_3_second_window():
    x = np.concatenate([_tone(1000.0, 4.0, 0.1), _tone(1000.0, 1.5, 0.01)])
    frames = IntensityFeatures().process(x)
    last = frames[-1]
    # 1.5 s at -43 and 1.5 s at -23 LUFS in the window: the mean power is half of -23's
    assert last.loudness == pytest.approx(-23.01 - 3.0, abs=0.2)
    assert last.momentary == pytest.approx(-43.0, abs=0.3)


def test_1khz_sine_centroid():
    assert _last(_tone(1000.0, 1.0, 0.5)).centroid == pytest.approx(1000.0, abs=15.0)
    assert _last(_tone(3000.0, 1.0, 0.5)).centroid == pytest.approx(3000.0, abs=30.0)


def test_bass_only_signal_lands_in_the_bass_band():
    x = _tone(60.0, 2.0, 0.4) + _tone(120.0, 2.0, 0.3)
    f = _last(x)
    assert f.bass > 0.99 and f.mids < 0.01 and f.highs < 1e-3
    assert f.bass + f.mids + f.highs == pytest.approx(1.0)
    hi = _last(_tone(8000.0, 1.0, 0.3))
    assert hi.highs > 0.99 and hi.bass < 1e-3
    mid = _last(_tone(1000.0, 1.0, 0.3))
    assert mid.mids > 0.99


def test_flux_rises_on_onsets_not_on_a_steady_tone():
    steady = IntensityFeatures().process(_tone(440.0, 3.0, 0.3))
    clicks = np.zeros(3 * SR, np.float32)
    clicks[::SR // 4] = 0.9                                     # 4 clicks per second
    hits = IntensityFeatures().process(clicks + _tone(440.0, 3.0, 0.05))
    assert max(f.flux for f in steady[60:]) < 0.01
    assert np.mean([f.flux for f in hits[60:]]) > 10 * np.mean([f.flux for f in steady[60:]])


def test_streaming_in_any_chunks_equals_one_block():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(3 * SR) * 0.1).astype(np.float32)
    whole = IntensityFeatures().process(x)
    feats, parts = IntensityFeatures(), []
    for a in range(0, len(x), 300):
        parts += feats.process(x[a:a + 300])
    assert len(whole) == len(parts) == 3 * 50
    for p, q in zip(whole, parts):
        assert p.time == q.time and p.loudness == pytest.approx(q.loudness) and p.flux == pytest.approx(q.flux)
        assert p.intensity == pytest.approx(q.intensity)


def test_silence_nan_and_short_input_do_not_break_it():
    feats = IntensityFeatures()
    assert feats.process(np.zeros(100, np.float32)) == []          # not a whole hop yet
    frames = feats.process(np.zeros(SR, np.float32))
    f = frames[-1]
    assert (f.rms, f.loudness, f.flux, f.centroid, f.bass, f.mids, f.highs, f.intensity) == \
        (0.0, SILENCE_LUFS, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    bad = _tone(1000.0, 0.5, 0.1)
    bad[::7] = np.nan
    bad[3] = np.inf
    out = feats.process(bad)
    assert all(np.isfinite([g.loudness, g.flux, g.centroid, g.intensity]).all() for g in out)
    assert feats.n_bad_samples == int(np.ceil(len(bad) / 7)) + 1
    assert lufs(0.0) == SILENCE_LUFS
    with pytest.raises(ValueError, match="hop_length"):
        IntensityFeatures(hop_length=4)


def _dynamic_song(level_db):
    """8 s loud / 8 s 15 dB quieter, twice: the same shape at any overall level."""
    rng = np.random.default_rng(1)
    parts = []
    for gain_db in (0, -15, 0, -15):
        n = rng.standard_normal(8 * SR).astype(np.float32)
        env = np.tile(np.exp(-np.arange(SR // 2) / 2000.0), 16)[:8 * SR].astype(np.float32)   # a beat
        parts.append(n * env * 10 ** ((level_db + gain_db) / 20))
    return np.concatenate(parts)


@pytest.mark.parametrize("level_db", [-8.0, -38.0])
def test_adaptive_intensity_uses_the_range_for_loud_and_quiet_masters(level_db):
    frames = IntensityFeatures().process(_dynamic_song(level_db))
    inten = np.array([f.intensity for f in frames])
    loud = inten[(16 + 2) * 50:24 * 50]                          # the second loud part (adapted by then)
    quiet = inten[(24 + 2) * 50:32 * 50]
    assert loud.mean() > 0.7 and quiet.mean() < 0.4, (loud.mean(), quiet.mean())


def test_per_beat_intensity_follows_the_music():
    pbi = BeatIntensity(sr=SR)
    pbi.push(np.zeros(SR // 2, np.float32))
    assert pbi.at_beat(0.5) == 0.0
    x = _dynamic_song(-12.0)
    levels = []
    for a in range(0, 24 * SR, 441):            # 20 ms chunks, asked at every beat (120 BPM), as live
        pbi.push(x[a:a + 441])
        if (a + 441) % (SR // 2) < 441:
            levels.append(pbi.at_beat(0.5))
    quiet, loud = levels[31], levels[47]        # 16 s: the end of the first quiet part; 24 s: of a loud one
    assert loud > quiet + 0.2 and 0.0 <= quiet <= 1.0
