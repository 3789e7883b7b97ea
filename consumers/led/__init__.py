"""LED consumer: beat-, bar- and section-aware effects on real LED protocols, on time.

Layout: ``state`` (beat grid and levels from events), ``effects/`` (one effect per file,
one registry), ``outputs/`` (one protocol per file), ``render`` (per-device fixed-rate
loop with frames on predicted beats), ``timing`` (latency/offset, onset gate, tap
calibration), ``config`` (URLs, TOML, validation), ``setup`` (devices and presets changed live
from the dashboard, saved in the state directory), ``service`` (the daemon),
``cli`` (``beatbus consume led``).
"""
from __future__ import annotations

from .config import Device, DeviceConfig, LedConfig, SegmentConfig, load_led_toml, parse_output_url, resolve_devices
from .effects import EFFECTS, Effect, create_effect, get_effect, load_effects
from .outputs import HUB, OUTPUTS, FrameHub
from .render import DeviceRunner
from .service import LedPlan, LedService, build_led_service, plan_led
from .state import LedState, RenderContext
from .timing import LightTiming, OnsetGate, TapCalibrator

__all__ = ["build_led_service", "plan_led", "LedService", "LedPlan", "LedConfig", "DeviceConfig",
           "SegmentConfig", "Device", "load_led_toml", "parse_output_url", "resolve_devices", "Effect", "EFFECTS",
           "load_effects", "get_effect", "create_effect", "OUTPUTS", "HUB", "FrameHub", "DeviceRunner", "LedState",
           "RenderContext", "LightTiming", "OnsetGate", "TapCalibrator"]
