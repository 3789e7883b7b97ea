"""Import QKeras on TensorFlow 2.14 (see shared/docs/install-notes.md).

qkeras 0.9.0's recurrent layers call two TensorFlow internals that TF 2.14 removed:
``tensorflow.python.util.nest.is_sequence`` (renamed ``is_nested``) and
``tensorflow.python.ops.array_ops.unstack`` (now only ``tf.unstack``). :func:`import_qkeras`
restores both names before importing qkeras, so QGRU / QLSTM work.
"""
from __future__ import annotations

import os
import warnings

from beatbus.errors import DependencyError

__all__ = ["HLS_EXTRA_HINT", "import_qkeras", "import_hls4ml"]

HLS_EXTRA_HINT = "the hls path needs tensorflow 2.14, qkeras, hls4ml and pyparsing: pip install 'beatbus[hls]'"


def import_qkeras():
    """Patch TF 2.14 for qkeras 0.9.0 and return the ``qkeras`` module."""
    # TF's start-up banner and its CUDA plugins' "Unable to register cuDNN factory" lines (ERROR level,
    # printed on every CPU-only start) are noise on the CLI; a real TF failure is a Python exception
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Keras warns on serialising qkeras' quantizers, which hls4ml reads back correctly
    warnings.filterwarnings("ignore", message=r"The `keras\.constraints\.serialize\(\)` API", category=UserWarning)
    try:
        import tensorflow as tf
        from tensorflow.python.ops import array_ops
        from tensorflow.python.util import nest
    except ImportError as exc:
        raise DependencyError(HLS_EXTRA_HINT) from exc
    # qkeras 0.9.0 QGRU/QSimpleRNN use the pre-2.14 names (removed in TF 2.14)
    if not hasattr(nest, "is_sequence"):
        nest.is_sequence = nest.is_nested
    if not hasattr(array_ops, "unstack"):
        array_ops.unstack = tf.unstack
    try:
        import qkeras
    except ImportError as exc:
        raise DependencyError(HLS_EXTRA_HINT) from exc
    return qkeras


def import_hls4ml():
    """Return the ``hls4ml`` module (after the qkeras patches, which its converter imports)."""
    import_qkeras()
    try:
        import hls4ml
    except ImportError as exc:
        raise DependencyError(HLS_EXTRA_HINT) from exc
    return hls4ml
