"""MIDI clock: cues -> mido messages -> a sink (a virtual ALSA sequencer port, or a recorder).

Messages (System Real-Time / Common, no channel): ``start`` when the transport starts (on a
downbeat; the receiver's position 0), ``clock`` 24 times per beat, ``songpos`` (Song Position
Pointer, 16th notes since the start in whole bars) on every later downbeat, ``stop`` when the
music stops or the source ends. The scheduler (:mod:`.schedule`) knows nothing of ports: a
:class:`MidiSink` is anything with ``send(message)``; :class:`RecordingSink` keeps the messages
with their send times (tests, ``beatbus bench clock``).

The port is a *virtual* output (``mido.open_output(NAME, virtual=True)`` on python-rtmidi):
other software (a DAW, a synth) connects to ``NAME`` as to a MIDI input. On Linux that needs the
ALSA sequencer (``/dev/snd/seq``, kernel module ``snd-seq``); without it opening the port is one
line naming the cause (:class:`MidiPortError`).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Protocol

from beatbus.errors import BeatbusError, require
from beatbus.stderr import quiet_stderr

from .schedule import Cue

__all__ = ["MidiSink", "RecordingSink", "MidiPortError", "midi_messages", "open_virtual_port", "ALSA_SEQ",
           "SPP_MAX"]

ALSA_SEQ = "/dev/snd/seq"
SPP_MAX = 16383               # the Song Position Pointer is 14 bits of 16th notes


class MidiPortError(BeatbusError):
    """The MIDI output port cannot be opened (no ALSA sequencer, no backend, a refused name)."""


class MidiSink(Protocol):
    """Where MIDI messages go: ``send`` one mido message now."""

    def send(self, message: Any) -> None: ...

    def close(self) -> None: ...


def _mido():
    return require("mido", "the MIDI clock")


def midi_messages(cue: Cue) -> list:
    """The mido messages of one cue (none for ``beat``, ``tempo``: MIDI clock carries the tempo in the ticks)."""
    mido = _mido()
    if cue.kind == "tick":
        return [mido.Message("clock")]
    if cue.kind == "start":
        return [mido.Message("start")]
    if cue.kind == "stop":
        return [mido.Message("stop")]
    if cue.kind == "bar" and cue.song_position > 0:
        return [mido.Message("songpos", pos=min(cue.song_position, SPP_MAX))]
    return []


class RecordingSink:
    """A sink that keeps every message with its send time (``time.time()``): ``(t, message)``."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.messages: list[tuple[float, Any]] = []
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self._lock:
            self.messages.append((self.clock(), message))

    def close(self) -> None:
        pass

    def of_type(self, kind: str) -> list[tuple[float, Any]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if m.type == kind]


def open_virtual_port(name: str) -> MidiSink:
    """A virtual MIDI output port named ``name`` (python-rtmidi through mido).

    Raises
    ------
    DependencyError
        mido or python-rtmidi is not installed (``pip install 'beatbus[clock]'``).
    MidiPortError
        The port cannot be opened: one line naming the cause (no ALSA sequencer here...).
    """
    mido = _mido()
    require("rtmidi", "the MIDI clock's virtual port")
    try:
        backend = mido.Backend("mido.backends.rtmidi", load=True)
    except ImportError as exc:
        raise MidiPortError(f"MIDI port {name!r}: the rtmidi backend does not load: {exc}") from None
    try:
        with quiet_stderr():                       # ALSA lib prints its own failure to fd 2
            return backend.open_output(name, virtual=True)
    except (OSError, RuntimeError) as exc:          # rtmidi's SystemError is an OSError
        if os.name == "posix" and not os.path.exists(ALSA_SEQ) and not _is_macos():
            raise MidiPortError(
                f"MIDI port {name!r}: no ALSA sequencer on this machine ({ALSA_SEQ} is missing: load the kernel "
                "module snd-seq, e.g. `sudo modprobe snd-seq`, or run without --midi; OSC works without it)") from None
        raise MidiPortError(f"MIDI port {name!r} cannot be opened: {exc}") from None


def _is_macos() -> bool:
    import sys

    return sys.platform == "darwin"
