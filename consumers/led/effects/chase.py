"""BPM-synced chase: pulses run along the strip, a fixed number of beats per lap."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["Chase"]


class Chase(Effect):
    description = "Pulses scroll along the strip in step with the tempo and brighten on beats."
    CONFIG_SCHEMA = {
        "beats_per_cycle": Param(4, "Beats for a pulse to travel the whole strip (with bpm_sync)", 1, 64),
        "speed": Param(0.5, "Strip lengths per second when bpm_sync is false", 0.01, 10.0),
        "pulses": Param(3, "Number of evenly spaced pulses", 1, 32),
        "width": Param(0.08, "Pulse half-width as a fraction of the strip", 0.005, 1.0),
        "flash_boost": Param(0.5, "Share of the brightness that flashes on each beat", 0.0, 1.0),
        "direction": Param("forward", "Direction of travel", choices=("forward", "backward")),
    }

    def setup(self) -> None:
        self.x = ((np.arange(self.pixels) + 0.5) / self.pixels).astype(np.float32)

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if cfg["bpm_sync"]:
            pos = ctx.beat_pos / cfg["beats_per_cycle"] if ctx.has_beat else 0.0
        else:
            pos = ctx.t * cfg["speed"]
        sign = 1.0 if cfg["direction"] == "forward" else -1.0
        d = ((self.x - sign * pos) * cfg["pulses"]) % 1.0
        dist = np.minimum(d, 1.0 - d) / cfg["pulses"]
        level = np.clip(1.0 - dist / cfg["width"], 0.0, 1.0)
        boost = cfg["flash_boost"]
        gain = (1.0 - boost) + boost * self.flash(ctx, 0.5) * self.accent(ctx)
        colors = palettes.sample(cfg["color_palette"], self.x + 0.25 * pos)
        return (colors * (level * gain)[:, None]).astype(np.float32)
