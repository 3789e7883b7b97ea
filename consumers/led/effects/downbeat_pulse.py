"""Downbeat pulse: the bar's first beat floods the strip and fades over the bar; other beats tick."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["DownbeatPulse"]


class DownbeatPulse(Effect):
    description = "Downbeats fill the strip and fade over the bar; other beats light a short center tick."
    CONFIG_SCHEMA = {
        "bar_decay": Param(2.0, "Beats until a downbeat's flood has faded out", 0.25, 12.0),
        "tick_width": Param(0.2, "Width of the tick on other beats, as a fraction of the strip", 0.0, 1.0),
        "tick_decay": Param(0.4, "Beats until a tick has faded out", 0.05, 1.0),
    }

    def setup(self) -> None:
        x = (np.arange(self.pixels) + 0.5) / self.pixels
        self.center = np.abs(x - 0.5) <= self.config["tick_width"] / 2
        self._down_start: float | None = None

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        out = self.blank()
        if not ctx.has_beat:
            return out
        color = palettes.stop(cfg["color_palette"], ctx.bar)
        if ctx.is_downbeat and ctx.flash_age is not None and self.flash(ctx, 1.0) > 0:
            self._down_start = ctx.t - ctx.flash_age
        if self._down_start is not None:
            age = (ctx.t - self._down_start) / (cfg["bar_decay"] * ctx.period)
            if 0.0 <= age < 1.0:
                out[:] = color * (1.0 - age) ** 2
        if not ctx.is_downbeat:
            tick = self.flash(ctx, cfg["tick_decay"]) * self.accent(ctx)
            out[self.center] = np.maximum(out[self.center], color * tick)
        return out
