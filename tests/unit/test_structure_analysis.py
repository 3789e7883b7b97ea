"""Structure: features, novelty, labeller, offline and online analysis, and the bad inputs."""
import numpy as np
import pytest

from beatbus.lab.eval.sections import functional_label, load_reference, run_online, score
from beatbus.processors.structure import OnlineStructure, Segment, analyze_sections, analyze_structure, label_segments, section_at
from beatbus.processors.structure.features import FrameFeatures, beat_sync
from beatbus.processors.structure.grid import estimate_tempo
from beatbus.processors.structure.segment import novelty, pick_peaks, similarity

from support.synth_cache import load_truth, song

SR = 22050


def _part(seconds, kind, seed=0, bpm=120.0):
    """Contrasting textures: 'drums' (noise hits + A minor), 'pad' (C major organ, no drums), 'lead'."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "drums":
        hits = np.exp(-((t % (60 / bpm)) / 0.04)) * rng.standard_normal(t.size)
        chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 261.6, 329.6))
        x = 0.5 * hits + 0.1 * chord
    elif kind == "pad":
        x = sum(a * np.sign(np.sin(2 * np.pi * f * t)) for f, a in ((130.8, 0.1), (164.8, 0.08), (196.0, 0.08)))
    elif kind == "lead":
        notes = np.array([587.3, 659.3, 784.0, 880.0])[(t * 4).astype(int) % 4]
        x = 0.2 * np.sin(2 * np.pi * np.cumsum(notes) / SR) + 0.05 * rng.standard_normal(t.size)
    else:
        x = 0.15 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    return x.astype(np.float32)


def _clicks(seconds, bpm=120.0):
    return np.arange(0, seconds, 60 / bpm)


# -- features ---------------------------------------------------------------------------
def test_chroma_of_a_sine_and_streaming_equals_offline():
    t = np.arange(SR) / SR
    ff = FrameFeatures()
    _, F, _ = ff.process_offline((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    chroma = F[-1, :12]
    assert int(np.argmax(chroma)) == 9 and chroma[9] > 5 * np.delete(chroma, 9).max()   # A
    y = _part(3, "drums")
    t1, F1, o1 = ff.process_offline(y)
    ff.reset()
    parts = [ff.process(y[a:a + 441]) for a in range(0, len(y), 441)]
    F2 = np.vstack([p[1] for p in parts])
    assert np.allclose(np.concatenate([p[0] for p in parts]), t1) and np.allclose(F1, F2, atol=1e-3)
    B = beat_sync(t1, F1, np.array([0.0, 1.0, 2.0, 3.0]), centre_offset=ff.centre_offset)
    assert B.shape == (3, F1.shape[1])


def test_tempo_of_a_click_track():
    clicks = np.zeros(10 * SR, np.float32)
    clicks[(np.arange(0, 10, 0.5) * SR).astype(int)] = 1.0
    _, _, onset = FrameFeatures(hop_length=441).process_offline(clicks)
    assert estimate_tempo(onset, 50.0) == pytest.approx(120.0, rel=0.02)


def test_novelty_peaks_where_contrasting_segments_meet():
    y = np.concatenate([_part(8, "drums"), _part(8, "pad"), _part(8, "drums", seed=1)])
    ff = FrameFeatures(hop_length=882)
    times, F, _ = ff.process_offline(y)
    beats = np.concatenate([_clicks(24), [24.0]])
    B = beat_sync(times, F, beats, centre_offset=ff.centre_offset)
    nov = novelty(similarity(B), 8)
    peaks = pick_peaks(nov, beats[:-1], min_gap_s=3.5)
    assert [beats[i] for i in peaks] == pytest.approx([8.0, 16.0], abs=0.51)
    assert nov[peaks].min() > 3 * np.median(nov)
    st = analyze_structure(y, beats[:-1])
    assert [s["start"] for s in st.sections] == pytest.approx([0.0, 8.0, 16.0], abs=0.51)
    assert st.sections[0]["group"] == st.sections[2]["group"] != st.sections[1]["group"]


# -- labeller ---------------------------------------------------------------------------
def _segs(spec):
    t, out = 0.0, []
    for group, energy, dur in spec:
        out.append(Segment(t, t + dur, group, energy, silent=energy < -90))
        t += dur
    return out


def test_labeller_reads_a_pop_form():
    segs = _segs([(0, -30, 8), (1, -20, 16), (2, -14, 16), (1, -20, 16), (2, -14, 16), (3, -22, 8), (2, -14, 16),
                  (4, -28, 8)])
    labels = [lab for lab, _ in label_segments(segs, final=True)]
    assert labels == ["intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"]
    confs = dict(label_segments(segs, final=True))
    assert confs["chorus"] > confs["bridge"] and all(0 < c < 1 for _, c in label_segments(segs))
    # under way: the last section cannot be the outro yet
    assert label_segments(segs, final=False)[-1][0] != "outro"


def test_labeller_is_honest_without_repetition_and_mid_song():
    segs = _segs([(0, -20, 10), (1, -19, 10), (2, -21, 10), (3, -20, 10)])
    out = label_segments(segs, final=True)
    assert all(lab == "unknown" and conf <= 0.3 for lab, conf in out)
    # joined in the middle of a chorus: the loud first block is no intro
    segs = _segs([(0, -14, 8), (1, -20, 16), (0, -14, 16), (1, -20, 16), (0, -14, 16)])
    labels = [lab for lab, _ in label_segments(segs, final=False)]
    assert labels[0] == "chorus" and labels[1] == "verse"
    segs = _segs([(0, -120, 2), (1, -20, 16), (2, -14, 16), (1, -20, 16), (2, -14, 16)])
    out = label_segments(segs)
    assert out[0] == ("unknown", 0.3) and out[2][0] == "chorus"


# -- offline analysis of a rendered song ------------------------------------------------------
@pytest.fixture(scope="module")
def pop(tmp_path_factory):
    return song(tmp_path_factory, "pop")


def _metrics(files, sections):
    ref_int, ref_lab = load_reference(files.sections)
    est = np.array([[s["start"], s["end"]] for s in sections])
    return score(ref_int, ref_lab, est, [s["label"] for s in sections], [s.get("group", 0) for s in sections])


def test_offline_finds_and_labels_the_sections_of_a_synthetic_song(pop):
    beats = np.loadtxt(pop.beats)
    st = analyze_structure(pop.audio, beats)
    m = _metrics(pop, st.sections)
    assert m["F3"] >= 0.9 and m["F05"] >= 0.8 and m["label_acc"] >= 0.8, m
    # our own beat grid instead of the annotations: still good
    m2 = _metrics(pop, analyze_structure(pop.audio).sections)
    assert m2["F3"] >= 0.8 and m2["label_acc"] >= 0.7, m2
    secs = analyze_sections(pop.audio, beats)
    assert set(secs[0]) == {"start", "end", "label", "confidence"}
    assert secs[0]["start"] == 0 and all(a["end"] == b["start"] for a, b in zip(secs, secs[1:]))
    chorus = next(s for s in load_truth(pop)["sections"] if s["label"] == "chorus")
    assert section_at(secs, (chorus["start"] + chorus["end"]) / 2)["label"] == "chorus"
    assert section_at(secs, -1.0) is None


# -- online analysis --------------------------------------------------------------------
def test_online_confirms_boundaries_within_four_bars_and_revises_labels(pop):
    from beatbus.audio import load_audio

    y = load_audio(pop.audio, sr=SR)
    beats = np.loadtxt(pop.beats)
    ana, updates = run_online(y, beats=beats)
    ref_int, ref_lab = load_reference(pop.sections)
    confirmed = [(u.start, u.decided_at) for u in updates if u.status == "confirmed" and u.start > 0]
    m = score(ref_int, ref_lab, np.array([[s["start"], s["end"]] for s in ana.sections]),
              [s["label"] for s in ana.sections], [s["group"] for s in ana.sections], confirmed=confirmed,
              bar_s=1.6, live=updates)
    assert m["F3"] >= 0.8 and m["label_acc"] >= 0.7, m
    assert m["confirm_delay_bars_p50"] <= 4.0, m
    statuses = {u.status for u in updates}
    assert {"tentative", "confirmed", "revised"} <= statuses
    assert all(u.decided_at >= u.start for u in updates)
    assert ana.section_at(30.0) is not None and ana.sections[-1]["label"] == "outro"


def test_online_stream_joined_mid_song(pop):
    from beatbus.audio import load_audio

    y = load_audio(pop.audio, sr=SR)[int(14.4 * SR):]             # from the first chorus on
    ana, updates = run_online(y)
    assert updates and ana.sections[0]["label"] != "intro"
    assert len(ana.sections) >= 3


# -- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["short", "silence", "sustained chord", "no repetition", "nan"])
def test_bad_inputs_fall_back_honestly(case):
    t = np.arange(20 * SR) / SR
    y = {
        "short": _part(2, "drums"),
        "silence": np.zeros(20 * SR, np.float32),
        "sustained chord": (0.2 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))).astype(np.float32),
        "no repetition": np.concatenate([_part(8, k, seed=i) for i, k in enumerate(["drums", "pad", "lead", "noise"])]),
        "nan": np.where(np.arange(20 * SR) % 5 == 0, np.nan, _part(20, "drums")).astype(np.float32),
    }[case]
    secs = analyze_sections(y)
    assert secs and secs[0]["start"] == 0 and secs[-1]["end"] == pytest.approx(len(y) / SR, abs=0.05)
    if case in ("short", "silence", "sustained chord"):
        assert len(secs) == 1 and secs[0]["label"] == "unknown" and secs[0]["confidence"] <= 0.3
    if case == "no repetition":
        assert len(secs) >= 3 and all(s["label"] == "unknown" and s["confidence"] <= 0.3 for s in secs)
    ana = OnlineStructure()
    for a in range(0, len(y), 441):
        ana.process(y[a:a + 441])
    ana.finish()
    assert ana.finish() == []                                     # a second end is a no-op
    if case in ("silence", "sustained chord"):
        assert len(ana.sections) <= 1 and all(s["label"] == "unknown" for s in ana.sections)
    if case == "no repetition":
        assert all(s["confidence"] <= 0.3 for s in ana.sections)


def test_functional_label_mapping():
    assert [functional_label(x) for x in ("Intro", "Verse 2", "chorus_b", "Pre-verse", "Refrain", "Coda", "Bridge")] \
        == ["intro", "verse", "chorus", "verse", "chorus", "outro", "bridge"]
    assert functional_label("Silence") is None and functional_label("MainRiff") is None


def test_a_long_stream_runs_in_bounded_memory(pop):
    from beatbus.audio import load_audio

    y = load_audio(pop.audio, sr=SR)
    ana = OnlineStructure(history_beats=64)
    confirmed = 0
    for _ in range(3):                                        # the song three times over
        for a in range(0, len(y), 441):
            confirmed += sum(u.status == "confirmed" for u in ana.process(y[a:a + 441]))
        assert len(ana.B) < 2 * 64 and len(ana.points) == len(ana.B) + 1
    assert confirmed >= 10 and ana.updates == []              # updates are kept only when recording
    assert ana.sections and ana.sections[-1]["end"] == pytest.approx(3 * len(y) / SR, abs=0.1)


def test_a_held_label_changes_only_on_lasting_stronger_evidence():
    ana = OnlineStructure()
    held = ("chorus", 0.5, 1)
    # the labeller wavers: two analyses for "verse", one back, two more: never 3 in a row
    for lab in ("verse", "verse", "chorus", "verse", "verse"):
        held = ana._hold(7, held, (lab, 0.7 if lab == "verse" else 0.5, 2))
        assert held[0] == "chorus"
    assert ana._hold(7, held, ("verse", 0.7, 2)) == ("verse", 0.7, 2)        # third in a row, 0.2 above
    weak = ("chorus", 0.65, 1)
    for _ in range(5):                                                         # lasting, but no margin
        assert ana._hold(8, weak, ("verse", 0.7, 2))[0] == "chorus"


def test_the_event_rate_is_bounded_and_the_latest_state_wins(pop):
    from beatbus.audio import load_audio

    y = load_audio(pop.audio, sr=SR)
    y = np.concatenate([y, y[::-1], y])                       # the song, reversed, again: much to revise
    ana = OnlineStructure(record=True)
    ana.EVENTS_PER_MIN, ana.RELABELS_PER_MIN = 6, 1            # tight, to see the bound at work
    for a in range(0, len(y), 441):
        ana.process(y[a:a + 441])
    live = list(ana.updates)
    ana.finish()
    t = np.array([u.decided_at for u in live])
    assert len(live) >= 12 and max(np.searchsorted(t, x + 60.0) - i for i, x in enumerate(t)) <= 6
    said: dict = {}
    relabels = []
    for u in live:
        if u.status == "revised" and u.end is not None and u.start in said:
            assert said[u.start] != u.label                    # a change is said once, never repeated
            relabels.append(u.decided_at)
        said[u.start] = u.label
    r = np.array(relabels)
    assert all(np.searchsorted(r, x + 60.0) - i <= 1 for i, x in enumerate(r))
    # the end of the stream flushes what waited: the last word on every section is out
    final = {}
    for u in ana.updates:
        final[u.start] = u.label
    assert [final[k] for k in sorted(final) if any(abs(k - s["start"]) < 1e-3 for s in ana.sections)] \
        == [s["label"] for s in ana.sections]


def test_frame_features_at_stride_two_compute_every_second_frame_and_repeat_it():
    """Adaptive quality's half rate: the computed frames are exactly the full-rate ones, the others repeat."""
    from beatbus.processors.structure.features import FrameFeatures

    y = (np.random.default_rng(3).standard_normal(22050 * 2) * 0.1).astype(np.float32)
    full_t, full_f, _ = FrameFeatures().process(y)
    half = FrameFeatures()
    half.stride = 2
    parts = [half.process(y[i:i + 1000]) for i in range(0, y.size, 1000)]     # chunks cut across frames
    times = np.concatenate([p[0] for p in parts])
    feats = np.vstack([p[1] for p in parts])
    assert np.allclose(times, full_t[:times.size])
    fresh = np.arange(times.size) % 2 == 1
    assert np.allclose(feats[fresh], full_f[:times.size][fresh], atol=1e-4)
    assert np.array_equal(feats[2::2], feats[1:-1:2][:feats[2::2].shape[0]])      # a skipped frame repeats the last
