"""Sources of the sound server (PulseAudio, or PipeWire's pulse server), listed through libpulse.

A sink's *monitor* source carries what the computer plays to that sink, so capturing it
tracks the beats of whatever music the machine is playing. Listing needs ``pulsectl`` (the
``audio`` extra) and a running server; without either there is simply nothing to list.
"""

from __future__ import annotations

from typing import Any

__all__ = ["list_sources"]

_PA_INVALID_INDEX = 2**32 - 1  # libpulse's "none": monitor_of_sink of a source that monitors no sink
_CONNECT_TIMEOUT_S = 2.0


def list_sources() -> list[dict[str, Any]]:
    """The sound server's capture sources, monitors included.

    Returns
    -------
    list of dict
        ``name`` (what ``PULSE_SOURCE`` takes), ``description``, ``monitor`` (True for a
        sink's monitor: what this computer plays), ``channels``, ``rate`` (Hz) and
        ``is_default``. Empty when pulsectl or libpulse is missing or no server answers.
    """
    try:
        import pulsectl
    except (ImportError, OSError):  # not installed, or libpulse missing (loaded at import)
        return []
    try:
        # No autospawn: listing devices must not start a sound server as a side effect.
        with pulsectl.Pulse("beatbus", connect=False) as pulse:
            pulse.connect(autospawn=False, timeout=_CONNECT_TIMEOUT_S)
            default = pulse.server_info().default_source_name
            return [{"name": s.name, "description": s.description or "",
                     "monitor": s.monitor_of_sink != _PA_INVALID_INDEX,
                     "channels": int(s.sample_spec.channels), "rate": int(s.sample_spec.rate),
                     "is_default": s.name == default}
                    for s in pulse.source_list()]
    except pulsectl.PulseError:  # no server answers
        return []
