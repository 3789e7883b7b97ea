"""Prometheus metrics shared by every daemon (one registry, bounded label sets).

Labels: ``kind`` is a stream kind (audio, beats, ...), ``stage`` a pipeline stage name,
``reason`` a short fixed word. Per-source series are limited to a few gauges.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .errors import ConfigError

__all__ = ["EVENTS_PUBLISHED", "EVENTS_CONSUMED", "MALFORMED", "DEAD_LETTERS", "FRAMES_DROPPED",
           "STAGE_LATENCY", "BUS_LAG", "BROKER_RECONNECTS", "BPM", "SOURCE_UP", "BEATS",
           "PUBLISH_ERRORS", "LEASES_HELD", "serve_metrics"]

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


def serve_metrics(addr: str) -> tuple[str, int] | None:
    """Start the /metrics HTTP server on ``HOST:PORT`` (port 0 picks one); 'off' disables.

    Returns the bound (host, port), or None when disabled.
    """
    if not addr or addr.lower() == "off":
        return None
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"metrics_addr {addr!r} must be HOST:PORT or 'off'")
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {addr}: {exc.strerror or exc}") from None
    return server.server_address[:2]
