"""The lab: what measures, trains and stands in for the runtime, never part of it.

:mod:`.bench` (benchmarks), :mod:`.eval` (accuracy against annotations), :mod:`.train` (the
``small`` beat model and its QKeras twin), :mod:`.synth` (synthetic songs with exact
annotations), :mod:`.doubles` (test doubles of external services and models) and :mod:`.cli`
(their ``beatbus`` commands). The lab imports the stages; no stage imports the lab.
"""
