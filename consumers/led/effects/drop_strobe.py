"""Drop strobe: dark (or a dim beat pulse) until a drop, then a tempo-locked strobe for a few beats."""
from __future__ import annotations

import numpy as np

from ..params import Param
from ..state import RenderContext
from .base import PALETTE_NAMES, Effect, bar_start

__all__ = ["DropStrobe"]


class DropStrobe(Effect):
    description = ("Strobes only on a drop, for `beats` beats after it: from the downbeat nearest the drop a "
                   "build-up foresaw (intensity stage, on_predicted) or from a drop as it is detected (a "
                   "fraction of a second late); between drops dark, or a dim beat pulse (idle_level).")
    CONFIG_SCHEMA = {
        "beats": Param(8, "Beats the strobe lasts after a drop", 1, 64),
        "rate": Param(2, "Strobe flashes per beat", 1, 8),
        "duty": Param(0.3, "Fraction of each strobe period that is lit", 0.05, 0.9),
        "on_predicted": Param(True, "Start on the downbeat nearest a foreseen drop (else only on detected ones)"),
        "idle_level": Param(0.0, "Peak of a beat pulse between drops (0 = dark)", 0.0, 1.0),
        "color_palette": Param("white", "Palette the colors come from", choices=PALETTE_NAMES),
    }

    def strobe_start(self, ctx: RenderContext) -> float | None:
        """When the strobe in force began (the latest drop start not after ``ctx.t``), or None."""
        starts = [ctx.drop_time] if ctx.drop_time is not None else []
        if self.config["on_predicted"] and ctx.drop_expected is not None and ctx.has_beat:
            bar = max(ctx.meter, 1) * ctx.period
            d0 = bar_start(ctx)
            starts.append(d0 + round((ctx.drop_expected - d0) / bar) * bar)   # its nearest downbeat
        starts = [s for s in starts if s <= ctx.t]
        return max(starts) if starts else None

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        out = self.blank()
        start = self.strobe_start(ctx)
        color = self.beat_color(ctx)
        if start is not None and ctx.t - start < cfg["beats"] * ctx.period:
            clock = ctx.beat_pos if ctx.has_beat and cfg["bpm_sync"] else ctx.t * 2.0
            if (clock * cfg["rate"]) % 1.0 < cfg["duty"]:
                out[:] = color
            return out
        if cfg["idle_level"] > 0 and ctx.has_beat:
            out[:] = color * (cfg["idle_level"] * self.flash(ctx, 0.5) * self.accent(ctx))
        return out
