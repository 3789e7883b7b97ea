"""Prometheus metrics of the beat clock (labels: ``output`` osc | midi, ``kind`` a cue kind, small fixed words)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from beatbus.metrics import owned_by

__all__ = ["CUES", "CUES_DROPPED", "SEND_LATENESS", "OUTPUT_ERRORS", "RUNNING", "TEMPO", "RESYNCS"]

CUES = Counter("beatbus_clock_cues_total", "Clock cues sent (start, tick, beat, bar, tempo, section, stop)",
               ["output", "kind"])
CUES_DROPPED = Counter("beatbus_clock_cues_dropped_total",
                       "Beat and bar messages dropped: they could only have gone out later than late_limit_ms",
                       ["output"])
SEND_LATENESS = Histogram("beatbus_clock_send_lateness_seconds", "Send time minus the cue's send deadline",
                          ["output"], buckets=(.0001, .0002, .0005, .001, .002, .005, .01, .02, .05))
OUTPUT_ERRORS = Counter("beatbus_clock_output_errors_total", "Failed sends (a target unreachable, a port gone)",
                        ["output"])
RESYNCS = Counter("beatbus_clock_resyncs_total", "Phase errors too large to catch up: the clock jumped")
RUNNING = Gauge("beatbus_clock_running", "1 while the transport runs (beats locked), else 0")
TEMPO = Gauge("beatbus_clock_bpm", "The clock's smoothed tempo")
owned_by("clock", RESYNCS, RUNNING, TEMPO)    # unlabelled: only a process running the clock publishes them
