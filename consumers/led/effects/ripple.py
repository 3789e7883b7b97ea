"""Ripple: a ring of light spreads from the center on each downbeat."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect, strip_x

__all__ = ["Ripple"]


class Ripple(Effect):
    description = ("On each downbeat a ring spreads from `center` to the ends in beats_to_edge beats, fading "
                   "as it goes, in the bar's palette color; beat_rings adds smaller rings on the other beats.")
    CONFIG_SCHEMA = {
        "beats_to_edge": Param(2.0, "Beats for a downbeat's ring to reach the ends", 0.25, 16.0),
        "width": Param(0.08, "Ring half-width as a fraction of the strip", 0.005, 0.5),
        "center": Param(0.5, "Where the rings start, as a fraction of the strip", 0.0, 1.0),
        "beat_rings": Param(False, "Other beats send a smaller, dimmer ring"),
    }

    def setup(self) -> None:
        x = strip_x(self.pixels)
        c = self.config["center"]
        self.dist = (np.abs(x - c) / max(c, 1.0 - c, 1e-3)).astype(np.float32)   # 0 at the center, 1 at the far end

    def _ring(self, age_beats: float, reach: float) -> np.ndarray:
        r = age_beats / self.config["beats_to_edge"] * reach
        w = self.config["width"] * 2.0
        fade = max(0.0, 1.0 - r / (reach + w)) ** 1.5
        return np.clip(1.0 - np.abs(self.dist - np.float32(r)) / np.float32(w), 0.0, 1.0) * np.float32(fade)

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if not ctx.has_beat:
            return self.blank()
        color = palettes.stop(cfg["color_palette"], ctx.bar)
        level = self._ring(ctx.beat_in_bar - 1 + ctx.phase, 1.0)
        if cfg["beat_rings"] and not ctx.is_downbeat:
            level = np.maximum(level, self._ring(ctx.phase, 0.5) * np.float32(1.0 - 0.6 * cfg["downbeat_emphasis"]))
        return (level[:, None] * color).astype(np.float32)
