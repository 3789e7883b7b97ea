"""FPGA path of the beat processor (issue 8): a QKeras model of the ``small`` activation network,
converted to HLS C++ by hls4ml, run bit-accurately on the CPU (C simulation) and ready for
synthesis where Vivado / Vitis exist.

Heavy imports (TensorFlow, QKeras, hls4ml) happen inside the functions that need them, so
``beatbus --help`` stays fast.
"""
__all__: list[str] = []
