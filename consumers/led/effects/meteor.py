"""Meteor: a comet crosses the strip once per bar, its head on the bar's phase."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect, strip_x

__all__ = ["Meteor"]


class Meteor(Effect):
    description = ("A comet with a fading tail crosses the strip once every bars_per_pass bars: its head is at "
                   "the start on the downbeat and at the end on the next one (bounce: back the other way the "
                   "next pass); a new color each pass.")
    CONFIG_SCHEMA = {
        "bars_per_pass": Param(1, "Bars for one crossing of the strip", 1, 16),
        "tail": Param(0.3, "Tail length as a fraction of the strip", 0.01, 1.0),
        "bounce": Param(True, "Every other pass runs back the other way"),
        "head_white": Param(0.5, "How white the head is", 0.0, 1.0),
    }

    def setup(self) -> None:
        self.x = strip_x(self.pixels)

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if not ctx.has_beat:
            return self.blank()
        bpp = cfg["bars_per_pass"]
        n_pass = ctx.bar // bpp
        pos = ((ctx.bar % bpp) + ctx.bar_phase) / bpp
        back = cfg["bounce"] and n_pass % 2 == 1
        behind = (pos - self.x) if not back else (self.x - (1.0 - pos))     # > 0: behind the head
        level = np.where(behind >= -0.5 / self.pixels, np.clip(1.0 - behind / cfg["tail"], 0.0, 1.0) ** 2, 0.0)
        color = palettes.stop(cfg["color_palette"], n_pass)
        head = color + (1.0 - color) * np.float32(cfg["head_white"])
        out = level[:, None] * color
        out[np.abs(behind) <= 0.5 / self.pixels + 1e-6] = head
        return out.astype(np.float32)
