"""Energy: loudness drives brightness (whole strip, a level meter, or a meter from the center)."""
from __future__ import annotations

import math

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["Energy"]


class Energy(Effect):
    description = "Loudness to brightness: uniform glow, a level meter, or a meter growing from the center."
    CONFIG_SCHEMA = {
        "mode": Param("uniform", "uniform glow, meter from the start, or center meter",
                      choices=("uniform", "meter", "center")),
        "smoothing_s": Param(0.15, "Time constant smoothing the loudness (s)", 0.0, 5.0),
        "beat_boost": Param(0.3, "Extra brightness flashed on each beat", 0.0, 1.0),
    }

    def setup(self) -> None:
        x = (np.arange(self.pixels) + 0.5) / self.pixels
        self.pos = (np.abs(x - 0.5) * 2.0 if self.config["mode"] == "center" else x).astype(np.float32)
        self.level: float | None = None
        self._t: float | None = None

    def _smooth(self, ctx: RenderContext) -> float:
        tau = self.config["smoothing_s"]
        if self.level is None or tau == 0 or self._t is None:
            self.level = ctx.intensity
        else:
            alpha = 1.0 - math.exp(-max(ctx.t - self._t, 0.0) / tau)
            self.level += alpha * (ctx.intensity - self.level)
        self._t = ctx.t
        return self.level

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        b = float(self.curve(self._smooth(ctx)))
        boost = cfg["beat_boost"] * self.flash(ctx, 0.5) * self.accent(ctx)
        if cfg["mode"] == "uniform":
            out = np.empty((self.pixels, 3), dtype=np.float32)
            out[:] = palettes.sample(cfg["color_palette"], 0.6 * b) * min(1.0, b + boost)
            return out
        colors = palettes.sample(cfg["color_palette"], 0.6 * self.pos)
        lit = (self.pos <= b).astype(np.float32)
        return (colors * np.minimum(1.0, lit * (0.3 + 0.7 * b) + boost)[:, None]).astype(np.float32)
