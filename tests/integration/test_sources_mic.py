"""MicSource through real PortAudio: an ALSA capture device that reads a raw file.

There is no sound card here, so each test writes an ALSA config whose PCM ``filein``
captures from a raw s16le file (the ``file`` plugin over ``null``) and runs MicSource in a
subprocess with HOME pointing at it: ALSA reads ``~/.asoundrc`` when PortAudio starts,
and only then. (ALSA_CONFIG_PATH naming only this file replaces the whole config, and
PortAudio 19.6 then aborts in BuildDeviceList; HOME is the simple way.) The ``null`` slave has no
clock, so this device delivers audio far faster than real time; the capture sleeps after its
first chunk, so the 2 s queue fills and later buffers are dropped, which exercises the drop
accounting.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beatbus.producers import AudioSourceError, list_devices

pytest.importorskip("pyaudio")

ROOT = Path(__file__).resolve().parents[2]
RATE, CLICK_EVERY, FIRST = 44100, 11025, 2205  # clicks every 0.25 s from 50 ms

CAPTURE = r"""
import json, sys, time
import numpy as np
from beatbus.producers import AudioSourceError, MicSource, list_devices

out = sys.argv[1]
res = {"devices": list_devices(), "errors": {}}
index = [d["index"] for d in res["devices"] if d["name"] == "filein"][0]
chunks, received = [], []
with MicSource(device=index, sr=22050) as src:
    res["opened"] = [src.device_rate, src.channels]
    for c in src:
        chunks.append(c)
        received.append(time.time_ns())
        if len(chunks) == 1:
            # Fall behind on purpose: the device delivers at least real time, so the 2 s
            # queue overflows while we sleep. (Left to the race, a loaded machine's reader
            # could keep up and drop nothing: CI saw that once.)
            time.sleep(3.0)
        gaps = sum(b.sample_index != a.sample_index + 441 for a, b in zip(chunks, chunks[1:]))
        if gaps >= 2 or len(chunks) >= 5000:
            break
    res["stats"] = dict(src.stats)
# PortAudio's overflow flag is counted, never fatal (this device cannot overrun, so the
# flag is handed to the real callback by hand).
with MicSource(device=index, sr=22050) as src:
    import pyaudio
    src._on_audio(bytes(1764), 882, {}, pyaudio.paInputOverflow)
    res["overflows"] = src.stats["overflows"]
np.save(out + ".npy", np.concatenate([c.samples for c in chunks]))
res["index"] = [c.sample_index for c in chunks]
res["lens"] = [len(c.samples) for c in chunks]
res["late_stamps"] = sum(c.wall_ns > t for c, t in zip(chunks, received))
for name, kw in {"range": dict(device=99), "rate": dict(device=index, device_rate=1),
                 "name": dict(device="no such mic")}.items():
    try:
        MicSource(**kw).close()
    except AudioSourceError as exc:
        res["errors"][name] = str(exc)
json.dump(res, open(out + ".json", "w"))
"""

NO_DEVICE = r"""
import json, sys
from beatbus.producers import AudioSourceError, MicSource, list_devices
res = {"devices": list_devices()}
try:
    MicSource()
except AudioSourceError as exc:
    res["error"] = str(exc)
json.dump(res, open(sys.argv[1], "w"))
"""


def run_py(script: str, home: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    env.pop("BEATBUS_AUDIO_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def click_track(seconds: float) -> np.ndarray:
    x = np.zeros(int(RATE * seconds), np.float32)
    t = np.arange(int(0.004 * RATE)) / RATE
    burst = np.sin(2 * np.pi * 2000 * t) * np.exp(-t / 0.001)
    for p in range(FIRST, len(x) - len(t), CLICK_EVERY):
        x[p:p + len(t)] = 0.6 * burst
    return x


def onsets(x: np.ndarray, thresh: float = 0.1, gap: int = 1000) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > thresh)
    return loud[np.r_[True, np.diff(loud) > gap]]


@pytest.fixture
def file_mic(tmp_path):
    """A HOME whose .asoundrc defines `filein`, capturing from a 4 s click track."""
    x = click_track(4.0)
    raw = tmp_path / "in.raw"
    raw.write_bytes(np.round(x * 32767).astype("<i2").tobytes())
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        'pcm.filein {\n type file\n slave.pcm { type null }\n file "/dev/null"\n'
        f' infile "{raw}"\n format "raw"\n}}\n')
    return home, x


def test_capture_through_portaudio_resamples_and_counts_drops(file_mic, tmp_path):
    home, played = file_mic
    proc = run_py(CAPTURE, home, tmp_path / "cap")
    assert "ALSA lib" not in proc.stderr and "jack" not in proc.stderr.lower()
    res = json.loads((tmp_path / "cap.json").read_text())
    y = np.load(tmp_path / "cap.npy")

    dev = [d for d in res["devices"] if d["name"] == "filein"]
    assert dev and dev[0]["max_input_channels"] >= 1 and dev[0]["default_sample_rate"] == RATE
    assert res["opened"] == [RATE, 1]
    assert set(res["lens"]) == {441}
    index = np.array(res["index"])
    # Contiguous prefix: what was queued before the reader fell behind.
    jumps = np.diff(index) - 441
    assert (jumps > 0).any(), "the reader fell behind but no buffer was dropped"
    first_gap = int(np.argmax(jumps > 0)) + 1
    assert first_gap * 441 >= 1.5 * 22050
    prefix = y[:first_gap * 441]

    # Clicks land where they were played, at half the positions (44100 -> 22050 Hz),
    # up to one constant offset; the intervals check the resampled rate.
    found = onsets(prefix)
    want = (FIRST + CLICK_EVERY * np.arange(len(found))) / 2
    assert len(found) >= 6
    offset = np.median(found - want)
    assert abs(offset) < 441 and np.all(np.abs(found - want - offset) <= 2)
    assert np.allclose(np.diff(found), CLICK_EVERY / 2, atol=2)
    # And the waveform itself survives the trip (int16 + resampling error only).
    import soxr
    ref = soxr.resample(played, RATE, 22050, quality="HQ")

    def mismatch(shift: int) -> float:
        a, b = prefix[max(shift, 0):], ref[max(-shift, 0):]
        n = min(len(a), len(b)) - 100
        return float(np.max(np.abs(a[:n] - b[:n])))

    guess = int(round(offset))
    assert min(mismatch(s) for s in range(guess - 2, guess + 3)) < 0.01

    # Dropped buffers are counted, and visible as sample_index jumps: nothing silently lost.
    assert res["stats"]["dropped_samples"] > 0
    assert int(jumps.sum()) == res["stats"]["dropped_samples"]
    assert res["late_stamps"] == 0  # no chunk is stamped after it was received
    assert res["overflows"] == 1

    errors = res["errors"]
    assert "audio device 99 does not exist" in errors["range"]
    assert "refused 1 Hz" in errors["rate"] and "filein" in errors["rate"]
    assert "no audio device matches 'no such mic'" in errors["name"]
    assert all("\n" not in m for m in errors.values())


def test_no_input_device_is_a_clear_error(tmp_path):
    home = tmp_path / "bare"
    home.mkdir()
    proc = run_py(NO_DEVICE, home, tmp_path / "res.json")
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["devices"] == []
    assert res["error"].startswith("no audio input device found")
    assert "ALSA lib" not in proc.stderr


def test_missing_pyaudio_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # makes `import pyaudio` fail
    with pytest.raises(AudioSourceError, match=r"pip install 'beatbus\[audio\]'"):
        list_devices()
    from beatbus.producers import MicSource
    with pytest.raises(AudioSourceError, match="PyAudio is not installed"):
        MicSource()


@pytest.mark.parametrize("kw", [dict(channels=0), dict(device_rate=-1), dict(hop=500)])
def test_bad_parameters_rejected_before_touching_the_device(monkeypatch, kw):
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    from beatbus.producers import MicSource
    with pytest.raises(ValueError):
        MicSource(**kw)
