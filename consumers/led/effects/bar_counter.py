"""Bar counter: the strip in one block per beat of the bar; the current beat's block is lit."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect

__all__ = ["BarCounter"]


class BarCounter(Effect):
    description = ("The strip split into one block per beat of the bar (the meter's beats_per_bar); the "
                   "current beat's block flashes, earlier beats of the bar stay dimly lit; even and odd bars "
                   "take different colors (first and middle stop of color_palette).")
    CONFIG_SCHEMA = {
        "gap": Param(1, "Dark pixels between two blocks", 0, 100),
        "hold": Param(0.5, "Level the current block keeps after its flash", 0.0, 1.0),
        "past_level": Param(0.15, "Level of the blocks of the beats already played in this bar (0 = off)",
                            0.0, 1.0),
        "decay": Param(0.7, "Beats until a block's flash has faded to its hold level", 0.05, 1.0),
    }

    def setup(self) -> None:
        self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        pal = palettes.check_palette(self.config["color_palette"])
        self.colors = (pal[0], pal[len(pal) // 2])

    def _layout(self, meter: int) -> tuple[np.ndarray, np.ndarray]:
        """(block of each pixel, pixel lit at all) for ``meter`` blocks."""
        lay = self._layouts.get(meter)
        if lay is None:
            n, gap = self.pixels, self.config["gap"]
            i = np.arange(n)
            block = np.minimum(i * meter // n, meter - 1)
            start = (np.arange(meter) * n + meter - 1) // meter
            stop = np.append(start[1:], n)
            # the gap sits at the end of each block but the last
            lit = (i < stop[block] - gap) | (block == meter - 1) if gap and n >= 2 * meter else np.ones(n, bool)
            lay = self._layouts[meter] = (block, lit)
        return lay

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        out = self.blank()
        if not ctx.has_beat:
            return out
        meter = max(1, ctx.meter)
        block, lit = self._layout(meter)
        color = self.colors[ctx.bar % 2]
        cur = ctx.beat_in_bar - 1
        level = cfg["hold"] + (1.0 - cfg["hold"]) * self.flash(ctx, cfg["decay"]) * self.accent(ctx)
        levels = np.where(np.arange(meter) < cur, cfg["past_level"], 0.0).astype(np.float32)
        levels[min(cur, meter - 1)] = level
        out[:] = color
        return out * (levels[block] * lit)[:, None]
