"""Wavelength: the palette laid along the strip, shifting through its colors as the music gets louder."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect, smoothing, strip_x

__all__ = ["Wavelength"]


class Wavelength(Effect):
    description = ("The palette along the strip like a spectrum; loudness shifts it (shift palette cycles from "
                   "silence to full) and sets the brightness; it also drifts one cycle every drift_beats beats.")
    CONFIG_SCHEMA = {
        "spread": Param(1.0, "Palette cycles along the strip", 0.05, 16.0),
        "shift": Param(0.5, "Palette cycles the colors move from silence to full loudness", 0.0, 4.0),
        "smoothing_s": Param(0.25, "Time constant smoothing the loudness (s)", 0.0, 5.0),
        "floor": Param(0.2, "Brightness in silence", 0.0, 1.0),
        "drift_beats": Param(32.0, "Beats per slow drift through the palette (0 = no drift; 16 s per cycle "
                                   "when bpm_sync is false)", 0.0, 1024.0),
    }

    def setup(self) -> None:
        self.x = strip_x(self.pixels) * np.float32(self.config["spread"])
        self.level: float | None = None
        self._t = 0.0

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        a = 1.0 if self.level is None else smoothing(ctx.t - self._t, cfg["smoothing_s"])
        self.level = ctx.intensity if self.level is None else self.level + a * (ctx.intensity - self.level)
        self._t = ctx.t
        loud = float(self.curve(self.level))
        drift = 0.0
        if cfg["drift_beats"] > 0:
            drift = ctx.beat_pos / cfg["drift_beats"] if cfg["bpm_sync"] and ctx.has_beat else ctx.t / 16.0
        colors = palettes.sample(cfg["color_palette"], self.x + np.float32((cfg["shift"] * loud + drift) % 1.0))
        return (colors * np.float32(cfg["floor"] + (1.0 - cfg["floor"]) * loud)).astype(np.float32)
