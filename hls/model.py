"""QKeras model of the ``small`` beat activation network, and its distillation from the torch model.

Architecture (the same as :class:`processors.beat.small.SmallNet`, quantized)::

    standardised features (272; done on the host, like the float model)
    -> QDense 32 (quantized_bits) -> ReLU -> QGRU 32 (tanh / sigmoid, reset_after) -> QDense 3 (logits)

Two Keras graphs share the layer names and weights:

* the *sequence* model ``(batch, time, 272) -> (batch, time, 3)`` used for training and as the
  QKeras reference;
* the *frame* model ``272 -> 3`` (one time step per call; the GRU state lives in the HLS kernel,
  see :mod:`hls.project`) that hls4ml converts.

Softmax is applied on the host (3 values): the logits are what the FPGA kernel outputs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError

from .compat import import_qkeras

__all__ = ["DEFAULT_WEIGHTS", "QUANT", "build_sequence_model", "build_frame_model", "from_torch", "distill",
           "save_qmodel", "load_qmodel", "softmax"]

SHIPPED_WEIGHTS = Path(__file__).with_name("data") / "qsmall"
# ``$BEATBUS_HLS_WEIGHTS`` (read at import) replaces the shipped prefix everywhere it is the default,
# e.g. to evaluate a candidate: ``BEATBUS_HLS_WEIGHTS=/tmp/cand/qsmall beatbus eval beats DIR --backend hls``
DEFAULT_WEIGHTS = Path(os.environ.get("BEATBUS_HLS_WEIGHTS") or SHIPPED_WEIGHTS)
# weights and biases: 10-bit fixed point, range +-2 (the trained float weights stay within +-1.5)
QUANT = "quantized_bits(10,1,alpha=1)"


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _layers(proj: int, hidden: int, quant: str, *, sequences: bool):
    qkeras = import_qkeras()
    from tensorflow.keras.layers import Activation

    q = dict(kernel_quantizer=quant, bias_quantizer=quant)
    dense = qkeras.QDense(proj, name="proj", **q)
    relu = Activation("relu", name="proj_relu")
    gru = qkeras.QGRU(hidden, name="gru", activation="tanh", recurrent_activation="sigmoid", reset_after=True,
                      recurrent_quantizer=quant, return_sequences=sequences, **q)
    out = qkeras.QDense(3, name="out", **q)
    return dense, relu, gru, out


def build_sequence_model(*, proj: int = 32, hidden: int = 32, quant: str = QUANT, dim_in: int = 272):
    """``(batch, time, 272) -> (batch, time, 3)`` logits (training / QKeras reference)."""
    import tensorflow as tf

    dense, relu, gru, out = _layers(proj, hidden, quant, sequences=True)
    x = tf.keras.Input(shape=(None, dim_in), name="feats")
    return tf.keras.Model(x, out(gru(relu(dense(x)))), name="beat_small_seq")


def build_frame_model(*, proj: int = 32, hidden: int = 32, quant: str = QUANT, dim_in: int = 272):
    """``272 -> 3`` logits for one frame (the model hls4ml converts)."""
    import tensorflow as tf

    dense, relu, gru, out = _layers(proj, hidden, quant, sequences=False)
    x = tf.keras.Input(shape=(dim_in,), name="feats")
    h = tf.keras.layers.Reshape((1, proj), name="to_sequence")(relu(dense(x)))
    return tf.keras.Model(x, out(gru(h)), name="beat_small_frame")


def from_torch(net, model) -> None:
    """Copy a :class:`~processors.beat.small.SmallNet`'s weights into a QKeras model (exact in float).

    torch GRU gates are ordered (r, z, n); Keras (z, r, h); both apply the reset gate after the
    recurrent matmul (``reset_after=True``) with separate input / recurrent biases.
    """
    sd = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    hid = net.hidden

    def zrn(a):  # (r, z, n) blocks on axis 0 -> (z, r, n)
        return np.concatenate([a[hid : 2 * hid], a[:hid], a[2 * hid :]], axis=0)

    model.get_layer("proj").set_weights([sd["proj.weight"].T, sd["proj.bias"]])
    model.get_layer("gru").set_weights([
        zrn(sd["gru.weight_ih_l0"]).T, zrn(sd["gru.weight_hh_l0"]).T,
        np.stack([zrn(sd["gru.bias_ih_l0"]), zrn(sd["gru.bias_hh_l0"])]),
    ])
    model.get_layer("out").set_weights([sd["linear.weight"].T, sd["linear.bias"]])


def distill(net, feats: list[np.ndarray], *, epochs: int = 3, seq_len: int = 500, batch: int = 16, seed: int = 0,
            lr: float = 1e-3, log=print):
    """Quantization-aware fine-tuning of the QKeras model towards the torch model's probabilities.

    Parameters
    ----------
    net : SmallNet
        Teacher (and initial weights).
    feats : list of np.ndarray [shape=(n_i, 272)]
        Raw feature sequences (standardised here with the teacher's mean / std).

    Returns
    -------
    keras.Model
        The trained sequence model.
    """
    import tensorflow as tf
    import torch

    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = net.mean.numpy(), net.std.numpy()
    xs, ts = [], []
    for f in feats:
        with torch.inference_mode():
            p, _ = net(torch.from_numpy(f)[None])
        z = (f - mean) / std
        for s in range(0, max(f.shape[0] - seq_len, 0) + 1, seq_len // 2):
            if f.shape[0] >= seq_len:
                xs.append(z[s : s + seq_len])
                ts.append(p[0, s : s + seq_len].numpy())
    if not xs:
        raise ConfigError(f"no training audio of at least {seq_len} frames ({seq_len * 0.02:.0f} s at 50 frames/s): "
                          "give more synthetic songs (--songs) or recordings (--data)")
    x, t = np.stack(xs).astype(np.float32), np.stack(ts).astype(np.float32)
    model = build_sequence_model(proj=net.proj_size, hidden=net.hidden)
    from_torch(net, model)
    order = rng.permutation(len(x))
    model.compile(optimizer=tf.keras.optimizers.Adam(lr),
                  loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))
    hist = model.fit(x[order], t[order], batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
    log(f"qkeras distillation: {len(x)} crops, loss {hist.history['loss'][0]:.4f} -> {hist.history['loss'][-1]:.4f}")
    return model


def save_qmodel(model, mean: np.ndarray, std: np.ndarray, path: str | Path = DEFAULT_WEIGHTS) -> Path:
    """Write ``<path>.weights.h5`` and ``<path>.json`` (sizes, quantizer, feature mean / std)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(path) + ".weights.h5")
    gru = model.get_layer("gru")
    meta = {"proj": int(model.get_layer("proj").units), "hidden": int(gru.units), "quant": QUANT,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    Path(str(path) + ".json").write_text(json.dumps(meta))
    return path


def load_qmodel(path: str | Path = DEFAULT_WEIGHTS, *, frame: bool = False):
    """Load a saved QKeras model: ``(model, mean, std)``; ``frame=True`` gives the one-frame graph."""
    from beatbus.errors import ConfigError

    path = Path(path)
    meta_file = Path(str(path) + ".json")
    if not meta_file.is_file():
        raise ConfigError(f"no QKeras model at {str(path)!r}(.json/.weights.h5): run 'beatbus hls train'")
    meta = json.loads(meta_file.read_text())
    build = build_frame_model if frame else build_sequence_model
    model = build(proj=meta["proj"], hidden=meta["hidden"], quant=meta["quant"])
    model.load_weights(str(path) + ".weights.h5")
    return model, np.asarray(meta["mean"], dtype=np.float32), np.asarray(meta["std"], dtype=np.float32)
