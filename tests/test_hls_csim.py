"""hls4ml conversion of a tiny QKeras beat model, C simulation against QKeras, and the build /
report commands without Vivado."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("hls4ml")
pytest.importorskip("qkeras")

from conftest import beatbus_cmd  # noqa: E402
from hls.model import build_frame_model, build_sequence_model, softmax  # noqa: E402
from hls.pipeline import CSIM_TOLERANCE  # noqa: E402
from hls.project import STATE_PATCH_MARK, CsimLibrary, compile_project, load_config, write_project  # noqa: E402

DIM, PROJ, HID = 16, 4, 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny frame model with random weights (seeded), converted and compiled once."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(5)
    seq = build_sequence_model(proj=PROJ, hidden=HID, dim_in=DIM)
    rng = np.random.default_rng(5)
    seq.set_weights([rng.uniform(-0.9, 0.9, w.shape).astype(np.float32) for w in seq.get_weights()])
    frame = build_frame_model(proj=PROJ, hidden=HID, dim_in=DIM)
    frame.set_weights(seq.get_weights())
    out = tmp_path_factory.mktemp("hls") / "prj"
    lib = compile_project(write_project(model=frame, out_dir=out))
    return seq, out, lib


def test_csim_matches_qkeras_frame_by_frame(tiny) -> None:
    seq, _, lib = tiny
    x = np.random.default_rng(1).normal(size=(80, DIM)).astype(np.float32)
    ref = softmax(seq.predict(x[None], verbose=0)[0].astype(np.float64))
    got = softmax(CsimLibrary(lib, n_in=DIM)(x).astype(np.float64))
    assert np.abs(got - ref).max() <= CSIM_TOLERANCE
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_gru_state_persists_per_library_copy(tiny) -> None:
    _, out, lib = tiny
    assert STATE_PATCH_MARK in (out / "firmware" / "nnet_utils" / "nnet_recurrent.h").read_text()
    x = np.random.default_rng(2).normal(size=(10, DIM)).astype(np.float32)
    a = CsimLibrary(lib, n_in=DIM)(x)
    b = CsimLibrary(lib, n_in=DIM)  # a second stream starts from the zero state
    np.testing.assert_array_equal(b(x[:1]), a[:1])
    # the state carries over: frame 5 alone differs from frame 5 after frames 0-4
    assert not np.array_equal(CsimLibrary(lib, n_in=DIM)(x[5:6]), a[5:6])


def test_build_without_vivado_gives_clear_message_and_keeps_project(tiny, tmp_path) -> None:
    _, out, _ = tiny
    if shutil.which("vitis-run") or shutil.which("vivado_hls"):
        pytest.skip("a synthesis tool is installed here")
    proj = tmp_path / "copy"
    shutil.copytree(out, proj)
    r = beatbus_cmd("hls", "build", "--project", str(proj))
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "vitis-run is not on PATH" in lines[0] and str(proj) in lines[0]
    for f in ("build_prj.tcl", "firmware/beat_small.cpp", "firmware/beat_small.h", "firmware/parameters.h"):
        assert (proj / f).is_file(), f
    r = beatbus_cmd("hls", "report", "--project", str(proj))
    assert r.returncode == 3 and "no synthesis report" in r.stderr


def test_bad_config_is_a_one_line_error(tmp_path) -> None:
    from beatbus.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("project_name: x\nbackend: Quartus\npart: p\nclock_period: 5\nio_type: io_parallel\nhls_config: {}\n")
    with pytest.raises(ConfigError, match="backend='Quartus'"):
        load_config(bad)
    r = beatbus_cmd("hls", "build", "--project", str(tmp_path / "none"))
    assert r.returncode == 2 and "no hls4ml project" in r.stderr
