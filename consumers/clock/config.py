"""Configuration of the beat clock: where it goes (OSC targets, a MIDI port) and how it follows the beats.

Precedence (later wins), as for :func:`beatbus.config.load_settings`: built-in defaults < the
``[clock]`` table of the TOML file (``--config`` / ``BEATBUS_CONFIG``) < environment
(``BEATBUS_CLOCK_<KEY>``; ``BEATBUS_CLOCK_OSC`` is a comma-separated list) < flags. The source is
the core's ``source`` (``--source``, ``BEATBUS_SOURCE``). The output latency has the LED
consumer's name: ``output_latency_ms`` / ``--output-latency-ms``.

Example TOML (core keys go under ``[beatbus]`` when a file has other tables)::

    [beatbus]
    source = "stage"

    [clock]
    osc = ["127.0.0.1:9000", "10.0.0.7:8000"]
    midi = "beatbus clock"
    output_latency_ms = 20
"""
from __future__ import annotations

import os
from typing import Annotated, Any

import msgspec

from beatbus.config import layered
from beatbus.errors import ConfigError

__all__ = ["ClockConfig", "load_clock_config", "DESCRIPTIONS", "ENV_PREFIX"]

M = msgspec.Meta
ENV_PREFIX = "BEATBUS_CLOCK_"


class ClockConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    osc: list[str] = []
    midi: Annotated[str, M(min_length=1, max_length=64)] | None = None
    output_latency_ms: Annotated[float, M(ge=0, le=2000)] = 0.0
    late_limit_ms: Annotated[float, M(ge=0, le=500)] = 60.0
    lock_beats: Annotated[int, M(ge=1, le=64)] = 3
    catch_up_beats: Annotated[int, M(ge=1, le=64)] = 2
    tempo_smoothing_beats: Annotated[float, M(ge=1, le=64)] = 4.0
    resync_beats: Annotated[float, M(gt=0, le=0.5)] = 0.25
    silence_timeout_s: Annotated[float, M(gt=0, le=3600)] = 3.0
    tempo_step_bpm: Annotated[float, M(gt=0, le=100)] = 1.0


DESCRIPTIONS: dict[str, str] = {
    "osc": "OSC target HOST:PORT (repeatable): /beatbus/beat, /bar, /tempo, /section, /start, /stop over UDP.",
    "midi": "Name of the virtual MIDI output port (ALSA sequencer) that sends MIDI clock, start/stop, song position.",
    "output_latency_ms": "Latency from send to sound in the receiving software: every cue is sent this much early.",
    "late_limit_ms": "An OSC beat or bar message that could only go out later than this is dropped.",
    "lock_beats": "Consecutive steady beats before the transport starts (on the next downbeat).",
    "catch_up_beats": "Beats over which a phase error is caught up by a small change of the tempo.",
    "tempo_smoothing_beats": "Beats of the tempo's moving average (a change of more than 8 % for 2 beats is taken at once).",
    "resync_beats": "A phase error larger than this (in beats) makes the clock jump instead of catching up.",
    "silence_timeout_s": "No beat for this long: the transport stops (MIDI stop, /beatbus/stop).",
    "tempo_step_bpm": "/beatbus/tempo is sent when the smoothed tempo moved this much.",
}


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ClockConfig.__struct_fields__:
        val = env.get(ENV_PREFIX + key.upper())
        if val:
            out[key] = [v.strip() for v in val.split(",") if v.strip()] if key == "osc" else val
    return out


def load_clock_config(flags: dict[str, Any] | None = None, *, config_file: str | os.PathLike | None = None,
                      env: dict[str, str] | None = None) -> ClockConfig:
    """Merge defaults, the TOML ``[clock]`` table, env and flags; validate loudly.

    ``osc`` from the flags replaces the other layers' list (an empty list is "not given").

    Raises
    ------
    ConfigError
        Naming the key and the problem.
    """
    env = dict(os.environ) if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v not in (None, [], ())}
    merged = layered(ClockConfig.__struct_fields__, table="clock", from_env=_from_env, flags=flags,
                     config_file=config_file, env=env)
    if isinstance(merged.get("osc"), str):
        merged["osc"] = [merged["osc"]]
    try:
        return msgspec.convert(merged, ClockConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid clock configuration: {exc}") from None
