"""Prometheus metrics of the LED consumer (labels: ``device`` from the config, small fixed words)."""
from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from beatbus.metrics import owned_by

__all__ = ["forget_device", "FRAMES", "FRAMES_SKIPPED", "OUTPUT_ERRORS", "OUTPUT_UP", "SEND_LATENESS", "EVENTS_IGNORED",
           "AMBIENT", "OFFSET", "TAPS", "SETUP_COMMANDS"]

FRAMES = Counter("beatbus_led_frames_total", "Frames sent to an LED output", ["device", "kind"])
FRAMES_SKIPPED = Counter("beatbus_led_frames_skipped_total",
                         "Frame deadlines missed by more than a frame (render loop fell behind)", ["device"])
OUTPUT_ERRORS = Counter("beatbus_led_output_errors_total", "Failed sends or reconnects of an output", ["device"])
OUTPUT_UP = Gauge("beatbus_led_output_up", "1 while the output takes frames, 0 while it is down (retried with backoff)",
                  ["device"])
SEND_LATENESS = Histogram("beatbus_led_send_lateness_seconds", "Send time minus the frame's deadline",
                          ["device"], buckets=(.0002, .0005, .001, .002, .003, .005, .01, .02, .05))
EVENTS_IGNORED = Counter("beatbus_led_events_ignored_total",
                         "Events with impossible values (bpm 0, NaN) or too old to use", ["reason"])
AMBIENT = Gauge("beatbus_led_ambient_ratio", "Share of the ambient effect in the output (0 music .. 1 ambient)")
OFFSET = Gauge("beatbus_led_offset_seconds", "Global light offset in use (manual or tap-calibrated)")
TAPS = Counter("beatbus_led_taps_total", "Calibration taps", ["result"])
owned_by("led", AMBIENT, OFFSET)      # unlabelled: only a process rendering LEDs publishes them
SETUP_COMMANDS = Counter("beatbus_led_setup_commands_total",
                         "Setup commands (from the dashboard / API) this LED consumer answered, by result", ["result"])


def forget_device(name: str) -> None:
    """Drop a removed (or disabled) device's series: a device that went down and was then removed would
    otherwise report ``beatbus_led_output_up 0`` until a restart, and BeatbusLedOutputDown fire all along."""
    for metric, labels in ((FRAMES, (name, "regular")), (FRAMES, (name, "beat")), (FRAMES_SKIPPED, (name,)),
                           (OUTPUT_ERRORS, (name,)), (OUTPUT_UP, (name,)), (SEND_LATENESS, (name,))):
        with contextlib.suppress(KeyError):             # never sent, never failed: no series
            metric.remove(*labels)
