"""Section colors: each song section has its palette; the strip crossfades when the section changes."""
from __future__ import annotations

import numpy as np

from .. import palettes
from ..params import Param
from ..state import RenderContext
from .base import PALETTE_NAMES, Effect

__all__ = ["SectionColors"]

_LABELS = ("intro", "verse", "chorus", "bridge", "outro")


class SectionColors(Effect):
    description = ("A palette per section label (intro, verse, chorus, bridge, outro; unknown sections use "
                   "color_palette), drifting with the beat, pulsing on beats, crossfading on changes.")
    CONFIG_SCHEMA = {
        **{f"palette_{label}": Param(palettes.SECTION_PALETTES[label], f"Palette during the {label}",
                                     choices=PALETTE_NAMES) for label in _LABELS},
        "crossfade_s": Param(2.0, "Seconds to crossfade to a new section's palette", 0.0, 30.0),
        "base_level": Param(0.35, "Brightness between beats", 0.0, 1.0),
        "pulse": Param(0.65, "Extra brightness at each beat", 0.0, 1.0),
        "decay": Param(0.6, "Beats until a pulse has faded out", 0.05, 1.0),
    }

    def setup(self) -> None:
        self.x = ((np.arange(self.pixels) + 0.5) / self.pixels).astype(np.float32)
        self._current: str | None = None
        self._previous: str | None = None
        self._changed_at = 0.0

    def palette_for(self, section: str) -> str:
        return self.config.get(f"palette_{section}", self.config["color_palette"])

    def render(self, ctx: RenderContext) -> np.ndarray:
        cfg = self.config
        pal = self.palette_for(ctx.section)
        if pal != self._current:
            self._previous, self._current, self._changed_at = self._current, pal, ctx.t
        drift = 0.05 * ctx.beat_pos if cfg["bpm_sync"] else 0.1 * ctx.t
        colors = palettes.sample(pal, self.x + drift)
        mix = 1.0 if cfg["crossfade_s"] == 0 else min(1.0, (ctx.t - self._changed_at) / cfg["crossfade_s"])
        if self._previous is not None and mix < 1.0:
            colors = colors * mix + palettes.sample(self._previous, self.x + drift) * (1.0 - mix)
        level = cfg["base_level"] + cfg["pulse"] * self.flash(ctx, cfg["decay"]) * self.accent(ctx)
        return (colors * min(level, 1.0)).astype(np.float32)
