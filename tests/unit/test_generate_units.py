"""Generation building blocks without models: parameters, configuration, audio checks, loudness, storage."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf

from beatbus.consumers.generate.audio import decode_audio, integrated_loudness, normalize_loudness, wav_bytes
from beatbus.consumers.generate.conditioning import Conditioning, build_prompt, energy_word, estimate_key
from beatbus.consumers.generate.config import job_timeout, load_generate_config
from beatbus.consumers.generate.errors import InvalidRequest, NotFound, TooLarge, UnsupportedAudio, http_status
from beatbus.consumers.generate.spec import build_job, parse_params
from beatbus.consumers.generate.storage import Store, display_name
from beatbus.errors import ConfigError

from support.generate import encode, tone


# -- parameters ---------------------------------------------------------------------------
@pytest.mark.parametrize("params, field", [
    ({"duration": 4.9}, "duration"), ({"duration": 120.5}, "duration"),
    ({"temperature": 0.05}, "temperature"), ({"temperature": 2.1}, "temperature"),
    ({"top_k": -1}, "top_k"), ({"top_k": 501}, "top_k"), ({"top_p": 1.2}, "top_p"),
    ({"cfg_coef": 0.9}, "cfg_coef"), ({"cfg_coef": 10.5}, "cfg_coef"),
    ({"key": "H minor"}, "key"), ({"kind": "midi"}, "kind"), ({"meter": 13}, "meter"),
    ({"source": "../etc"}, "source"), ({"colour": "red"}, "colour"),
])
def test_out_of_range_parameters_name_the_field(params, field):
    with pytest.raises(InvalidRequest, match=field) as info:
        build_job(parse_params(params))
    assert http_status(info.value) == 422


@pytest.mark.parametrize("params, needle", [
    ({"melody": True}, "melody"),                                   # melody needs audio
    ({"kind": "lstm", "melody": True}, "melody"),
    ({"kind": "lstm", "tempo": 200, "bars": 2}, "bars"),            # 2.4 s: under the 5 s minimum
    ({"kind": "lstm", "tempo": 40, "bars": 40}, "bars"),            # 240 s: over 120 s
    ({"kind": "lstm", "bars": 8, "duration": 10}, "bars"),
    ({"bars": 8}, "bars"),                                          # musicgen takes a duration
    ({"render_audio": True}, "render_audio"),
])
def test_inconsistent_parameters_are_refused_before_queueing(params, needle):
    with pytest.raises(InvalidRequest, match=needle):
        build_job(parse_params(params))


def test_malformed_json_body_is_an_invalid_request():
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_params(b"{nope")


def test_job_fills_gaps_from_the_stream_and_explicit_values_win():
    cond = Conditioning(source="stage", tempo=128.4, meter=3, section="chorus", intensity=0.9, key="A minor")
    job = build_job(parse_params({"prompt": "synthwave"}), conditioning=cond, reason="section")
    req = job.request
    assert (req.tempo, req.section, req.intensity, req.key, req.source, job.meter) == (128.4, "chorus", 0.9,
                                                                                       "A minor", "stage", 3)
    assert req.prompt == "synthwave, intense chorus, 128 bpm, A minor, 3/4"
    assert req.duration == 10.0 and job.reason == "section" and req.id.startswith("g")
    explicit = build_job(parse_params({"tempo": 90, "key": "Eb major", "meter": 4}), conditioning=cond)
    assert (explicit.request.tempo, explicit.request.key, explicit.meter) == (90.0, "Eb major", 4)


def test_lstm_length_comes_from_bars_and_tempo():
    job = build_job(parse_params({"kind": "lstm", "tempo": 100, "bars": 8, "meter": 3}))
    assert job.bars == 8 and job.request.duration == pytest.approx(8 * 3 * 0.6)
    from_duration = build_job(parse_params({"kind": "lstm", "tempo": 120, "duration": 16}))
    assert from_duration.bars == 8                   # 16 s at 120 BPM in 4/4


def test_prompt_words():
    assert build_prompt() == "music"
    assert build_prompt("lofi", tempo=87.6, section="unknown", intensity=0.1) == "lofi, calm, 88 bpm"
    assert [energy_word(v) for v in (0.0, 0.3, 0.5, 0.7, 1.0)] == ["calm", "mellow", "steady", "energetic", "intense"]


# -- configuration ------------------------------------------------------------------------
def test_config_sources_and_precedence(tmp_path):
    toml = tmp_path / "beatbus.toml"
    toml.write_text('[beatbus]\nsource = "x"\n\n[generate]\npolicy = "bars"\nevery_bars = 32\nretries = 1\n')
    env = {"BEATBUS_MUSICGEN_MODEL": "/models/mg", "BEATBUS_CLAP_MODEL": "/models/clap",
           "BEATBUS_GENERATE_RETRIES": "3", "STATE_DIRECTORY": "/var/lib/beatbus:/other"}
    cfg = load_generate_config({"every_bars": 8}, config_file=toml, env=env)
    assert (cfg.policy, cfg.every_bars, cfg.retries) == ("bars", 8, 3)      # flag > env > file
    assert (cfg.musicgen_model, cfg.clap_model, cfg.state_dir) == ("/models/mg", "/models/clap", "/var/lib/beatbus")
    assert load_generate_config({}, env={"BEATBUS_STATE_DIR": "/srv/bb"}).state_dir == "/srv/bb"
    labels = load_generate_config({}, env={"BEATBUS_GENERATE_SECTION_LABELS": "verse, outro"}).section_labels
    assert labels == ["verse", "outro"]


def test_one_environment_name_per_generation_setting(capsys):
    """The model paths and the state dir have one name each; BEATBUS_GENERATE_<KEY> works for them and says so."""
    both = {"BEATBUS_MUSICGEN_MODEL": "/models/new", "BEATBUS_GENERATE_MUSICGEN_MODEL": "/models/old"}
    assert load_generate_config({}, env=both).musicgen_model == "/models/new"
    assert load_generate_config({}, env={"BEATBUS_GENERATE_STATE_DIR": "/srv/old"}).state_dir == "/srv/old"
    err = capsys.readouterr().err
    assert "beatbus: warning: BEATBUS_GENERATE_STATE_DIR is deprecated; use BEATBUS_STATE_DIR" in err


@pytest.mark.parametrize("flags, needle", [
    ({"policy": "sometimes"}, "policy"), ({"every_bars": 0}, "every_bars"), ({"overlap_seconds": 20,
                                                                             "window_seconds": 10}, "overlap"),
    ({"heartbeat": 5, "abandon_after": 4}, "abandon_after"), ({"section_labels": ["coda"]}, "section_labels"),
    ({"nonsense": 1}, None),
])
def test_bad_config_is_one_clear_error(flags, needle):
    if needle is None:      # unknown flags are ignored (they belong to other stages); unknown TOML keys are not
        load_generate_config(flags, env={})
        return
    with pytest.raises(ConfigError, match=needle):
        load_generate_config(flags, env={})


def test_unknown_toml_key_is_refused(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[generate]\ncolour = 1\n")
    with pytest.raises(ConfigError, match="colour"):
        load_generate_config({}, config_file=toml, env={})


def test_audiocraft_engine_is_optional_and_says_why(tmp_path):
    from beatbus.config import load_settings
    from beatbus.consumers.generate.backends.audiocraft import available
    from beatbus.consumers.generate.jobs import WorkerContext, load_musicgen
    from beatbus.errors import DependencyError

    if available():
        pytest.skip("audiocraft is installed here")
    cfg = load_generate_config({"musicgen_engine": "audiocraft", "state_dir": str(tmp_path)}, env={})
    ctx = WorkerContext(settings=load_settings({}, env={}), config=cfg, store=Store(cfg.state_path))
    with pytest.raises(DependencyError, match="pins torch 2.1"):
        load_musicgen(ctx)


def test_job_timeout_follows_the_requested_duration():
    cfg = load_generate_config({"job_timeout_base": 60, "job_timeout_factor": 10}, env={})
    assert job_timeout(cfg, 5) == 110 and job_timeout(cfg, 120) == 1260


# -- audio checks and loudness ----------------------------------------------------------------
@pytest.mark.parametrize("sr", [32000, 44100, 48000])
def test_bs1770_full_scale_sine_is_minus_3_lufs(sr):
    x = np.sin(2 * np.pi * 997 * np.arange(5 * sr) / sr)
    assert integrated_loudness(x, sr) == pytest.approx(-3.01, abs=0.02)
    assert integrated_loudness(0.1 * x, sr) == pytest.approx(-23.01, abs=0.02)


def test_loudness_normalisation_hits_the_target_under_the_peak_ceiling():
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(5 * 32000) * 0.02).astype(np.float32)
    y, info = normalize_loudness(noise, 32000, -14.0)
    assert integrated_loudness(y, 32000) == pytest.approx(-14.0, abs=0.05) and not info["peak_limited"]
    clicks = np.zeros(32000, dtype=np.float32)
    clicks[::3200] = 0.5                      # loud peaks, little energy: the ceiling wins
    y, info = normalize_loudness(clicks, 32000, -14.0, peak_dbfs=-1.0)
    assert info["peak_limited"] and np.max(np.abs(y)) == pytest.approx(10 ** (-1 / 20), rel=1e-3)
    silent, info = normalize_loudness(np.zeros(32000, dtype=np.float32), 32000, -14.0)
    assert not silent.any() and info["loudness_in"] is None


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_uploads_are_checked_by_decoding(fmt):
    stereo = np.stack([tone(2.0), tone(2.0) * 0.5], axis=1)
    x, sr = decode_audio(encode(stereo, 22050, fmt), max_seconds=10)
    assert sr == 22050 and x.ndim == 1 and abs(len(x) / sr - 2.0) < 0.1


@pytest.mark.parametrize("data", [b"not audio at all", b"\x89PNG\r\n\x1a\n" + bytes(200), b"RIFF\x00\x00\x00\x00WAVE",
                                  b""])
def test_non_audio_uploads_are_unsupported(data):
    with pytest.raises(UnsupportedAudio) as info:
        decode_audio(data, max_seconds=10)
    assert http_status(info.value) == 415


def test_duration_limits_apply_before_decoding_everything():
    with pytest.raises(TooLarge, match="the limit is 3 s") as info:
        decode_audio(encode(tone(4.0), 22050), max_seconds=3)
    assert http_status(info.value) == 413
    with pytest.raises(InvalidRequest, match="at least 1 s") as info:       # audio, but too short: 422
        decode_audio(encode(tone(0.5), 22050), max_seconds=3, min_seconds=1.0)
    assert http_status(info.value) == 422


def test_wav_bytes_round_trip():
    x, sr = sf.read(io.BytesIO(wav_bytes(tone(1.0, 32000), 32000)))
    assert sr == 32000 and len(x) == 32000


# -- storage ---------------------------------------------------------------------------------
def test_store_uses_generated_ids_only(tmp_path):
    store = Store(tmp_path)
    audio_id = store.save_upload(tone(1.0), 22050, origin="upload", name="../../etc/passwd\x00.wav",
                                 raw=b"raw bytes")
    assert audio_id.startswith("a") and len(audio_id) == 25
    meta = store.upload_meta(audio_id)
    assert meta["name"] == "passwd.wav" and meta["duration"] == pytest.approx(1.0)
    assert [p.name for p in (tmp_path / "generate" / "uploads").iterdir()] == [audio_id]
    x, sr = store.load_upload(audio_id)
    assert sr == 22050 and np.allclose(x, tone(1.0), atol=1e-4)
    for bad in ("../x", "a/b", "", "a" * 65, "..", "a b"):
        with pytest.raises(InvalidRequest):
            store.upload_dir(bad)
    with pytest.raises(NotFound):
        store.load_upload("a0000000000000000000000000")
    assert oct(os.stat(tmp_path / "generate").st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("name, shown", [("..\\..\\win.ini", "win.ini"), ("/abs/path/song.flac", "song.flac"),
                                         ("bell\x07.wav", "bell.wav"), ("...", ""), (None, "")])
def test_display_names_are_harmless(name, shown):
    assert display_name(name) == shown


def test_results_embeddings_and_pruning(tmp_path):
    store = Store(tmp_path)
    store.save_result("g123", {"music.mid": b"MThd"}, {"id": "g123"})
    assert store.result_file("g123").name == "music.mid" and store.result_meta("g123") == {"id": "g123"}
    with pytest.raises(ValueError):
        store.save_result("g124", {"../../evil": b"x"}, {})
    assert not (store.results / "g124").exists()            # a failed save leaves nothing behind
    audio_id = store.save_upload(tone(1.0), 22050, origin="test")
    assert store.load_embedding(audio_id) is None
    store.save_embedding(audio_id, np.ones(512) / np.sqrt(512), model="tiny")
    assert store.load_embedding(audio_id).shape == (512,) and store.upload_meta(audio_id)["embedding"]["dim"] == 512
    assert [i for i, _ in store.iter_embeddings()] == [audio_id]
    assert not list(store.results.glob("*/.tmp-*"))
    assert store.prune(results_older_than=3600) == 0
    assert store.prune(results_older_than=-1) == 1 and not (store.results / "g123").exists()


# -- key ------------------------------------------------------------------------------------
def _chords(roots_and_triads, sr=22050, seconds=1.0):
    out = []
    for triad in roots_and_triads:
        out.append(tone(seconds, sr, freqs=[440.0 * 2 ** ((m - 69) / 12) for m in triad]))
    return np.concatenate(out)


def test_key_estimate_names_major_and_minor():
    a_minor = _chords([(57, 60, 64), (62, 65, 69), (52, 56, 59), (57, 60, 64)] * 2)      # i iv V i
    c_major = _chords([(48, 52, 55), (53, 57, 60), (55, 59, 62), (48, 52, 55)] * 2)      # I IV V I
    assert estimate_key(a_minor, 22050)[0] == "A minor"
    assert estimate_key(c_major, 22050)[0] == "C major"
    assert estimate_key(np.zeros(22050), 22050) == (None, 0.0)


def test_a_first_use_download_does_not_count_against_the_jobs_timeout():
    """rq times a job with SIGALRM: the alarm is held while the model downloads, then re-armed."""
    import signal

    from beatbus.consumers.generate.models import _job_timeout_paused

    signal.alarm(100)
    try:
        with _job_timeout_paused():
            assert signal.alarm(0) == 0                     # no alarm pending during the download
        assert 98 <= signal.alarm(0) <= 100                 # the job's remaining time, restored
    finally:
        signal.alarm(0)
