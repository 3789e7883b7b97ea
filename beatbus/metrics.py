"""Prometheus metrics shared by every daemon (one registry, bounded label sets).

Labels: ``kind`` is a stream kind (audio, beats, ...), ``stage`` a pipeline stage name,
``reason`` a short fixed word. Per-source series are limited to a few gauges.
"""
from __future__ import annotations

import functools
from typing import cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .errors import ConfigError

__all__ = ["EVENTS_PUBLISHED", "EVENTS_CONSUMED", "MALFORMED", "DEAD_LETTERS", "FRAMES_DROPPED",
           "STAGE_LATENCY", "BUS_LAG", "BROKER_RECONNECTS", "BPM", "SOURCE_UP", "BEATS",
           "PUBLISH_ERRORS", "LEASES_HELD", "QUALITY_LEVEL",
           "METRICS_PORTS", "PER_INSTANCE", "child", "owned_by", "publish_role", "serve_metrics"]

# Default /metrics port of each daemon, the ones `beatbus deploy install` uses: a per-instance
# daemon's instance N gets base + N, so a daemon started by hand takes base + 1 (or the next free
# one of its block); the others have one port. `metrics_addr = "auto"` (the default) means this.
METRICS_PORTS = {"terminal": 9464, "exporter": 9465, "trigger": 9466, "generate": 9467,
                 "processor": 9600, "intensity": 9620, "structure": 9640, "worker": 9660, "led": 9680,
                 "producer": 9700, "harmony": 9800, "clock": 9820}
PER_INSTANCE = {"processor": 19, "intensity": 19, "structure": 19, "worker": 19, "led": 19, "producer": 99,
                "harmony": 19, "clock": 19}

_LAT_BUCKETS = (.001, .0025, .005, .01, .02, .035, .05, .075, .1, .15, .25, .5, 1, 2.5, 5)

EVENTS_PUBLISHED = Counter("beatbus_events_published_total", "Entries written to streams", ["kind"])
EVENTS_CONSUMED = Counter("beatbus_events_consumed_total", "Entries read and decoded", ["kind"])
MALFORMED = Counter("beatbus_malformed_entries_total", "Entries that failed to decode", ["kind"])
DEAD_LETTERS = Counter("beatbus_dead_letters_total", "Entries moved to a dead-letter stream", ["kind", "reason"])
FRAMES_DROPPED = Counter("beatbus_frames_dropped_total", "Audio frames lost, by cause", ["reason"])
PUBLISH_ERRORS = Counter("beatbus_publish_errors_total", "Failed writes to the broker", ["kind"])
BROKER_RECONNECTS = Counter("beatbus_broker_reconnects_total", "Reconnections after a broker error")
STAGE_LATENCY = Histogram("beatbus_stage_latency_seconds",
                          "Wall time from the described audio to the event's emission", ["stage"],
                          buckets=_LAT_BUCKETS)
BUS_LAG = Gauge("beatbus_bus_lag_seconds", "Age of the newest entry a reader consumed", ["kind"])
BEATS = Counter("beatbus_beats_total", "Beats emitted", ["backend"])
BPM = Gauge("beatbus_bpm", "Current tempo estimate", ["source"])
SOURCE_UP = Gauge("beatbus_source_up", "1 while this process serves the source", ["source", "role"])
LEASES_HELD = Gauge("beatbus_leases_held", "Source leases this process holds", ["role"])
QUALITY_LEVEL = Gauge("beatbus_quality_level", "Adaptive quality level of the source in this stage (0: full; "
                      "beat 1 small, 2 dsp; intensity 1 half rate; structure 1 half rate, 2 shed)", ["source", "role"])


@functools.lru_cache(maxsize=1024)
def child(family, *labels: str):
    """``family.labels(*labels)``, looked up once: hot paths count every audio frame."""
    return family.labels(*labels)


_owned: dict[str, list] = {}      # role -> its families kept out of /metrics until the role runs here
_running: set[str] = set()


def owned_by(role: str, *families) -> None:
    """Families only the ``role`` daemon sets (unlabelled ones above all: they always have a sample):
    published by a process once it runs that role (:func:`publish_role`), never as zeros elsewhere."""
    for family in families:
        if role not in _running:
            REGISTRY.unregister(family)
            _owned.setdefault(role, []).append(family)


def publish_role(role: str) -> None:
    """This process runs ``role``: its own families join /metrics."""
    _running.add(role)
    for family in _owned.pop(role, []):
        REGISTRY.register(family)


class _Published(CollectorRegistry):
    """The process registry minus families without a series: a labelled family this process never
    used (every daemon imports every stage's modules) is not part of what it reports."""

    def collect(self):
        return (family for family in REGISTRY.collect() if family.samples)

    def restricted_registry(self, names):     # ?name[]=... asks the process registry itself
        return REGISTRY.restricted_registry(names)


def _candidates(addr: str, role: str | None) -> list[tuple[str, int]]:
    if addr.lower() == "auto":
        base = METRICS_PORTS.get(role or "", METRICS_PORTS["terminal"])
        count = PER_INSTANCE.get(role or "")
        return [("127.0.0.1", base + i) for i in range(1, count + 1)] if count else [("127.0.0.1", base)]
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"metrics_addr {addr!r} must be HOST:PORT, 'auto' or 'off'")
    return [(host or "127.0.0.1", int(port))]


def serve_metrics(addr: str, *, role: str | None = None) -> tuple[str, int] | None:
    """Start the /metrics HTTP server on ``HOST:PORT`` (port 0 picks one); 'off' disables; 'auto'
    is the ``role``'s default port (:data:`METRICS_PORTS`).

    Returns the bound (host, port), or None when disabled.
    """
    if not addr or addr.lower() == "off":
        return None
    if role:
        publish_role(role)
    candidates = _candidates(addr, role)
    error: OSError | None = None
    for host, port in candidates:
        try:
            server, _thread = start_http_server(port, addr=host, registry=_Published(auto_describe=False))
            # the host is the str we bound (typeshed also allows bytes for other servers)
            return cast("tuple[str, int]", server.server_address[:2])
        except OSError as exc:
            error = exc
    assert error is not None            # _candidates never returns an empty list
    where = f"{candidates[0][0]}:{candidates[0][1]}" + (f"-{candidates[-1][1]}" if len(candidates) > 1 else "")
    hint = f" (the {role or 'default'} port; set --metrics-addr HOST:PORT, port 0 picks one, or off)" \
        if addr.lower() == "auto" else ""
    raise ConfigError(f"cannot serve metrics on {where}: {error.strerror or error}{hint}") from None
