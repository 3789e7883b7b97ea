"""hls4ml conversion of the shipped QKeras beat model, C simulation against QKeras on a real song,
and the build / report commands without Vivado."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("hls4ml")
pytest.importorskip("qkeras")

from beatbus.hls.backend import ensure_library  # noqa: E402
from beatbus.hls.model import build_frame_model, load_qmodel  # noqa: E402
from beatbus.hls.project import BUILD_STAMP, STATE_PATCH_MARK, CsimLibrary, find_library, load_config, write_project  # noqa: E402
from beatbus.lab.train.hls import audio_features, csim_vs_qkeras  # noqa: E402

from support.hls import BEATS, shipped_project  # noqa: E402
from support.procs import beatbus_cmd  # noqa: E402

# Measured max |p_csim - p_qkeras| over all 40 dev songs (README, FPGA path): 0.0030. The gate is
# defined here, not imported from the code under test (whose 0.02 target is looser than reality),
# with 2x margin for another compiler's rounding; 0.16 / 0.55 were the known defects.
CSIM_MEASURED_MAX = 0.003
CSIM_GATE = 2 * CSIM_MEASURED_MAX


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return shipped_project(tmp_path_factory)


@pytest.mark.parametrize("song", ["gtzan_rock_00000", "gtzan_rock_00002"])
def test_csim_matches_qkeras_on_a_real_song(project, song) -> None:
    """The gate: softmax probabilities (what the backend consumes), streamed frame by frame with state.

    gtzan_rock_00002 drives the first layer to -133 (frame 753): a wrapping type broke it once."""
    model, mean, std = load_qmodel()
    z = ((audio_features(BEATS / f"{song}.flac") - mean) / std).astype(np.float32)
    res = csim_vs_qkeras(find_library(project), model, [z])
    assert res["frames"] > 850
    # 0.16 / 0.55 when hls4ml truncated the float GRU weights (hls/project.py) / when the first
    # layer's output wrapped (hls/config.yaml)
    assert res["max_abs_csim_qkeras"] <= CSIM_GATE, res["max_abs_csim_qkeras"]
    assert res["argmax_agree"] >= 0.99


def test_gru_weights_are_written_as_qkeras_quantizes_them(tmp_path) -> None:
    """hls4ml 1.3.0 skips the QGRU quantizers: off-grid float weights must reach the C++ quantized."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(5)
    frame = build_frame_model(proj=4, hidden=4, dim_in=16)
    rng = np.random.default_rng(5)
    frame.set_weights([rng.uniform(-0.9, 0.9, w.shape).astype(np.float32) for w in frame.get_weights()])
    gru = frame.get_layer("gru")
    kernel, recurrent, bias = gru.get_weights()
    cell = gru.cell
    qbias = cell.bias_quantizer_internal(bias).numpy()
    want = {"w": cell.kernel_quantizer_internal(kernel).numpy(),
            "wr": cell.recurrent_quantizer_internal(recurrent).numpy(), "b": qbias[0], "br": qbias[1]}
    assert not np.array_equal(want["w"], kernel)  # the float weights really are off the grid
    hls_model = write_project(model=frame, out_dir=tmp_path / "prj")
    index = hls_model.graph["gru"].index
    for prefix, values in want.items():
        text = (tmp_path / "prj" / "firmware" / "weights" / f"{prefix}{index}.txt").read_text()
        written = np.array([float(v) for v in text.replace("\n", "").split(",") if v.strip()])
        np.testing.assert_allclose(written, values.ravel(), rtol=0, atol=1e-9, err_msg=prefix)
    assert not (tmp_path / "prj" / BUILD_STAMP).exists()  # not the shipped model: never taken for it


def test_gru_state_persists_per_library_copy(project) -> None:
    lib = find_library(project)
    assert STATE_PATCH_MARK in (project / "firmware" / "nnet_utils" / "nnet_recurrent.h").read_text()
    x = np.random.default_rng(2).normal(size=(10, 272)).astype(np.float32)
    a = CsimLibrary(lib)(x)
    b = CsimLibrary(lib)  # a second stream starts from the zero state
    np.testing.assert_array_equal(b(x[:1]), a[:1])
    # the state carries over: frame 5 alone differs from frame 5 after frames 0-4
    assert not np.array_equal(CsimLibrary(lib)(x[5:6]), a[5:6])


def test_stale_project_is_refused_without_build(project, tmp_path) -> None:
    from beatbus.errors import ConfigError

    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    assert ensure_library(copy, build=False) == find_library(copy)
    (copy / BUILD_STAMP).write_text('{"key": "0123456789abcdef"}')  # converted from other weights / config
    with pytest.raises(ConfigError, match="built from another config"):
        ensure_library(copy, build=False)


def test_build_without_vivado_gives_clear_message_and_keeps_project(project, tmp_path) -> None:
    if shutil.which("vitis-run") or shutil.which("vivado_hls"):
        pytest.skip("a synthesis tool is installed here")
    proj = tmp_path / "copy"
    shutil.copytree(project, proj)
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
