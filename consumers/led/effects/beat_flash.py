"""Beat flash: the whole strip flashes on each predicted beat and fades out."""
from __future__ import annotations

import numpy as np

from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["BeatFlash"]


class BeatFlash(Effect):
    description = "Whole strip flashes on each beat and fades; downbeats are brighter and whiter."
    CONFIG_SCHEMA = {
        "decay": Param(0.5, "Beats until a flash has faded out", 0.05, 1.0),
        "intensity_amount": Param(0.5, "How much the beat's loudness scales the flash (0 = always full)", 0.0, 1.0),
        "background": Param(0.0, "Level of the beat's color between flashes", 0.0, 0.5),
    }

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        color = self.beat_color(ctx)
        if ctx.is_downbeat:
            color = color + (1.0 - color) * (0.5 * cfg["downbeat_emphasis"])
        amount = cfg["intensity_amount"]
        level = self.accent(ctx) * ((1.0 - amount) + amount * float(self.curve(ctx.intensity)))
        value = cfg["background"] + (1.0 - cfg["background"]) * self.flash(ctx, cfg["decay"]) * level
        out = np.empty((self.pixels, 3), dtype=np.float32)
        out[:] = color * value
        return out
