"""MusicGen, MusicGen-Melody and CLAP through the real loading and generation code, on tiny random models."""
from __future__ import annotations

import numpy as np
import pytest

from beatbus.consumers.generate.backends.musicgen import MusicGen, melody_chroma
from beatbus.consumers.generate.clap import ClapEmbedder, EmbeddingIndex
from beatbus.consumers.generate.errors import ModelUnavailable
from beatbus.consumers.generate.jobs import generate_local
from beatbus.consumers.generate.spec import build_job, parse_params
from beatbus.consumers.generate.storage import Store

from support.generate import build_models, context, gen_config, tone
from support.procs import free_port


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def musicgen(models):
    return MusicGen.load(str(models["musicgen"]))


def test_tiny_models_have_the_real_shapes(musicgen, models):
    cfg = musicgen.model.config
    assert (musicgen.sr, musicgen.frame_rate, musicgen.num_codebooks) == (32000, 50, 4)     # as musicgen-small
    assert cfg.audio_encoder.num_quantizers == 4
    assert 150_000 < sum(p.numel() for p in musicgen.model.parameters()) < 300_000
    clap = ClapEmbedder.load(str(models["clap"]))
    assert (clap.sr, clap.window, clap.dim) == (48000, 480000, 512)
    assert 400_000 < sum(p.numel() for p in clap.model.parameters()) < 800_000


def test_generates_exactly_the_requested_length_reproducibly(musicgen):
    seen = []
    audio, info = musicgen.generate("energetic chorus, 120 bpm", duration=5.0, seed=7,
                                    progress=lambda done, total: seen.append((done, total)))
    assert audio.dtype == np.float32 and len(audio) == 5 * 32000 and np.isfinite(audio).all() and audio.any()
    assert info["steps"] == 250 + 3 and info["windows"] == 1                # frames + codebook delay
    assert seen[-1] == (253, 253) and [d for d, _ in seen] == list(range(1, 254))
    again, _ = musicgen.generate("energetic chorus, 120 bpm", duration=5.0, seed=7)
    other, _ = musicgen.generate("energetic chorus, 120 bpm", duration=5.0, seed=8)
    assert np.array_equal(audio, again) and not np.array_equal(audio, other)


def test_long_durations_continue_window_by_window(musicgen):
    plan = musicgen.plan(7.3, window_seconds=3.0, overlap_seconds=1.0)
    assert plan == [150, 100, 100, 15] and sum(plan) == 365                # 7.3 s = 365 frames at 50 Hz
    audio, info = musicgen.generate("calm", duration=7.3, window_seconds=3.0, overlap_seconds=1.0, seed=1)
    assert len(audio) == round(7.3 * 32000) and info["windows"] == 4
    assert info["steps"] == musicgen.steps(plan) == 365 + 4 * 3
    # the joins are cross-faded: no sample jumps far beyond what the audio does elsewhere
    jumps = np.abs(np.diff(audio))
    assert jumps.max() < 1.0


def test_upload_continuation_returns_only_new_audio(musicgen):
    prompt = tone(3.0, 22050)
    audio, info = musicgen.generate("calm", duration=5.0, audio_prompt=(prompt, 22050), window_seconds=4.0,
                                    overlap_seconds=2.0, seed=3)
    assert len(audio) == 5 * 32000
    assert musicgen.plan(5.0, window_seconds=4.0, overlap_seconds=2.0, prompted=True) == [100, 100, 50]
    assert info["windows"] == 3


def test_melody_chroma_matches_musicgen_melody_preprocessing():
    a440 = np.sin(2 * np.pi * 440 * np.arange(32000 * 4) / 32000).astype(np.float32)
    chroma = melody_chroma(a440, 32000, frames=40)
    assert tuple(chroma.shape) == (40, 12)
    assert (chroma.sum(-1) == 1).all()                                      # one-hot per frame
    assert (chroma[:25].argmax(-1) == 9).all()                              # A (C = 0), while the tone lasts
    full = melody_chroma(a440, 32000, frames=235)                           # the 30 s reference chunk
    assert tuple(full.shape) == (235, 12)


def test_melody_conditioned_generation(models):
    melody = MusicGen.load(str(models["melody"]), melody=True)
    assert melody.melody and melody.chroma_frames == 40
    audio, info = melody.generate("calm", duration=5.0, melody=(tone(2.0, 22050), 22050), window_seconds=3.0,
                                  overlap_seconds=1.0, seed=2)
    assert len(audio) == 5 * 32000 and info["windows"] == 2                 # 150 + 100 frames
    with pytest.raises(ValueError, match="MusicGen-Melody"):
        MusicGen.load(str(models["musicgen"])).generate("x", duration=1.0, melody=(tone(1.0), 22050))


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")     # nothing listens
    with pytest.raises(ModelUnavailable, match="not in the Hugging Face cache .* hub at http://127.0.0.1:.* is "
                                               "unreachable .*BEATBUS_MUSICGEN_MODEL"):
        MusicGen.load("facebook/musicgen-small")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailable, match="cannot be downloaded: HF_HUB_OFFLINE is set"):
        MusicGen.load("facebook/musicgen-small")
    with pytest.raises(ModelUnavailable, match="directory .*nothing-here does not exist"):
        MusicGen.load(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelUnavailable, match=r"in .* cannot be loaded .*; give a directory saved by save_pretrained"):
        ClapEmbedder.load(str(tmp_path))


def test_local_job_writes_a_loudness_normalised_wav_and_metadata(broker, models, tmp_path):
    import io

    import soundfile as sf

    from beatbus.consumers.generate.audio import integrated_loudness

    ctx = context(None, broker, gen_config(tmp_path, models, loudness_lufs=-20.0))
    files, meta = generate_local(build_job(parse_params({"prompt": "lofi", "duration": 5, "seed": 4,
                                                         "temperature": 0.8, "top_p": 0.9})), ctx)
    x, sr = sf.read(io.BytesIO(files["audio.wav"]))
    assert sr == 32000 and len(x) == 160000
    measured = integrated_loudness(x, sr)
    assert measured == pytest.approx(-20.0, abs=0.2) or (meta["peak_limited"] and measured < -20.0)
    assert np.max(np.abs(x)) <= 10 ** (-1 / 20) + 1e-3
    assert meta["mode"] == "text" and meta["model"] == str(models["musicgen"]) and meta["steps"] == 253


# -- CLAP ------------------------------------------------------------------------------------
def test_clap_embeddings_are_512d_unit_vectors_and_deterministic(models):
    clap = ClapEmbedder.load(str(models["clap"]))
    long = tone(25.0, 22050)                                   # three 10 s windows, averaged
    v1, v2 = clap.embed(long, 22050), clap.embed(long, 22050)
    assert v1.shape == (512,) and v1.dtype == np.float32
    assert np.linalg.norm(v1) == pytest.approx(1.0, abs=1e-5) and np.array_equal(v1, v2)


def test_nearest_neighbours_over_stored_embeddings(models, tmp_path):
    clap = ClapEmbedder.load(str(models["clap"]))
    store = Store(tmp_path)
    sounds = {"low": tone(3.0, freqs=(110.0,)), "low2": tone(3.0, freqs=(110.0,), amp=0.1),
              "noise": (np.random.default_rng(0).standard_normal(3 * 22050) * 0.2).astype(np.float32)}
    ids = {}
    for name, x in sounds.items():
        ids[name] = store.save_upload(x, 22050, origin="test")
        store.save_embedding(ids[name], clap.embed(x, 22050), model="tiny")
    index = EmbeddingIndex(store)
    hits = index.similar(ids["low"], k=5)
    assert [h[0] for h in hits] == [ids["low2"], ids["noise"]]             # itself excluded, best first
    assert hits[0][1] >= hits[1][1] and -1.0 <= hits[1][1] <= 1.0 + 1e-6
    assert len(index.search(clap.embed(sounds["noise"], 22050), k=1)) == 1
    extra = store.save_upload(tone(1.0), 22050, origin="test")              # the index refreshes on change
    store.save_embedding(extra, clap.embed(tone(1.0), 22050), model="tiny")
    assert len(index) == 4
