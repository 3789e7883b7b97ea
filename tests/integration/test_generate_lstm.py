"""The LSTM composer: tokens, a causal model, training on Bach chorales, MIDI written by music21."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from music21 import chord, converter, note, stream
from music21 import key as m21key
from music21 import meter as m21meter
from music21 import tempo as m21tempo

from beatbus.consumers.generate.backends.lstm import Composer, ComposerConfig, midi_seed_tokens, sample_next, train
from beatbus.consumers.generate.backends.lstm_tokens import Vocabulary, key_shift, load_corpus, parse_key, tokenize_score
from beatbus.consumers.generate.errors import InvalidRequest
from beatbus.consumers.generate.jobs import generate_local
from beatbus.consumers.generate.spec import build_job, parse_params

from support.generate import context, gen_config
from support.procs import beatbus_cmd

TINY = ComposerConfig(embed=32, hidden=48, heads=2, seq_len=32, dropout=0.0)


@pytest.fixture(scope="module")
def chorales():
    torch.set_num_threads(1)
    return load_corpus("bach", limit=3)


@pytest.fixture(scope="module")
def composer(chorales):
    return train(chorales, epochs=1, config=TINY, min_count=1, seed=0)


def onsets(score) -> int:
    """Sounding note/chord onsets (a note tied over a barline counts once)."""
    return sum(1 for n in score.flatten().notes if n.tie is None or n.tie.type == "start")


def test_tokens_of_notes_chords_and_rests():
    s = stream.Stream()
    s.append(m21key.Key("D"))
    for el in (note.Note("D4", quarterLength=1.0), chord.Chord(["D4", "F#4", "A4"], quarterLength=0.5),
               note.Rest(quarterLength=0.5), note.Rest(quarterLength=0.5), note.Note("A4", quarterLength=0.7),
               note.Note("E4", quarterLength=0.0001)):
        s.append(el)
    tokens = tokenize_score(s)          # D major -> C major: down two semitones
    assert tokens == ["n60_1.0", "c0.4.7_0.5", "r_1.0", "n67_0.75"]
    assert tokenize_score(s, normalize_key=False)[0] == "n62_1.0"
    assert key_shift(*parse_key("F# minor")) == -3 and key_shift(*parse_key("G major")) == -5
    with pytest.raises(InvalidRequest):
        parse_key("Z major")


def test_vocabulary_keeps_frequent_tokens():
    vocab = Vocabulary.build([["a", "a", "b"], ["a", "c", "c"]], min_count=2)
    assert vocab.itos[:3] == ["<pad>", "<unk>", "<bos>"] and set(vocab.itos[3:]) == {"a", "c"}
    assert vocab.decode(vocab.encode(["a", "b"])) == ["a", "<unk>"]


def test_model_is_causal(composer):
    net = composer.net.eval()
    ids = torch.tensor([[2] + composer.vocab.encode(composer.seeds[0])])
    with torch.no_grad():
        full = net(ids)
        changed = ids.clone()
        changed[0, 10:] = 5                                     # rewrite the future
        assert torch.allclose(net(changed)[0, :10], full[0, :10], atol=1e-6)
        logits, state, memory = net.step(ids[:, :4])            # incremental decoding == full pass
        steps = [logits]
        for i in range(4, ids.shape[1]):
            logits, state, memory = net.step(ids[:, i:i + 1], state, memory)
            steps.append(logits)
        assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_sampling_controls():
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 5.0, 4.0, 3.0, 1.0])
    assert {sample_next(logits, temperature=1.0, top_k=1, top_p=0.0, banned=[], generator=gen)
            for _ in range(20)} == {1}
    assert {sample_next(logits, temperature=1.0, top_k=0, top_p=0.01, banned=[], generator=gen)
            for _ in range(20)} == {1}
    assert 1 not in {sample_next(logits, temperature=2.0, top_k=0, top_p=0.0, banned=[1], generator=gen)
                     for _ in range(50)}
    cold = [sample_next(logits, temperature=0.1, top_k=3, top_p=0.0, banned=[], generator=gen) for _ in range(30)]
    assert cold.count(1) >= 29


def test_one_epoch_on_chorales_then_a_midi_music21_reads_back(composer, tmp_path):
    assert composer.meta["epochs"] == 1 and composer.meta["history"][0]["loss"] > 0
    path = composer.save(tmp_path / "c.pt")
    loaded = Composer.load(path)
    score, info = loaded.compose(tempo=100, meter=3, key="F# minor", bars=8, temperature=1.0, top_k=20, seed=1)
    again, info2 = Composer.load(path).compose(tempo=100, meter=3, key="F# minor", bars=8, temperature=1.0,
                                               top_k=20, seed=1)
    assert info["notes"] == info2["notes"] and info["tokens_per_second"] > 0
    score.write("midi", fp=tmp_path / "out.mid")
    back = converter.parse(tmp_path / "out.mid")
    flat = back.flatten()
    assert [m.number for m in flat.getElementsByClass(m21tempo.MetronomeMark)] == [100]
    assert flat.getElementsByClass(m21meter.TimeSignature)[0].ratioString == "3/4"
    assert flat.getElementsByClass(m21key.KeySignature)[0].sharps == 3            # F# minor
    assert back.highestTime == pytest.approx(8 * 3)                               # exactly 8 bars
    assert onsets(back) == info["notes"] > 0


def test_training_is_reproducible_with_a_seed(chorales):
    a = train(chorales[:2], epochs=1, config=TINY, min_count=1, seed=3)
    b = train(chorales[:2], epochs=1, config=TINY, min_count=1, seed=3)
    assert a.meta["history"] == b.meta["history"] and a.seeds == b.seeds
    assert all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))


def test_seed_midi_and_the_shipped_checkpoint(tmp_path):
    shipped = Composer.load()                     # consumers/generate/data/lstm_bach.pt
    assert shipped.meta["corpus"] == "bach" and len(shipped.vocab) > 100 and shipped.seeds
    seed = stream.Stream([m21tempo.MetronomeMark(number=90)] + [note.Note(p, quarterLength=1.0)
                                                                for p in ("A4", "C5", "E5", "A4")])
    seed.write("midi", fp=tmp_path / "seed.mid")
    tokens = midi_seed_tokens(tmp_path / "seed.mid")
    assert len(tokens) == 4 and all(t.endswith("_1.0") for t in tokens)
    score, info = shipped.compose(tempo=90, meter=4, key="D major", bars=4, seed_tokens=tokens, top_k=30, seed=2)
    assert score.highestTime == pytest.approx(16) and info["notes"] > 0
    (tmp_path / "bad.mid").write_bytes(b"MThd garbage")
    with pytest.raises(InvalidRequest, match="does not parse"):
        midi_seed_tokens(tmp_path / "bad.mid")


def test_lstm_job_renders_audio_with_fluidsynth(broker, tmp_path):
    import shutil

    if not shutil.which("fluidsynth"):
        pytest.skip("fluidsynth not installed (install.sh installs it)")
    ctx = context(None, broker, gen_config(tmp_path, {"musicgen": tmp_path, "melody": tmp_path, "clap": tmp_path}))
    spec = build_job(parse_params({"kind": "lstm", "tempo": 120, "bars": 4, "seed": 5, "render_audio": True,
                                   "key": "A minor"}))
    files, meta = generate_local(spec, ctx)
    assert set(files) == {"music.mid", "audio.wav"} and meta["bars"] == 4 and meta["notes"] > 0
    x, sr = sf.read(io.BytesIO(files["audio.wav"]))
    assert sr == 32000 and len(x) / sr >= 8.0 - 0.05 and np.abs(x).max() > 0.01     # 4 bars at 120 BPM = 8 s
    (tmp_path / "job.mid").write_bytes(files["music.mid"])
    assert onsets(converter.parse(tmp_path / "job.mid")) == meta["notes"]


def test_cli_composes_and_trains(tmp_path):
    seed = stream.Stream([note.Note("C4", quarterLength=0.5), note.Note("E4", quarterLength=0.5)])
    seed.write("midi", fp=tmp_path / "seed.mid")
    out = tmp_path / "x.mid"
    r = beatbus_cmd("generate", "lstm", "--local", "--tempo", "100", "--bars", "8", "--seed-midi",
                    str(tmp_path / "seed.mid"), "--seed", "1", "--out", str(out), "--state-dir", str(tmp_path / "s"),
                    "--torch-threads", "1", timeout=120)
    assert r.returncode == 0, r.stderr
    back = converter.parse(out)
    assert [m.number for m in back.flatten().getElementsByClass(m21tempo.MetronomeMark)] == [100]
    assert back.highestTime == pytest.approx(32)
    r = beatbus_cmd("generate", "lstm", "--local", "--tempo", "300", "--bars", "2", "--out", str(out), timeout=120)
    assert r.returncode == 2 and "bars: 2 bars of 4 at 300 BPM" in r.stderr and "Traceback" not in r.stderr
    ckpt = tmp_path / "c.pt"
    r = beatbus_cmd("train", "lstm", "--corpus", "bach", "--limit", "2", "--epochs", "1", "--embed", "16",
                    "--hidden", "16", "--heads", "1", "--seq-len", "16", "--torch-threads", "1", "--out", str(ckpt),
                    timeout=180)
    assert r.returncode == 0, r.stderr
    assert Composer.load(ckpt).meta["corpus"] == "bach"
