"""Breathe: the strip swells to full on each downbeat and ebbs over the bar."""
from __future__ import annotations

import math

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect, strip_x

__all__ = ["Breathe"]


class Breathe(Effect):
    description = ("Brightness breathes with the bar: full on the downbeat, lowest mid-bar (or mid-way through "
                   "bars_per_breath bars), scaled by loudness; a slow palette drift, a new base color each breath.")
    CONFIG_SCHEMA = {
        "bars_per_breath": Param(1, "Bars per breath", 1, 16),
        "floor": Param(0.1, "Brightness at the bottom of a breath", 0.0, 1.0),
        "intensity_amount": Param(0.4, "How much loudness scales the brightness (0 = not at all)", 0.0, 1.0),
        "spread": Param(0.3, "Palette cycles along the strip", 0.0, 8.0),
    }

    def setup(self) -> None:
        self.x = strip_x(self.pixels) * np.float32(self.config["spread"])

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        bpb = cfg["bars_per_breath"]
        if ctx.has_beat:
            breath, pos = divmod(ctx.bar, bpb)
            pos = (pos + ctx.bar_phase) / bpb
        else:
            breath, pos = divmod(ctx.t / 4.0, 1.0)                  # a 4 s breath without a beat
        swell = 0.5 + 0.5 * math.cos(2 * math.pi * pos)
        amount = cfg["intensity_amount"]
        level = (cfg["floor"] + (1.0 - cfg["floor"]) * swell) * ((1.0 - amount) + amount * float(self.curve(ctx.intensity)))
        pal = palettes.check_palette(cfg["color_palette"])
        colors = palettes.sample(cfg["color_palette"], self.x + np.float32((int(breath) % len(pal)) / len(pal)))
        return (colors * np.float32(level)).astype(np.float32)
