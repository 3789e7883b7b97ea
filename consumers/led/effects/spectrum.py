"""Spectrum: bass, mids and highs (from IntensityEvents) as three bars."""
from __future__ import annotations

import math

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["Spectrum"]


class Spectrum(Effect):
    description = "Three bars (bass, mids, highs) whose lengths follow the band levels."
    CONFIG_SCHEMA = {
        "smoothing_s": Param(0.1, "Time constant smoothing the band levels (s)", 0.0, 5.0),
        "mirror": Param(False, "Bars grow from each zone's center instead of its start"),
    }

    def setup(self) -> None:
        n = self.pixels
        zone = np.minimum(np.arange(n) * 3 // n, 2)
        self.zone = zone
        start = np.array([(z * n + 2) // 3 for z in range(3)])
        stop = np.array([((z + 1) * n + 2) // 3 for z in range(3)])
        width = np.maximum(stop - start, 1)
        pos = (np.arange(n) - start[zone] + 0.5) / width[zone]
        self.pos = np.abs(pos - 0.5) * 2.0 if self.config["mirror"] else pos
        self.colors = palettes.sample(self.config["color_palette"], zone / 3.0)
        self.levels = np.zeros(3, dtype=np.float32)
        self._t: float | None = None

    def render(self, ctx: RenderContext) -> np.ndarray:
        target = np.array([ctx.bass, ctx.mids, ctx.highs], dtype=np.float32)
        tau = self.config["smoothing_s"]
        if self._t is None or tau == 0:
            self.levels = target
        else:
            self.levels = self.levels + (1.0 - math.exp(-max(ctx.t - self._t, 0.0) / tau)) * (target - self.levels)
        self._t = ctx.t
        height = np.asarray(self.curve(self.levels), dtype=np.float32)[self.zone]
        lit = (self.pos < height).astype(np.float32)
        return (self.colors * lit[:, None]).astype(np.float32)
