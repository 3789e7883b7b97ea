"""Benchmarks (``beatbus bench ...``, ``beatbus intensity bench``).

:mod:`.bus` (publish-to-consume on loopback), :mod:`.beats` (beat processor cost, 1..N streams),
:mod:`.backends` (activation backends side by side), :mod:`.intensity` (intensity feature cost),
:mod:`.led` (LED flash timing, render cost), :mod:`.scenes` (LED scene changes vs the song's form),
:mod:`.clock` (OSC / MIDI clock jitter and offsets), :mod:`.sections` (live section churn),
:mod:`.trigger` (beat -> trigger latency), :mod:`.cluster` (a local Redis Cluster for the benches),
:mod:`.generate` (job overhead, MusicGen and LSTM speed), :mod:`.load` (``load`` and ``soak``:
the pipeline as real processes) and :mod:`.loadgen` (many real-time sources from one process).
"""
