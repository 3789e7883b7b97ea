"""Gradient: the palette laid along the strip, static or scrolling in step with the tempo."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import DIRECTION, Effect, strip_x

__all__ = ["Gradient"]


class Gradient(Effect):
    description = ("A palette gradient along the strip, static or scrolling (one palette cycle every "
                   "beats_per_cycle beats with bpm_sync, else speed cycles per second); brightens on beats.")
    CONFIG_SCHEMA = {
        "spread": Param(1.0, "Palette cycles along the strip", 0.05, 16.0),
        "beats_per_cycle": Param(16.0, "Beats for the gradient to scroll one palette cycle, with bpm_sync "
                                       "(0 = static)", 0.0, 256.0),
        "speed": Param(0.05, "Palette cycles per second when bpm_sync is false (0 = static)", 0.0, 10.0),
        "level": Param(0.6, "Brightness between beats", 0.0, 1.0),
        "pulse": Param(0.4, "Extra brightness at each beat", 0.0, 1.0),
        "decay": Param(0.6, "Beats until a beat's pulse has faded out", 0.05, 1.0),
        "direction": DIRECTION,
    }

    def setup(self) -> None:
        self.x = strip_x(self.pixels) * np.float32(self.config["spread"])

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if cfg["bpm_sync"]:
            shift = ctx.beat_pos / cfg["beats_per_cycle"] if ctx.has_beat and cfg["beats_per_cycle"] > 0 else 0.0
        else:
            shift = ctx.t * cfg["speed"]
        if cfg["direction"] == "backward":
            shift = -shift
        colors = palettes.sample(cfg["color_palette"], self.x - np.float32(shift % 1.0))
        level = min(1.0, cfg["level"] + cfg["pulse"] * self.flash(ctx, cfg["decay"]) * self.accent(ctx))
        return (colors * np.float32(level)).astype(np.float32)
