"""Rain: every beat spawns drops high on the strip that fall toward its start, trailing a tail."""
from __future__ import annotations

import math

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import SEED, Effect, beat_rng, strip_x

__all__ = ["Rain"]


class Rain(Effect):
    description = ("Each beat spawns drops at random heights in the upper half of the strip (pixel 0 is the "
                   "ground); they fall, trailing a tail, and reach the ground within fall_beats beats; downbeats "
                   "spawn more (downbeat_emphasis). The same seed rains the same way on the same beats.")
    CONFIG_SCHEMA = {
        "drops_per_beat": Param(3, "Drops spawned on each beat", 1, 16),
        "fall_beats": Param(2.0, "Beats for a drop to fall the whole strip", 0.25, 16.0),
        "tail": Param(0.08, "Length of a drop's tail as a fraction of the strip", 0.005, 0.5),
        "white": Param(0.3, "How white a drop's head is (0 = palette color)", 0.0, 1.0),
        "seed": SEED,
    }

    def setup(self) -> None:
        self.x = strip_x(self.pixels)
        self._drops: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _spawn(self, beat: int, down: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start height, speed factor, color) of the drops of ``beat``, drawn once per beat."""
        d = self._drops.get(beat)
        if d is None:
            cfg = self.config
            n = cfg["drops_per_beat"] + (int(round(cfg["drops_per_beat"] * cfg["downbeat_emphasis"])) if down else 0)
            rng = beat_rng(cfg["seed"], beat)
            start = rng.uniform(0.5, 1.0, n).astype(np.float32)
            speed = rng.uniform(0.8, 1.25, n).astype(np.float32)
            color = palettes.sample(cfg["color_palette"], rng.random(n, dtype=np.float32))
            d = self._drops[beat] = (start, speed, color)
        return d

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        if not ctx.has_beat:
            return self.blank()
        fall = cfg["fall_beats"]
        count = int(math.ceil(fall * 1.25 * (1.0 + cfg["tail"]))) + 1     # beats whose drops may still fall
        for old in [b for b in self._drops if not ctx.beat - count <= b <= ctx.beat]:
            del self._drops[old]
        heads, colors = [], []
        for back in range(count):
            start, speed, color = self._spawn(ctx.beat - back, (ctx.beat_in_bar - 1 - back) % max(ctx.meter, 1) == 0)
            heads.append(start - speed * np.float32((back + ctx.phase) / fall))
            colors.append(color)
        head = np.concatenate(heads)
        color = np.concatenate(colors)
        alive = head > -cfg["tail"]
        head, color = head[alive], color[alive]
        if head.size == 0:
            return self.blank()
        above = self.x[None, :] - head[:, None]                      # > 0: the tail, above the head
        prof = np.where(above >= 0.0, np.clip(1.0 - above / cfg["tail"], 0.0, 1.0) ** 2, 0.0)
        prof[np.abs(above) <= 0.5 / self.pixels] = 1.0               # the head pixel
        color = color + (1.0 - color) * np.float32(cfg["white"] * 0.5)
        return np.minimum(prof.T.astype(np.float32) @ color, 1.0).astype(np.float32)
