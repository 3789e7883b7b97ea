"""Bar-aware pattern: odd and even beats light alternate blocks; every N bars the colors move on."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["BarPattern"]


class BarPattern(Effect):
    description = ("Blocks alternate between odd and even beats, downbeats light all; "
                   "every N bars the color changes and the blocks swap.")
    CONFIG_SCHEMA = {
        "block": Param(4, "Pixels per block (blocks alternate between odd and even beats)", 1, 1000),
        "every_n_bars": Param(4, "Bars between color changes (the blocks also swap)", 1, 64),
        "decay": Param(0.6, "Beats until a beat's blocks have faded out", 0.05, 1.0),
    }

    def setup(self) -> None:
        self.group = (np.arange(self.pixels) // self.config["block"]) % 2

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        out = self.blank()
        if not ctx.has_beat:
            return out
        phrase = ctx.bar // cfg["every_n_bars"]
        color = palettes.stop(cfg["color_palette"], phrase)
        level = self.flash(ctx, cfg["decay"]) * self.accent(ctx)
        if ctx.is_downbeat:
            out[:] = color * level
        else:
            lit = self.group == ((ctx.beat_in_bar - 1) + phrase) % 2
            out[lit] = color * level
        return out
