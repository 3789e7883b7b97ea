"""ClickSource: the rendered clicks are where click_times says, chunking is invisible."""
from __future__ import annotations

import time

import numpy as np
import pytest

from beatbus.producers import ClickSource, click_times, open_source


def render_all(src: ClickSource) -> np.ndarray:
    with src:
        chunks = list(src)
    index = 0
    for c in chunks:
        assert c.sample_index == index and c.samples.dtype == np.float32
        index += len(c.samples)
    return np.concatenate([c.samples for c in chunks])


def onsets(x: np.ndarray, thresh: float = 0.05, gap: int = 1000) -> list[int]:
    """First sample above thresh after at least `gap` quiet samples."""
    loud = np.flatnonzero(np.abs(x) > thresh)
    return [int(i) for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > gap]


def test_click_times_truth():
    assert click_times(120, 2.0) == [(0.0, 1), (0.5, 2), (1.0, 3), (1.5, 4)]
    got = click_times(100, 1.8, meter=3)  # 1.8 s is the end, not a beat
    assert [b for _, b in got] == [1, 2, 3] and np.allclose([t for t, _ in got], [0, 0.6, 1.2])
    assert len(click_times(400, 1.0)) == 7 and click_times(60, 5.0, meter=1)[3] == (3.0, 1)


@pytest.mark.parametrize("bpm,meter", [(137.0, 4), (90, 3), (400, 7)])
def test_rendered_clicks_match_click_times(bpm, meter):
    sr, duration = 22050, 4.0
    x = render_all(ClickSource(bpm, sr=sr, realtime=False, meter=meter, duration=duration))
    assert len(x) == round(duration * sr)
    truth = click_times(bpm, duration, meter)
    found = onsets(x, gap=int(0.02 * sr))
    assert len(found) == len(truth)
    for i, (t, _) in zip(found, truth):
        assert abs(i - round(t * sr)) <= 2
    peaks = [np.max(np.abs(x[i:i + 400])) for i in found]
    for p, (_, beat) in zip(peaks, truth):
        assert (p > 0.8) if beat == 1 else (0.4 < p < 0.6)  # downbeats are louder


def test_downbeat_is_higher_pitched():
    sr = 22050
    x = render_all(ClickSource(120, sr=sr, realtime=False, duration=1.0))
    burst = int(0.02 * sr)

    def pitch(seg):
        spec = np.abs(np.fft.rfft(seg, 8192))
        return np.argmax(spec) * sr / 8192

    assert abs(pitch(x[:burst]) - 1500) < 20           # beat 1
    assert abs(pitch(x[11025:11025 + burst]) - 1000) < 20  # beat 2


def test_chunking_is_invisible():
    # A hop that does not divide the beat period: clicks straddle chunk boundaries.
    a = render_all(ClickSource(171, sr=16000, hop=97, realtime=False, duration=3.0))
    b = ClickSource(171, sr=16000, hop=320, realtime=False, duration=3.0).render(0, 48000)
    np.testing.assert_array_equal(a, b)


def test_endless_until_closed_and_paced():
    src = ClickSource(120, realtime=True)
    t = time.monotonic()
    with src:
        chunks = [c for _, c in zip(range(15), src)]
    assert time.monotonic() - t >= 15 * 441 / 22050 - 0.002
    assert [c.sample_index for c in chunks] == [441 * k for k in range(15)]
    assert all(len(c.samples) == 441 for c in chunks)
    assert all(b.wall_ns - a.wall_ns == pytest.approx(20e6, abs=1)
               for a, b in zip(chunks, chunks[1:]))


@pytest.mark.parametrize("kw", [dict(bpm=0), dict(bpm=-5), dict(bpm=400.5), dict(meter=0),
                                dict(duration=0), dict(duration=float("nan")), dict(hop=442)])
def test_bad_parameters_rejected(kw):
    with pytest.raises(ValueError):
        ClickSource(**{"bpm": 120, **kw})


def test_factory_builds_click():
    with open_source("click", bpm=128, duration=0.5, realtime=False) as src:
        assert isinstance(src, ClickSource) and sum(len(c.samples) for c in src) == 11025
