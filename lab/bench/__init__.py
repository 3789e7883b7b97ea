"""Benchmarks (``beatbus bench ...``, ``beatbus intensity bench``).

:mod:`.bus` (publish-to-consume on loopback), :mod:`.beats` (beat processor cost, 1..N streams),
:mod:`.backends` (activation backends side by side), :mod:`.intensity` (intensity feature cost),
:mod:`.led` (LED flash timing, render cost), :mod:`.trigger` (beat -> trigger latency),
:mod:`.generate` (job overhead, MusicGen and LSTM speed), :mod:`.load` (``load`` and ``soak``:
the pipeline as real processes) and :mod:`.loadgen` (many real-time sources from one process).
"""
