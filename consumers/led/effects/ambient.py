"""Ambient: a slow, dim, breathing palette drift for when no music (or no beat) is detected."""
from __future__ import annotations

import math

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["Ambient"]


class Ambient(Effect):
    description = "Slowly drifting, breathing palette; shown when there is no music or no beat."
    CONFIG_SCHEMA = {
        "color_palette": Param("ocean", "Palette the colors come from",
                               choices=Effect.CONFIG_SCHEMA["color_palette"].choices),
        "level": Param(0.25, "Brightness", 0.0, 1.0),
        "drift_s": Param(30.0, "Seconds for the colors to drift through the palette once", 1.0, 3600.0),
        "breath_s": Param(6.0, "Seconds per breath (brightness swell)", 0.5, 120.0),
        "breath_depth": Param(0.3, "How much the brightness swells (0 = steady)", 0.0, 1.0),
        "spread": Param(1.0, "Palette cycles along the strip", 0.0, 8.0),
    }

    def setup(self) -> None:
        self.x = ((np.arange(self.pixels) + 0.5) / self.pixels).astype(np.float32)

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        breath = 1.0 - cfg["breath_depth"] * 0.5 * (1.0 + math.sin(2 * math.pi * ctx.t / cfg["breath_s"]))
        drift = (ctx.t / cfg["drift_s"]) % 1.0
        colors = palettes.sample(cfg["color_palette"], self.x * cfg["spread"] + drift)
        return (colors * (cfg["level"] * breath)).astype(np.float32)
