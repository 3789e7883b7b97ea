"""Glitter: random pixels flash on each beat and fade."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import SEED, Effect, beat_rng

__all__ = ["Glitter"]


class Glitter(Effect):
    description = ("Glitter on the beat: on each beat a random share of the pixels flashes (more on downbeats, "
                   "per downbeat_emphasis) in palette colors and fades; the same seed sparkles the same pixels "
                   "on the same beats.")
    CONFIG_SCHEMA = {
        "density": Param(0.1, "Share of the pixels that flash on a beat", 0.005, 1.0),
        "decay": Param(0.7, "Beats until a sparkle has faded out", 0.05, 1.0),
        "white": Param(0.5, "How white the sparkles are (0 = palette color)", 0.0, 1.0),
        "background": Param(0.02, "Level of a faint palette glow between sparkles", 0.0, 0.3),
        "seed": SEED,
    }

    def setup(self) -> None:
        self._beat: int | None = None
        self._pattern = self.blank()
        self._glow = palettes.sample(self.config["color_palette"], (np.arange(self.pixels) + 0.5) / self.pixels)

    def _sparkles(self, beat: int, down: bool) -> np.ndarray:
        if beat != self._beat:
            cfg = self.config
            rng = beat_rng(cfg["seed"], beat)
            share = cfg["density"] * (1.0 + cfg["downbeat_emphasis"] if down else 1.0)
            on = rng.random(self.pixels, dtype=np.float32) < share
            color = palettes.sample(cfg["color_palette"], rng.random(self.pixels, dtype=np.float32))
            color += (1.0 - color) * np.float32(cfg["white"])
            level = rng.uniform(0.5, 1.0, self.pixels).astype(np.float32) * on
            self._beat, self._pattern = beat, color * level[:, None]
        return self._pattern

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        out = self._glow * np.float32(cfg["background"])
        if ctx.has_beat:
            level = self.flash(ctx, cfg["decay"]) * self.accent(ctx)
            if level > 0:
                out = np.maximum(out, self._sparkles(ctx.beat, ctx.is_downbeat) * np.float32(level))
        return out.astype(np.float32)
