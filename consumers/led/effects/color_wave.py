"""Color wave: bright and dark waves of palette color travel along the strip in step with the tempo."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import DIRECTION, Effect, strip_x

__all__ = ["ColorWave"]


class ColorWave(Effect):
    description = ("Sine waves of brightness over a palette gradient travel along the strip, one wavelength "
                   "every beats_per_wave beats (bpm_sync) or speed waves per second; louder music, deeper waves.")
    CONFIG_SCHEMA = {
        "wavelength": Param(0.5, "Wavelength as a fraction of the strip", 0.02, 4.0),
        "beats_per_wave": Param(2.0, "Beats for the waves to move one wavelength (with bpm_sync)", 0.25, 64.0),
        "speed": Param(0.5, "Wavelengths per second when bpm_sync is false", 0.01, 10.0),
        "depth": Param(0.8, "How dark the troughs get at full loudness", 0.0, 1.0),
        "intensity_amount": Param(0.5, "How much loudness deepens the waves (0 = always full depth)", 0.0, 1.0),
        "direction": DIRECTION,
    }

    def setup(self) -> None:
        self.k = strip_x(self.pixels) / np.float32(self.config["wavelength"])
        self.colors = palettes.sample(self.config["color_palette"], strip_x(self.pixels))

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if cfg["bpm_sync"]:
            pos = ctx.beat_pos / cfg["beats_per_wave"] if ctx.has_beat else 0.0
        else:
            pos = ctx.t * cfg["speed"]
        if cfg["direction"] == "backward":
            pos = -pos
        amount = cfg["intensity_amount"]
        depth = cfg["depth"] * ((1.0 - amount) + amount * float(self.curve(ctx.intensity)))
        wave = 1.0 - np.float32(depth) * (0.5 - 0.5 * np.cos(2 * np.pi * (self.k - np.float32(pos % 1.0))))
        return (self.colors * wave[:, None]).astype(np.float32)
