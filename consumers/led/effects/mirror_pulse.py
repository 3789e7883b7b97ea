"""Mirror pulse: each beat's light grows symmetrically from both ends (or the center) and recedes."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect, strip_x

__all__ = ["MirrorPulse"]


class MirrorPulse(Effect):
    description = ("A pulse mirrored about the middle of the strip: on each beat light fills from both ends "
                   "toward the center (or from the center out) as far as the beat is strong, then recedes; "
                   "colors mirrored too.")
    CONFIG_SCHEMA = {
        "from_center": Param(False, "Fill from the center outward instead of from the ends inward"),
        "decay": Param(0.6, "Beats until a pulse has receded", 0.05, 1.0),
        "reach": Param(1.0, "How far a full pulse reaches (1 = the whole strip)", 0.05, 1.0),
        "spread": Param(0.5, "Palette cycles from an end to the center", 0.0, 4.0),
    }

    def setup(self) -> None:
        x = strip_x(self.pixels)
        edge = np.minimum(x, 1.0 - x) * 2.0                     # 0 at the ends, 1 at the center
        self.depth = (1.0 - edge) if self.config["from_center"] else edge
        self.colors = palettes.sample(self.config["color_palette"], edge * np.float32(self.config["spread"]))

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if not ctx.has_beat:
            return self.blank()
        fill = cfg["reach"] * self.flash(ctx, cfg["decay"]) * self.accent(ctx)
        if fill <= 0:
            return self.blank()
        # brightest at the leading edge of the fill
        level = np.where(self.depth <= fill, 0.4 + 0.6 * self.depth / np.float32(max(fill, 1e-6)), 0.0)
        return (self.colors * level[:, None].astype(np.float32)).astype(np.float32)
