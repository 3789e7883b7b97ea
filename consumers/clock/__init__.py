"""Beat clock to other software: OSC messages and MIDI clock on predicted beats.

::

    bb:{src}:beats ──┐                               ┌─> OSC (UDP, python-osc)  /beatbus/beat, /bar, ...
    bb:{src}:sections┴─(fan-out)─> ClockScheduler ─> ClockRunner ─┤
                                                     └─> MIDI sink  clock x24/beat, start/stop, songpos

Modules: :mod:`.schedule` (pure: beat events -> timed cues on an absolute schedule), :mod:`.osc`
(the OSC address space, UDP targets), :mod:`.midi` (cues -> mido messages, sinks, the virtual
port), :mod:`.runner` (the send thread), :mod:`.config` (``ClockConfig``, the ``[clock]`` table),
:mod:`.metrics`, :mod:`.service` (the daemon) and :mod:`.cli` (``beatbus clock run``). Its
benchmark is in :mod:`beatbus.lab.bench.clock`.
"""
from .config import ClockConfig, load_clock_config
from .schedule import PPQN, ClockScheduler, Cue, Plan

__all__ = ["ClockConfig", "load_clock_config", "ClockScheduler", "Cue", "Plan", "PPQN"]
