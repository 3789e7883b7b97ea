"""Every Redis key and stream name beatbus uses, defined once.

Per-source keys carry the source in a Redis Cluster hash tag (``{source}``) so one
source's streams, leases and checkpoints share a slot and can be used together.
"""
from __future__ import annotations

import re

from .errors import ConfigError

__all__ = ["StreamKind", "check_source", "stream", "dead_letter", "dead_letter_mark", "lease", "instances",
           "producer_claim", "checkpoint", "trigger_dedup", "generation_inflight", "generation_owner", "SOURCES", "PREFIX"]

PREFIX = "bb"
SOURCES = f"{PREFIX}:sources"          # sorted set: source -> last heartbeat (unix s)
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class StreamKind:
    AUDIO = "audio"
    BEATS = "beats"
    INTENSITY = "intensity"
    SECTIONS = "sections"
    CONTROL = "control"
    ALL = (AUDIO, BEATS, INTENSITY, SECTIONS, CONTROL)


def check_source(source: str) -> str:
    """Validate a source name (letters, digits, ``_ . -``; 1-64 chars)."""
    if not isinstance(source, str) or not _SOURCE_RE.match(source):
        raise ConfigError(f"source name {source!r} is invalid: use 1-64 of A-Z a-z 0-9 _ . -")
    return source


def stream(source: str, kind: str) -> str:
    """``bb:{source}:kind``, e.g. ``bb:{mic}:beats``."""
    if kind not in StreamKind.ALL:
        raise ConfigError(f"stream kind {kind!r} is not one of {StreamKind.ALL}")
    return f"{PREFIX}:{{{check_source(source)}}}:{kind}"


def dead_letter(stream_key: str) -> str:
    """Dead-letter stream beside ``stream_key`` (same hash slot)."""
    return f"{stream_key}:dead"


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
    return lease(source, "producer")


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
