"""VU: a level meter of the loudness with a peak that holds, then falls."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import Effect, smoothing, strip_x

__all__ = ["Vu"]

# classic meter colors along the strip: green, yellow from 60 %, red from 85 %
_METER = np.array([[0.0, 1.0, 0.1], [1.0, 0.85, 0.0], [1.0, 0.05, 0.0]], dtype=np.float32)


class Vu(Effect):
    description = ("A VU / power meter of the loudness (fast attack, slower release) with a white peak-hold "
                   "pixel that holds hold_s and then falls; from the start of the strip or from its center.")
    CONFIG_SCHEMA = {
        "attack_s": Param(0.03, "Time constant of a rising level (s)", 0.0, 2.0),
        "release_s": Param(0.3, "Time constant of a falling level (s)", 0.0, 5.0),
        "hold_s": Param(1.0, "Seconds the peak pixel holds before it falls", 0.0, 10.0),
        "fall": Param(0.5, "Strip lengths per second the peak falls after holding", 0.01, 10.0),
        "gain": Param(1.0, "Multiplies the loudness before the intensity curve", 0.1, 4.0),
        "mirror": Param(False, "Meter grows from the center toward both ends"),
        "meter_colors": Param(True, "Green / yellow / red along the meter (false: color_palette)"),
        "background": Param(0.04, "Level of the unlit part of the meter", 0.0, 0.5),
    }

    def setup(self) -> None:
        x = strip_x(self.pixels)
        self.pos = np.abs(x - 0.5) * 2.0 if self.config["mirror"] else x
        if self.config["meter_colors"]:
            self.colors = np.where((self.pos < 0.6)[:, None], _METER[0],
                                   np.where((self.pos < 0.85)[:, None], _METER[1], _METER[2])).astype(np.float32)
        else:
            self.colors = palettes.sample(self.config["color_palette"], 0.7 * self.pos)
        self.level = 0.0
        self.peak, self.peak_at = 0.0, 0.0
        self._t: float | None = None

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        target = float(self.curve(min(1.0, ctx.intensity * cfg["gain"])))
        dt = 0.0 if self._t is None else max(ctx.t - self._t, 0.0)
        self._t = ctx.t
        tau = cfg["attack_s"] if target > self.level else cfg["release_s"]
        self.level += smoothing(dt, tau) * (target - self.level)
        if self.level >= self.peak:
            self.peak, self.peak_at = self.level, ctx.t
        elif ctx.t - self.peak_at > cfg["hold_s"]:
            self.peak = max(self.level, self.peak - cfg["fall"] * dt)
        lit = np.where(self.pos < self.level, np.float32(1.0), np.float32(cfg["background"]))
        out = self.colors * lit[:, None]
        if self.peak > 0.01:
            out[np.abs(self.pos - self.peak) <= 0.5 / self.pixels * (2.0 if cfg["mirror"] else 1.0)] = 1.0
        return out.astype(np.float32)
