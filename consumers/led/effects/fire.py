"""Fire: heat rising from the start of the strip, diffusing and cooling, fed by the loudness."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import SEED, Effect

__all__ = ["Fire"]

CELLS = 64            # the simulation's resolution, stretched over the strip: the flames look the same on any length
STEPS_PER_S = 60.0    # fixed simulation rate: the flames move at the same speed at any frame rate
MAX_STEPS = 6         # steps caught up at most per frame (after a pause)


class Fire(Effect):
    description = ("Fire (after Fire2012): heat sparks at the base, rises, diffuses and cools; the louder the "
                   "music (intensity) the more and hotter the sparks, beats flare up. Heat colors (black, red, "
                   "yellow, white) tinted by color_palette's first stop; mirror burns from both ends.")
    CONFIG_SCHEMA = {
        "cooling": Param(0.5, "How fast the flames cool (higher: shorter flames)", 0.0, 1.0),
        "sparking": Param(0.6, "Chance of a new spark per step at full loudness", 0.0, 1.0),
        "beat_flare": Param(0.5, "Extra sparks and heat on beats", 0.0, 1.0),
        "tint": Param(0.0, "How much color_palette's first stop tints the flames (0 = plain heat colors)", 0.0, 1.0),
        "mirror": Param(False, "Burn from both ends toward the middle"),
        "seed": SEED,
    }

    def setup(self) -> None:
        cfg = self.config
        self.heat = np.zeros(CELLS, dtype=np.float32)
        self.rng = np.random.default_rng(cfg["seed"])
        self._t: float | None = None
        self._acc = 0.0
        n = self.pixels
        x = (np.arange(n) + 0.5) / n
        if cfg["mirror"]:
            x = 1.0 - np.abs(2.0 * x - 1.0)
        self.src = np.minimum((x * CELLS).astype(np.int64), CELLS - 1)
        self.tint = palettes.stop(cfg["color_palette"], 0)

    def _step(self, spark: float, flare: float) -> None:
        h, rng = self.heat, self.rng
        h -= rng.random(CELLS, dtype=np.float32) * np.float32(0.02 + 0.2 * self.config["cooling"]) * (
            0.3 + np.arange(CELLS, dtype=np.float32) / CELLS)      # cools more toward the tips
        np.maximum(h, 0.0, out=h)
        h[2:] = (h[1:-1] + 2.0 * h[:-2]) / 3.0                       # rises: each cell from the two below
        if rng.random() < spark:
            k = int(rng.integers(0, 7))
            h[k] = min(1.0, h[k] + rng.uniform(0.6, 1.0) * (0.6 + 0.4 * flare))
        if flare > 0.5:
            h[:3] = np.maximum(h[:3], flare)

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        loud = float(self.curve(ctx.intensity))
        flare = cfg["beat_flare"] * self.flash(ctx, 0.5) * self.accent(ctx)
        spark = min(1.0, cfg["sparking"] * loud + flare)
        if self._t is None:
            steps = 1
        else:
            self._acc += max(ctx.t - self._t, 0.0) * STEPS_PER_S
            steps = min(int(self._acc), MAX_STEPS)
            self._acc = min(self._acc - int(self._acc), 1.0)
        self._t = ctx.t
        for _ in range(steps):
            self._step(spark, flare)
        h = self.heat[self.src] * np.float32(0.4 + 0.6 * loud)
        rgb = np.stack([np.clip(3.0 * h, 0.0, 1.0), np.clip(3.0 * h - 1.0, 0.0, 1.0),
                        np.clip(3.0 * h - 2.0, 0.0, 1.0)], axis=1)
        if cfg["tint"] > 0:
            rgb = rgb * (1.0 - cfg["tint"]) + (h[:, None] * self.tint) * cfg["tint"]
        return np.minimum(rgb, 1.0).astype(np.float32)
