"""FileSource: decoding, resampling, chunking, pacing, looping, bad input."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beatbus.producers import AudioSourceError, Chunk, FileSource, open_source

from support.paths import BEATS_DIR

SAMPLE = BEATS_DIR / "madmom_sample.flac"
needs_sample = pytest.mark.usefixtures()  # the data is required (conftest stops the run without it)


def collect(src) -> list[Chunk]:
    with src:
        return list(src)


def check_stream(chunks: list[Chunk], hop: int) -> np.ndarray:
    """Chunks are contiguous float32 hops (the last may be short); return the audio."""
    assert chunks
    index = 0
    for i, c in enumerate(chunks):
        assert c.samples.dtype == np.float32 and c.samples.ndim == 1
        assert c.sample_index == index
        if i < len(chunks) - 1:
            assert len(c.samples) == hop
        else:
            assert 1 <= len(c.samples) <= hop
        index += len(c.samples)
    return np.concatenate([c.samples for c in chunks])


def write(path: Path, x: np.ndarray, sr: int, **kw) -> Path:
    sf.write(path, x, sr, **kw)
    return path


def tone(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def click_wav(path: Path, sr: int, seconds: float, at_s: float) -> Path:
    x = np.zeros(int(sr * seconds), np.float32)
    i = int(at_s * sr)
    x[i:i + int(0.005 * sr)] = 0.8
    return write(path, x, sr)


def onset(x: np.ndarray, thresh: float = 0.2) -> int:
    return int(np.argmax(np.abs(x) > thresh))


@needs_sample
def test_flac_resampled_length_and_content_match_librosa():
    librosa = pytest.importorskip("librosa")
    ref, _ = librosa.load(SAMPLE, sr=22050)
    src = FileSource(SAMPLE, realtime=False)
    assert (src.sr, src.hop, src.file_rate) == (22050, 441, 44100)
    y = check_stream(collect(src), 441)
    assert abs(len(y) - len(ref)) <= 441
    n = min(len(y), len(ref))
    np.testing.assert_allclose(y[:n], ref[:n], atol=1e-3)
    assert src.stats["chunks"] == -(-len(y) // 441) and src.stats["samples"] == len(y)


def test_other_rate_and_hop(tmp_path):
    path = write(tmp_path / "a.wav", tone(48000, 0.5), 48000)
    y = check_stream(collect(FileSource(path, sr=16000, hop=320, realtime=False)), 320)
    assert abs(len(y) - 8000) <= 1


@pytest.mark.parametrize("sr,hop", [(22050, 0), (22050, 442), (16000, 321), (22050, 2.5), (0, 1)])
def test_bad_hop_or_rate_rejected(tmp_path, sr, hop):
    path = write(tmp_path / "a.wav", tone(22050, 0.1), 22050)
    with pytest.raises(ValueError):
        FileSource(path, sr=sr, hop=hop)


def test_stereo_is_downmixed_by_mean(tmp_path):
    x = tone(22050, 0.3)
    path = write(tmp_path / "st.wav", np.stack([x, np.zeros_like(x)], axis=1), 22050,
                 subtype="FLOAT")
    y = check_stream(collect(FileSource(path, realtime=False)), 441)
    np.testing.assert_allclose(y, x / 2, atol=1e-6)


def test_realtime_chunks_never_come_before_they_are_due(tmp_path):
    path = write(tmp_path / "one.wav", tone(22050, 1.0), 22050)
    src = FileSource(path, realtime=True, start_wall_ns=123)
    times = []
    t0 = time.monotonic()
    with src:
        for c in src:
            times.append((time.monotonic() - t0, c))
    for t, c in times:
        due = (c.sample_index + len(c.samples)) / 22050  # the chunk's last sample is captured
        assert t >= due - 0.002, f"chunk at {c.sample_index} came {due - t:.4f} s early"
        assert c.wall_ns == 123 + c.sample_index * 1_000_000_000 // 22050
    assert 0.99 <= times[-1][0] < 3.0
    t = time.monotonic()
    collect(FileSource(path, realtime=False))
    assert time.monotonic() - t < 0.3


def test_realtime_catches_up_without_drift_or_drops(tmp_path):
    path = write(tmp_path / "one.wav", tone(22050, 1.0), 22050)
    src = FileSource(path, realtime=True)
    t0 = time.monotonic()
    chunks = []
    with src:
        for c in src:
            chunks.append(c)
            if len(chunks) == 5:
                time.sleep(0.6)  # a slow consumer: the next chunks come at once, none lost
        end = time.monotonic() - t0
    check_stream(chunks, 441)
    assert len(chunks) == 50
    assert src.stats["late_chunks"] > 0
    # on schedule: 1.0 s; a schedule that drifted by the stall: >= 1.6 s (the gap leaves room for load)
    assert 0.99 <= end < 1.5, f"schedule drifted by the stall: finished after {end:.2f} s"


def test_loop_continues_sample_index(tmp_path):
    x = tone(22050, 0.1, freq=300)  # 2205 samples: loop seams fall inside chunks
    path = write(tmp_path / "short.wav", x, 22050, subtype="FLOAT")
    src = FileSource(path, realtime=False, loop=True)
    chunks = []
    with src:
        for c in src:
            chunks.append(c)
            if len(chunks) == 30:
                break
    assert all(len(c.samples) == 441 for c in chunks)
    y = check_stream(chunks, 441)
    np.testing.assert_allclose(y, np.tile(x, 7)[:len(y)], atol=1e-6)
    assert src.stats["loops"] >= 5


def test_loop_with_resampling_keeps_full_hops(tmp_path):
    path = write(tmp_path / "short.wav", tone(44100, 0.13), 44100)
    src = FileSource(path, realtime=False, loop=True)
    with src:
        chunks = [c for _, c in zip(range(40), src)]
    check_stream(chunks, 441)
    assert all(len(c.samples) == 441 for c in chunks)


def test_close_from_another_thread_stops_iteration(tmp_path):
    path = write(tmp_path / "short.wav", tone(22050, 0.5), 22050)
    src = FileSource(path, realtime=True, loop=True)
    threading.Timer(0.2, src.close).start()
    t = time.monotonic()
    n = sum(1 for _ in src)
    assert time.monotonic() - t < 1.0 and n >= 5
    with pytest.raises(StopIteration):
        next(src)


def test_nan_and_inf_are_counted_and_zeroed(tmp_path):
    x = tone(22050, 0.2)
    x[[10, 500, 501, 3000]] = [np.nan, np.inf, -np.inf, np.nan]
    path = write(tmp_path / "nan.wav", x, 22050, subtype="FLOAT")
    src = FileSource(path, realtime=False)
    y = check_stream(collect(src), 441)
    assert src.stats["nonfinite_samples"] == 4
    assert np.isfinite(y).all()
    assert y[10] == y[500] == y[3000] == 0.0


@pytest.mark.parametrize("name,content,cause", [
    ("missing.wav", None, "no such file"),
    ("empty.wav", b"", "empty file"),
    ("corrupt.wav", b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8, "corrupt"),
    ("notes.flac", b"these are not the samples you are looking for\n" * 20, "corrupt"),
])
def test_bad_files_raise_one_line_error_naming_path(tmp_path, name, content, cause):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioSourceError) as err:
        FileSource(path)
    msg = str(err.value)
    assert str(path) in msg and cause in msg and "\n" not in msg


def test_zero_frame_wav_and_directory_raise(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0, np.float32), 22050)
    with pytest.raises(AudioSourceError, match="no audio samples"):
        FileSource(path)
    with pytest.raises(AudioSourceError, match="directory"):
        FileSource(tmp_path)


needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def encode(src: Path, dst: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, dst], check=True)
    return dst


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["auto", "ffmpeg"])
def test_mp3_decodes_with_each_decoder(tmp_path, decoder):
    mp3 = encode(click_wav(tmp_path / "c.wav", 44100, 1.0, at_s=0.5), tmp_path / "c.mp3")
    y = check_stream(collect(FileSource(mp3, realtime=False, decoder=decoder)), 441)
    assert abs(len(y) - 22050) < 0.06 * 22050  # mp3 frames pad a little
    assert abs(onset(y) - 11025) < 0.005 * 22050


@needs_ffmpeg
def test_auto_falls_back_to_ffmpeg_for_formats_libsndfile_lacks(tmp_path):
    m4a = encode(click_wav(tmp_path / "c.wav", 44100, 1.0, at_s=0.25), tmp_path / "c.m4a")
    src = FileSource(m4a, realtime=False, loop=True)
    assert type(src._dec).__name__ == "FfmpegDecoder"
    with src:
        chunks = [c for _, c in zip(range(120), src)]  # past the end: loops restart ffmpeg
    y = check_stream(chunks, 441)
    assert abs(onset(y) - 5512) < 0.005 * 22050
    assert src.stats["loops"] >= 1
    assert src._dec._proc is None  # closing kills the decoder process


def test_open_source_factory(tmp_path):
    path = write(tmp_path / "a.wav", tone(22050, 0.1), 22050)
    with open_source("file", path=path, realtime=False) as src:
        assert isinstance(src, FileSource) and len(list(src)) == 5
    with pytest.raises(ValueError, match="file, mic, click"):
        open_source("radio")
