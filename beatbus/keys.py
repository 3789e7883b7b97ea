"""Every Redis key and stream name beatbus uses, defined once.

Per-source keys carry the source in a Redis Cluster hash tag (``{source}``) so one
source's streams, leases and checkpoints share a slot and can be used together.
"""
from __future__ import annotations

import re
from functools import lru_cache

from .errors import ConfigError
from .schemas.events import NAME_PATTERN  # the one source-name pattern

__all__ = ["StreamKind", "Role", "NAME_PATTERN", "NAME_RULE", "check_name", "check_source",
           "stream", "parse", "source_of", "dead_letter",
           "dead_letter_mark", "stream_ends", "lease", "instances",
           "producer_claim", "checkpoint", "watched", "quality", "trigger_dedup", "generation_inflight",
           "generation_owner", "SOURCES", "PREFIX",
           "LED_DEVICES", "LED_DEVICE_INFO", "LED_DEVICE_MAX_AGE_S", "LED_WATCH_TTL_MS", "led_frames", "led_watch",
           "LED_COMMANDS", "LED_CONSUMERS", "LED_SETUP", "LED_REPLY_TTL_S", "led_reply"]

PREFIX = "bb"
SOURCES = f"{PREFIX}:sources"          # sorted set: source -> last heartbeat (unix s)
LED_DEVICES = f"{PREFIX}:led:devices"  # sorted set: LED device name -> last heartbeat of its consumer (unix s)
LED_DEVICE_INFO = f"{PREFIX}:led:info"  # hash: LED device name -> JSON {pixels, fps, source, output}
LED_DEVICE_MAX_AGE_S = 5.0             # an LED device not heartbeated (every 1 s) for this long is gone
LED_WATCH_TTL_MS = 3000                # a watcher refreshes led_watch() every second
LED_COMMANDS = f"{PREFIX}:led:commands"  # stream: LedCommand (the API) -> the LED consumer it names
LED_CONSUMERS = f"{PREFIX}:led:consumers"  # sorted set: LED consumer name -> last heartbeat (unix s)
LED_SETUP = f"{PREFIX}:led:setup"      # hash: LED consumer name -> JSON of its setup (devices, presets)
LED_REPLY_TTL_S = 30                   # an answer nobody took (the API gave up waiting) goes away
_NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 of A-Z a-z 0-9 _ . -"  # NAME_PATTERN in words, for errors
_STREAM_RE = re.compile(rf"^{PREFIX}:\{{([^}}]*)\}}:([^:]*)$")


class StreamKind:
    AUDIO = "audio"
    BEATS = "beats"
    INTENSITY = "intensity"
    SECTIONS = "sections"
    CONTROL = "control"
    HARMONY = "harmony"
    ALL = (AUDIO, BEATS, INTENSITY, SECTIONS, CONTROL, HARMONY)


class Role:
    """Roles of leases, checkpoints and instance ids (:func:`lease`, :func:`checkpoint`, :func:`instances`)."""
    PRODUCER = "producer"
    BEAT = "beat"
    INTENSITY = "intensity"
    STRUCTURE = "structure"
    HARMONY = "harmony"
    GENERATE = "generate"
    TRIGGER = "trigger"
    STATEFUL = (BEAT, INTENSITY, STRUCTURE, HARMONY)   # own a source by lease and checkpoint it


def check_name(name: str, what: str) -> str:
    """Validate a name that goes into keys and URLs (:data:`NAME_PATTERN`); ``what`` names it in the error."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{what} {name!r} is invalid: use {NAME_RULE}")
    return name


def check_source(source: str) -> str:
    """Validate a source name."""
    return check_name(source, "source name")


def stream(source: str, kind: str) -> str:
    """``bb:{source}:kind``, e.g. ``bb:{mic}:beats``."""
    if kind not in StreamKind.ALL:
        raise ConfigError(f"stream kind {kind!r} is not one of {StreamKind.ALL}")
    return f"{PREFIX}:{{{check_source(source)}}}:{kind}"


@lru_cache(maxsize=4096)    # per entry read: a deployment has a bounded set of streams
def parse(stream_key: str) -> tuple[str, str]:
    """``bb:{mic}:beats`` -> ``("mic", "beats")``: the inverse of :func:`stream`.

    Raises
    ------
    ConfigError
        ``stream_key`` is not a source's stream.
    """
    m = _STREAM_RE.match(stream_key)
    if m is None or m.group(2) not in StreamKind.ALL or not _NAME_RE.match(m.group(1)):
        raise ConfigError(f"{stream_key!r} is not a source's stream key")
    return m.group(1), m.group(2)


def source_of(stream_key: str) -> str:
    """``bb:{mic}:beats`` -> ``mic``."""
    return parse(stream_key)[0]


def dead_letter(stream_key: str) -> str:
    """Dead-letter stream beside ``stream_key`` (same hash slot)."""
    return f"{stream_key}:dead"


def stream_ends(stream_key: str) -> str:
    """Sorted set of the ids of the genuine StreamEnds of ``stream_key``, written with them by their
    writer (:meth:`Bus.end_stream <beatbus.bus.Bus.end_stream>`): an end anyone XADDs by hand is not in it."""
    return f"{stream_key}:ends"


def dead_letter_mark(stream_key: str, entry_id: str) -> str:
    """Marks entry ``entry_id`` of ``stream_key`` as dead-lettered, so fan-out readers do it once."""
    return f"{dead_letter(stream_key)}:{entry_id}"


def instances(role: str) -> str:
    """Sorted set of the live instances of a source-owning role: owner id -> last heartbeat (unix s)."""
    return f"{PREFIX}:instances:{role}"


def lease(source: str, role: str) -> str:
    """Ownership lease of one stateful role (e.g. ``beat``) over a source."""
    return f"{PREFIX}:{{{check_source(source)}}}:lease:{role}"


def producer_claim(source: str) -> str:
    return lease(source, Role.PRODUCER)


def checkpoint(source: str, role: str) -> str:
    """Last stream id a stateful role has fully processed (for takeover)."""
    return f"{PREFIX}:{{{check_source(source)}}}:ckpt:{role}"


def trigger_dedup(source: str, entry_id: str, n: int) -> str:
    """Marks trigger ``n`` of beat entry ``entry_id`` as claimed/delivered (idempotency)."""
    return f"{PREFIX}:{{{check_source(source)}}}:trigger:{entry_id}:{n}"


def generation_inflight(source: str) -> str:
    """Lease holding the id of the source's running generation job (one in flight per source)."""
    return lease(source, "gen-inflight")


def generation_owner(job_id: str) -> str:
    """API key id that submitted generation ``job_id`` (only that key may read the result)."""
    return f"{PREFIX}:gen:owner:{job_id}"


def watched(source: str) -> str:
    """When a dashboard last followed the source's events (unix s, refreshed while it does; adaptive
    quality degrades the least recently watched sources first)."""
    return f"{PREFIX}:{{{check_source(source)}}}:watched"


def quality(source: str) -> str:
    """Hash: stage role -> the name of the source's adaptive quality level in that stage."""
    return f"{PREFIX}:{{{check_source(source)}}}:quality"


def led_frames(device: str) -> str:
    """Stream holding an LED device's newest rendered frame (MAXLEN 1), written while someone watches."""
    return f"{PREFIX}:led:frames:{device}"


def led_reply(request_id: str) -> str:
    """List where an LED consumer answers the LedCommand ``request_id`` (one JSON document)."""
    return f"{PREFIX}:led:reply:{request_id}"


def led_watch(device: str) -> str:
    """Set, with a short TTL kept fresh, while a dashboard watches an LED device's frames."""
    return f"{PREFIX}:led:watch:{device}"
