"""HopFrames: the streaming framing intensity, harmony and structure share."""
import numpy as np
import pytest

from beatbus.framing import HopFrames


@pytest.mark.parametrize("n_fft,hop", [(1024, 441), (441, 441), (4096, 441)])
def test_any_chunking_gives_the_frames_of_the_zero_padded_stream(n_fft, hop):
    rng = np.random.default_rng(0)
    y = rng.standard_normal(20_000).astype(np.float32)
    padded = np.concatenate([np.zeros(n_fft - hop, np.float32), y])
    n = y.size // hop
    want = np.stack([padded[k * hop:k * hop + n_fft] for k in range(n)])
    f = HopFrames(n_fft, hop)
    got, i = [], 0
    while i < y.size:
        k = int(rng.integers(0, 2000))                 # empty chunks and chunks shorter than a hop too
        got.append(f.push(y[i:i + k]).copy())
        i += k
    assert np.array_equal(np.concatenate(got), want) and f.n_frames == n
    f.reset()
    assert np.array_equal(f.push(y), want) and f.n_frames == n


def test_bad_samples_are_zeros_and_counted():
    f = HopFrames(8, 4)
    frames = f.push(np.array([1, np.nan, np.inf, -np.inf, 5, 6, 7, 8], dtype=np.float32))
    assert f.n_bad_samples == 3
    assert np.array_equal(frames[-1], [1, 0, 0, 0, 5, 6, 7, 8])


def test_hop_longer_than_the_frame_is_refused():
    with pytest.raises(ValueError, match="hop"):
        HopFrames(256, 512)
