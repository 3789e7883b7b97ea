"""Twinkle: pixels twinkle at their own pace, in time with the beat, brighter when it is louder."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import SEED, Effect

__all__ = ["Twinkle"]


class Twinkle(Effect):
    description = ("A share of the pixels twinkle, each with its own phase, pace (within +/-30 %) and palette "
                   "color, about once every beats_per_twinkle beats (2 s without a beat); loudness and beats "
                   "brighten them. The same seed twinkles the same pixels.")
    CONFIG_SCHEMA = {
        "density": Param(0.3, "Share of the pixels that twinkle", 0.01, 1.0),
        "beats_per_twinkle": Param(4.0, "Beats per twinkle of a pixel (with bpm_sync)", 0.25, 64.0),
        "sharpness": Param(4.0, "Higher: shorter, sharper twinkles", 1.0, 16.0),
        "level": Param(0.7, "Peak brightness of a twinkle", 0.0, 1.0),
        "beat_boost": Param(0.3, "Extra brightness on each beat", 0.0, 1.0),
        "seed": SEED,
    }

    def setup(self) -> None:
        rng = np.random.default_rng(self.config["seed"])
        n = self.pixels
        self.on = rng.random(n) < self.config["density"]
        self.phase = rng.random(n)                         # float64: the clock grows large over a night
        self.pace = rng.uniform(0.7, 1.3, n)
        self.colors = palettes.sample(self.config["color_palette"], rng.random(n, dtype=np.float32))

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if cfg["bpm_sync"] and ctx.has_beat:
            clock = ctx.beat_pos / cfg["beats_per_twinkle"]
        else:
            clock = ctx.t / 2.0
        arg = ((self.pace * clock + self.phase) % 1.0).astype(np.float32)
        tw = np.maximum(np.sin(np.float32(2 * np.pi) * arg), 0.0) ** np.float32(cfg["sharpness"])
        loud = 0.4 + 0.6 * float(self.curve(ctx.intensity))
        boost = cfg["beat_boost"] * self.flash(ctx, 0.5) * self.accent(ctx)
        level = np.float32(min(1.0, cfg["level"] * loud + boost)) * tw * self.on
        return np.minimum(self.colors * level[:, None], 1.0).astype(np.float32)
