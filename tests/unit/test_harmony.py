"""Harmony analysis without a broker: chroma, chord templates and HMM, key, harmonic rhythm, the online tracker."""
import numpy as np
import pytest

from beatbus.lab.synth import SongPlan, beat_grid, chord_truth, key_truth
from beatbus.processors.harmony.chords import NO_CHORD, ChordHMM, KeyEstimator, chord_name, chord_of, key_name, normalise_chroma
from beatbus.processors.harmony.features import ChromaFrames
from beatbus.processors.harmony.online import ChordUpdate, KeyUpdate, OnlineHarmony
from beatbus.processors.harmony.predict import HarmonicRhythm

from support.harmony import MAJOR, MINOR, beat_rows, progression, synth_chords

SR, HOP = 22050, 441


def _state(root: int, minor: bool) -> int:
    return root % 12 + (12 if minor else 0)


def _chroma(pcs, rng, noise=0.15, extra=()):
    """A beat's chroma: the chord's pitch classes, a louder root, a stray (melody) note and noise."""
    c = rng.uniform(0, noise, 12)
    for k, pc in enumerate(pcs):
        c[pc % 12] += 1.5 if k == 0 else 1.0
    for pc in extra:
        c[pc % 12] += 0.6
    return c


def test_chroma_frames_are_librosas_chroma_stft():
    import librosa

    rng = np.random.default_rng(0)
    hop, n_fft = 512, 4096                    # a hop that divides the frame, so the frames line up
    t = np.arange(3 * SR) / SR
    y = (0.3 * np.sin(2 * np.pi * 261.6 * t) + 0.2 * np.sin(2 * np.pi * 392.0 * t)
         + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    cf = ChromaFrames(sr=SR, hop_length=hop, n_fft=n_fft)
    times, ours, energy = cf.process_offline(y)
    ref = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=n_fft, hop_length=hop, center=False, norm=None, tuning=0.0)
    first = n_fft // hop - 1                  # our frame k ends at (k + 1) * hop, librosa's j at j * hop + n_fft
    assert np.allclose(ours[first:first + ref.shape[1]].T, ref, rtol=1e-4, atol=1e-6 * ref.max())
    # streaming in odd chunks gives the same frames, at the same times
    cf.reset()
    parts = [cf.process(y[a:a + 777]) for a in range(0, len(y), 777)]
    assert np.allclose(np.vstack([p[1] for p in parts]), ours, rtol=1e-5, atol=1e-6 * ours.max())
    assert np.allclose(np.concatenate([p[0] for p in parts]), times)
    assert times[0] == pytest.approx(hop / SR) and np.allclose(np.diff(times), hop / SR)
    assert np.argmax(ours[-1]) in (0, 7) and energy.shape == times.shape


def test_every_triad_is_recognised_from_its_notes_and_silence_is_no_chord():
    rng = np.random.default_rng(1)
    hmm = ChordHMM()
    for root in range(12):
        for minor, shape in ((False, MAJOR), (True, MINOR)):
            e = hmm.emission(_chroma([root + s for s in shape], rng), -20.0)
            assert int(np.argmax(e)) == _state(root, minor), (root, minor, chord_name(int(np.argmax(e))))
    assert int(np.argmax(hmm.emission(np.zeros(12), -120.0))) == NO_CHORD
    assert int(np.argmax(hmm.emission(np.ones(12), -20.0))) == NO_CHORD          # no triad in a flat chroma
    assert chord_of(NO_CHORD) == (None, "N") and chord_name(21) == "A:min" and chord_of(7) == (7, "maj")
    assert key_name(12 + 9) == "A minor" and normalise_chroma(np.zeros(12)).sum() == 0


def test_the_filter_follows_a_progression_and_changes_on_the_change_beat():
    rng = np.random.default_rng(2)
    hmm, rhythm = ChordHMM(), HarmonicRhythm()
    scale = (0, 2, 4, 5, 7, 9, 11)
    truth, found = [], []
    for bar in range(24):
        root, minor = progression(7, False)[bar % 4]
        for pos in range(1, 5):
            c = _chroma([root + s for s in (MINOR if minor else MAJOR)], rng, noise=0.3,
                        extra=[7 + scale[rng.integers(7)]])                     # a melody note of G major
            post = hmm.step(c, -20.0, p_change=rhythm.p_change(pos, 4))
            truth.append(_state(root, minor))
            found.append(int(np.argmax(post)))
            if pos == 1 and bar:
                rhythm.observe(bar * 4, 1)
    found_arr, truth_arr = np.array(found), np.array(truth)
    assert np.mean(found_arr == truth_arr) >= 0.95
    downbeats = np.arange(4, len(truth), 4)
    assert np.mean(found_arr[downbeats] == truth_arr[downbeats]) >= 0.9     # decided on the change's own beat


@pytest.mark.parametrize("key,minor", [(7, False), (4, True), (0, False), (9, True), (2, True)])
def test_the_key_tells_a_major_key_from_its_relative_minor(key, minor):
    rng = np.random.default_rng(key)
    hmm, keys = ChordHMM(), KeyEstimator()
    scale = (0, 2, 3, 5, 7, 8, 10) if minor else (0, 2, 4, 5, 7, 9, 11)
    for bar in range(16):
        root, is_minor = progression(key, minor)[bar % 4]
        for _ in range(4):
            c = _chroma([root + s for s in (MINOR if is_minor else MAJOR)], rng, noise=0.3,
                        extra=[key + scale[rng.integers(7)]])
            post = keys.update(c, 1.0, hmm.alpha if hmm.n_steps else None)
            hmm.step(c, -20.0, p_change=0.25, key_posterior=post)
    assert int(np.argmax(keys.posterior)) == key + (12 if minor else 0), key_name(int(np.argmax(keys.posterior)))
    assert keys.posterior.max() > 0.5


def test_harmonic_rhythm_expects_bars_then_learns_the_change_grid():
    r = HarmonicRhythm()
    assert r.grid is None and r.predict(0, 1, 4) == 4 and r.predict(5, 2, 4) == 3    # the next downbeat
    assert r.predict(5) is None                                    # no grid, no bars: no prediction
    assert r.p_change(0, 1, 4) > 10 * r.p_change(1, 2, 4)          # changes are expected on downbeats
    for bar in range(1, 9):                                        # two bars per chord
        r.observe(8 * bar)
    assert r.grid == (8, 0) and r.predict(64) == 8 and r.predict(65) == 7
    late = HarmonicRhythm()
    for bar in range(1, 13):                                       # one per bar, but the tracker's
        late.observe(4 * bar + 2, 3)                               # downbeat is two beats off
    assert late.grid == (4, 2) and late.p_change(50, 1, 4) > 5 * late.p_change(48, 3, 4)
    assert late.predict(50, 1, 4) == 4 and late.predict(49, 4, 4) == 1
    for k in (51, 52, 53):                                         # a flurry of wrong changes
        late.observe(k)
    assert late.grid == (4, 2)
    late.observe(40)                                               # older than the newest change: ignored
    assert 40 not in late.changes
    mixed = HarmonicRhythm()                                       # 1, 1, 2 bars per chord in 3/4
    for g in (0, 3, 6, 12, 15, 18, 24, 27, 30, 36):
        mixed.observe(g)
    assert mixed.grid == (3, 0)


def test_chord_truth_of_a_plan_is_one_diatonic_triad_per_bar():
    plan = SongPlan(name="t", tempo=120.0, meter="3/4", key=57, minor=True,
                    sections=({"label": "verse", "bars": 4}, {"label": "chorus", "bars": 4}))
    rows = chord_truth(plan, seed=3)
    grid = beat_grid(plan)
    downbeats = grid.times[grid.beat_in_bar == 1]
    assert key_truth(plan) == (9, "minor")
    assert rows[0][0] == 0 and rows[-1][1] == pytest.approx(grid.end)
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))                    # contiguous
    assert all(np.min(np.abs(downbeats - a)) < 1e-9 for a, _, _ in rows)        # changes on downbeats
    assert all(a[2] != b[2] for a, b in zip(rows, rows[1:]))                    # each row boundary is a change
    a_minor = {"A:min", "B:dim", "C:maj", "D:min", "E:min", "F:maj", "G:maj"}
    assert {lab for *_, lab in rows} <= a_minor
    assert rows == chord_truth(plan, seed=3) and rows != chord_truth(plan, seed=4)


# -- the online tracker on synthesised audio ---------------------------------------------
def _run(y, beats, chunk=HOP):
    ana = OnlineHarmony(sr=SR, hop_length=HOP)
    out, k = [], 0
    for i in range(0, len(y), chunk):
        out += ana.process(y[i:i + chunk])
        now = min(i + chunk, len(y)) / SR
        while k < len(beats) and beats[k]["time"] + 0.1 <= now:         # as a beat tracker's events
            out += ana.add_beat(**beats[k])
            k += 1
    return ana, out + ana.finish()


def test_online_key_chords_and_next_change_on_the_bar_grid():
    bars = [c for _ in range(4) for c in progression(7, False)]                # G: G D Em C, 16 bars at 120 BPM
    y = synth_chords(bars, 2.0)
    _, ups = _run(y, beat_rows(len(bars) * 4 + 1, 0.5))
    keys = [u for u in ups if isinstance(u, KeyUpdate)]
    chords = [u for u in ups if isinstance(u, ChordUpdate)]
    # G and D alone could be I-V of G or IV-V of D: the key is sure by the fourth bar
    assert keys and (keys[-1].tonic, keys[-1].mode) == (7, "major") and len(keys) <= 2
    assert keys[-1].decided_at < 12.0 and keys[-1].confidence > 0.9
    assert [(u.root, u.quality) for u in chords] == [(r % 12, "min" if m else "maj") for r, m in bars]
    for k, u in enumerate(chords):
        assert u.time == pytest.approx(2.0 * k) and u.beat_in_bar == 1 and u.bar == k
        assert 0 < u.decided_at - u.time < 0.5                                # half a beat + the window
        assert u.next_change_beats == 4 and u.next_change == pytest.approx(u.time + 2.0)
        assert u.confidence >= 0.8


def test_without_beats_a_fixed_grid_still_names_the_chords():
    y = synth_chords([(0, False), (9, True), (5, False), (7, False)] * 2, 2.0, seed=1)
    _, ups = _run(y, [])
    chords = [u for u in ups if isinstance(u, ChordUpdate)]
    assert [(u.root, u.quality) for u in chords] == [(0, "maj"), (9, "min"), (5, "maj"), (7, "maj")] * 2
    assert all(u.next_change is None and u.beat is None for u in chords)
    assert all(abs(u.time - round(u.time / 2.0) * 2.0) <= 0.5 for u in chords)       # on the 0.5 s grid
    assert all(u.decided_at - u.time <= 1.5 for u in chords)


def test_late_beats_of_a_catch_up_are_not_mistaken_for_no_beats():
    """Audio processed far ahead of the beats (a replay): with the wall clock, no fallback grid."""
    bars = [c for _ in range(2) for c in progression(2, False)]
    y = synth_chords(bars, 2.0, seed=3)
    ana = OnlineHarmony(sr=SR, hop_length=HOP)
    ups = ana.process(y, wall=100.0)                                           # 16 s of audio at once
    ups += [u for b in beat_rows(len(bars) * 4 + 1, 0.5) for u in ana.add_beat(**b, wall=100.5)]
    chords = [u for u in ups if isinstance(u, ChordUpdate)]
    assert [(u.root, u.quality) for u in chords][:len(bars) - 1] == [(r % 12, "min" if m else "maj")
                                                                     for r, m in bars][:len(bars) - 1]
    assert all(u.beat is not None for u in chords)


def test_events_are_bounded_whatever_the_input():
    rng = np.random.default_rng(5)
    chords = [(int(rng.integers(12)), bool(rng.integers(2))) for _ in range(240)]
    y = synth_chords(chords, 0.25, seed=5)                                     # a new chord every 250 ms, 60 s
    _, ups = _run(y, beat_rows(240, 0.25, meter=4))
    minutes = len(y) / SR / 60
    n_chords = sum(isinstance(u, ChordUpdate) for u in ups)
    n_keys = sum(isinstance(u, KeyUpdate) for u in ups)
    assert n_chords <= OnlineHarmony.CHORD_EVENTS_PER_MIN * minutes + OnlineHarmony.CHORD_BURST + 1
    assert n_keys <= OnlineHarmony.KEY_EVENTS_PER_MIN * minutes + 2
    assert n_chords >= 30                                                      # it still follows as it may
