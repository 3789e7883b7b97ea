"""Scroll: every beat launches a band of color at the start of the strip that scrolls along it."""
from __future__ import annotations

import math

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import DIRECTION, Effect, strip_x

__all__ = ["Scroll"]

MAX_BANDS = 64


class Scroll(Effect):
    description = ("Each beat launches a band of the beat's palette color at the start of the strip; the bands "
                   "scroll along it (beats_per_strip beats to cross with bpm_sync) and dim as they go; "
                   "downbeat bands are wider.")
    CONFIG_SCHEMA = {
        "beats_per_strip": Param(4.0, "Beats for a band to cross the strip (with bpm_sync)", 0.25, 64.0),
        "speed": Param(0.5, "Strip lengths per second when bpm_sync is false", 0.05, 10.0),
        "width": Param(0.05, "Band half-width as a fraction of the strip (downbeats: wider by downbeat_emphasis)",
                       0.005, 0.5),
        "fade": Param(0.5, "How much a band dims by the end of the strip (0 = not at all)", 0.0, 1.0),
        "direction": DIRECTION,
    }

    def setup(self) -> None:
        self.x = strip_x(self.pixels)
        if self.config["direction"] == "backward":
            self.x = self.x[::-1].copy()
        self.pal = palettes.check_palette(self.config["color_palette"])

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if not ctx.has_beat:
            return self.blank()
        # strips per beat: how far a band moves in one beat
        step = 1.0 / cfg["beats_per_strip"] if cfg["bpm_sync"] else cfg["speed"] * ctx.period
        w = cfg["width"]
        reach = 1.0 + w * (1.0 + cfg["downbeat_emphasis"])
        count = min(MAX_BANDS, int(math.ceil(reach / step)) + 1)
        back = np.arange(count)                                  # 0 = this beat's band, 1 = the one before ...
        pos = ((back + ctx.phase) * step).astype(np.float32)
        down = (ctx.beat_in_bar - 1 - back) % max(ctx.meter, 1) == 0
        half = np.where(down, w * (1.0 + cfg["downbeat_emphasis"]), w).astype(np.float32)
        gain = np.where(down, 1.0, 1.0 - 0.6 * cfg["downbeat_emphasis"]) * (1.0 - cfg["fade"] * np.clip(pos, 0.0, 1.0))
        prof = np.clip(1.0 - np.abs(self.x[None, :] - pos[:, None]) / half[:, None], 0.0, 1.0)  # (bands, pixels)
        colors = self.pal[(ctx.beat - back) % len(self.pal)] * gain[:, None].astype(np.float32)
        return np.minimum(prof.T @ colors, 1.0).astype(np.float32)
