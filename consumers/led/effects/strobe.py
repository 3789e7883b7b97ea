"""Strobe: tempo-locked strobing during high-energy sections, a plain beat pulse otherwise."""
from __future__ import annotations

import numpy as np

from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["Strobe"]


class Strobe(Effect):
    description = ("Strobes in step with the beat while the section is high-energy (chorus by default, or "
                   "loud); elsewhere a dim beat pulse.")
    CONFIG_SCHEMA = {
        "rate": Param(2, "Strobe flashes per beat", 1, 8),
        "duty": Param(0.3, "Fraction of each strobe period that is lit", 0.05, 0.9),
        "on_chorus": Param(True, "Strobe during choruses"),
        "on_bridge": Param(False, "Strobe during bridges"),
        "energy_threshold": Param(0.85, "Also strobe when loudness reaches this (1 = never by loudness)", 0.0, 1.0),
        "calm_level": Param(0.4, "Peak of the beat pulse outside high-energy parts", 0.0, 1.0),
        "color_palette": Param("white", "Palette the colors come from", choices=Effect.CONFIG_SCHEMA[
            "color_palette"].choices),
    }

    def high_energy(self, ctx: RenderContext) -> bool:
        cfg = self.config
        return ((ctx.section == "chorus" and cfg["on_chorus"]) or (ctx.section == "bridge" and cfg["on_bridge"])
                or (cfg["energy_threshold"] < 1.0 and ctx.intensity >= cfg["energy_threshold"]))

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        out = self.blank()
        if not ctx.has_beat:
            return out
        color = self.beat_color(ctx)
        if self.high_energy(ctx):
            clock = ctx.phase if cfg["bpm_sync"] else ctx.t * 2.0
            if (clock * cfg["rate"]) % 1.0 < cfg["duty"]:
                out[:] = color
            return out
        out[:] = color * (cfg["calm_level"] * self.flash(ctx, 0.5) * self.accent(ctx))
        return out
