"""Bands: bass, mids and highs as three layers over the whole strip."""
from __future__ import annotations

import math

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import SEED, Effect, beat_rng, smoothing, strip_x

__all__ = ["Bands"]


class Bands(Effect):
    description = ("The intensity stage's three band energies (bass, mids, highs of its IntensityEvents) as "
                   "layers over the whole strip: bass a wide wash, mids blobs drifting with the beat, highs "
                   "glitter redrawn every quarter beat; each layer is as bright as its band is loud.")
    CONFIG_SCHEMA = {
        "smoothing_s": Param(0.08, "Time constant smoothing the band levels (s)", 0.0, 5.0),
        "blobs": Param(5, "Number of mids blobs along the strip", 1, 64),
        "glitter": Param(0.25, "Share of pixels the highs may light at full highs level", 0.0, 1.0),
        "gain": Param(1.0, "Multiplies the band levels before the intensity curve", 0.1, 4.0),
        "seed": SEED,
    }

    def setup(self) -> None:
        x = strip_x(self.pixels)
        self.wash = 1.0 - 0.5 * np.abs(2.0 * x - 1.0)             # bass: brightest in the middle
        self.phase = x * np.float32(self.config["blobs"])
        pal = self.config["color_palette"]
        self.colors = palettes.sample(pal, np.array([0.0, 1 / 3, 2 / 3], dtype=np.float32))
        self.levels = np.zeros(3, dtype=np.float32)
        self._t: float | None = None
        self._step: int | None = None
        self._grain = np.zeros(self.pixels, dtype=np.float32)

    def _glitter(self, step: int) -> np.ndarray:
        if step != self._step:
            self._step, self._grain = step, beat_rng(self.config["seed"], step).random(self.pixels, dtype=np.float32)
        return self._grain

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        target = np.minimum(np.array([ctx.bass, ctx.mids, ctx.highs], dtype=np.float32) * cfg["gain"], 1.0)
        a = 1.0 if self._t is None else smoothing(ctx.t - self._t, cfg["smoothing_s"])
        self.levels += np.float32(a) * (target - self.levels)
        self._t = ctx.t
        low, mid, high = (float(v) for v in self.curve(self.levels))
        clock = ctx.beat_pos if ctx.has_beat else ctx.t * 2.0
        blob = (0.5 + 0.5 * np.cos(2 * np.pi * (self.phase - np.float32(clock / 8.0 % 1.0)))) ** 4
        grain = self._glitter(int(math.floor(clock * 4.0))) < cfg["glitter"] * high
        out = (self.wash * low)[:, None] * self.colors[0]
        out += (blob * mid)[:, None] * self.colors[1]
        out[grain] += self.colors[2] * np.float32(0.5 + 0.5 * high)
        return np.minimum(out, 1.0).astype(np.float32)
