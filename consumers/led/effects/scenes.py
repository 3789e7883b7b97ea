"""Scenes: a playlist of effects that moves on with the song's form, on the bar line.

The next scene starts, with a short crossfade from the downbeat's onset,

- on the first downbeat after the structure stage *confirms* a section boundary (``on_sections``;
  a confirmation comes a few bars after the boundary itself, so the change lands a few bars into
  the new section; a boundary at which the scene already changed, on its drop or the phrase
  grid, changes nothing; with a drop foreseen within 2 bars the change waits for the drop);
- on the downbeat of a drop (``on_drops``): the downbeat nearest the drop time that the intensity
  stage foresees from a build-up, else, for a drop nobody foresaw, the first downbeat after it
  is detected (a bar late at most);
- every ``every_bars`` bars on the downbeat (phrase mode), counted from the last section start or
  drop the scenes changed on (from bar 0 before the first).
"""
from __future__ import annotations

import collections
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError

from ..params import Param
from ..state import RenderContext
from .base import PALETTE_NAMES, Effect, bar_start

__all__ = ["Scenes", "SceneChange", "SCENE_EFFECTS"]

# every effect file of this package but the base and this one (read from the folder: no import cycle)
SCENE_EFFECTS = tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                             if m.name not in ("base", "scenes")))
SLOTS = 6
_DEFAULTS = ("gradient", "scroll", "ripple", "bar_counter", "meteor", "glitter")
_SHARED = ("beat_sensitivity", "downbeat_emphasis", "bpm_sync", "intensity_curve")


@dataclass(frozen=True, slots=True)
class SceneChange:
    """One change: when the new scene started (its downbeat's onset, wall s), why, which scene, on which bar."""
    time: float
    reason: str          # "section", "drop" or "phrase"
    scene: int
    bar: int


class Scenes(Effect):
    description = ("A playlist of up to 6 effects (scene_1..scene_6, each with an optional palette) that moves "
                   "to the next on the bar line: on the first downbeat after a section boundary is confirmed, "
                   "on the downbeat of a drop (the one nearest the drop a build-up foresees, else the first "
                   "after a detected drop) and, in phrase mode, every every_bars bars; with a short crossfade.")
    CONFIG_SCHEMA = {
        **{f"scene_{i}": Param(_DEFAULTS[i - 1], f"Effect of scene {i} (none: no scene {i})",
                               choices=("none", *SCENE_EFFECTS)) for i in range(1, SLOTS + 1)},
        **{f"palette_{i}": Param("auto", f"Palette of scene {i} (auto: the effect's own default)",
                                 choices=("auto", *PALETTE_NAMES)) for i in range(1, SLOTS + 1)},
        "on_sections": Param(True, "Change on the first downbeat after a section boundary is confirmed"),
        "on_drops": Param(True, "Change on the downbeat of a drop (foreseen by a build-up, or detected)"),
        "every_bars": Param(0, "Phrase mode: also change every N bars on the downbeat, counted from the last "
                               "section start or drop (0 = off; 8 or 16 are usual phrases)", 0, 64),
        "crossfade_beats": Param(0.5, "Beats the crossfade to the next scene lasts (0 = cut)", 0.0, 8.0),
    }

    def setup(self) -> None:
        from . import create_effect  # the registry imports this module

        cfg = self.config
        shared = {k: cfg[k] for k in _SHARED}
        self.scenes: list[tuple[str, Effect]] = []
        for i in range(1, SLOTS + 1):
            name = cfg[f"scene_{i}"]
            if name == "none":
                continue
            sub = dict(shared)
            if cfg[f"palette_{i}"] != "auto":
                sub["color_palette"] = cfg[f"palette_{i}"]
            self.scenes.append((name, create_effect(name, self.pixels, sub)))
        if not self.scenes:
            raise ConfigError("effect scenes: every scene_N is none: name at least one effect")
        self.index = 0
        self.changes: collections.deque[SceneChange] = collections.deque(maxlen=1000)
        self._prev: Effect | None = None
        self._fade_from = 0.0
        self._seen: tuple | None = None          # (boundary, drop expected, drop time) already acted on
        self._beat: int | None = None            # beat of the previous frame: a downbeat is decided once
        self._due_section: float | None = None   # learned at (wall s): change on the first downbeat after
        self._section_bar = 0
        self._due_drop: float | None = None      # a detected drop nobody foresaw: learned at
        self._drop_target: float | None = None   # a foreseen drop: change on the downbeat nearest it
        self._last = -float("inf")               # onset of the last change
        self._last_bar: int | None = None
        self._last_drop = -float("inf")          # onset of the last change made for a drop
        self._origin = 0                         # the phrase grid counts bars from here

    @property
    def current(self) -> str:
        return self.scenes[self.index][0]

    # -- what the song did ------------------------------------------------------------
    def _learn(self, ctx: RenderContext) -> None:
        seen = (ctx.section_boundary, ctx.drop_expected, ctx.drop_time)
        if self._seen is None:                   # what happened before this effect started is not news
            self._seen = seen
            return
        if seen == self._seen:
            return
        cfg = self.config
        bar = max(ctx.meter, 1) * ctx.period
        boundary, expected, dropped = seen
        if boundary != self._seen[0] and boundary is not None and cfg["on_sections"] and ctx.has_beat:
            if self._last < boundary - 0.5 * bar:          # not yet changed for this section
                self._due_section = ctx.t
                self._section_bar = ctx.bar + round((boundary - bar_start(ctx)) / bar)
        if expected != self._seen[1] and cfg["on_drops"]:
            self._drop_target = expected
        if dropped != self._seen[2] and dropped is not None and cfg["on_drops"]:
            if self._last_drop < dropped - bar:            # not the drop already foreseen and changed on
                self._due_drop = ctx.t
                if self._drop_target is not None and self._drop_target > dropped + 0.5 * bar:
                    self._drop_target = None               # it came before the time foreseen
        self._seen = seen

    def _decide(self, ctx: RenderContext) -> str | None:
        """At a downbeat's first frame: why the scene changes here, or None."""
        onset, bar = ctx.beat_time, max(ctx.meter, 1) * ctx.period
        reasons = []
        if self._drop_target is not None:
            if abs(onset - self._drop_target) <= 0.5 * bar:
                reasons.append("drop")
                self._drop_target = None
            elif onset > self._drop_target + 0.5 * bar:
                self._drop_target = None                   # passed between two downbeats (a tempo change)
        if self._due_drop is not None and onset >= self._due_drop:
            reasons.append("drop")
            self._due_drop = None
        # a drop foreseen within 2 bars takes the change: none a bar or two before it
        hold = not reasons and self._drop_target is not None and self._drop_target - onset <= 2 * bar
        if self._due_section is not None and onset >= self._due_section and not hold:
            reasons.append("section")
            self._due_section = None
        n = self.config["every_bars"]
        if n and ctx.bar > self._origin and (ctx.bar - self._origin) % n == 0 and not hold and \
                (self._last_bar is None or ctx.bar - self._last_bar >= max(1, n // 2)):
            reasons.append("phrase")
        if not reasons:
            return None
        if "drop" in reasons:
            self._origin, self._last_drop = ctx.bar, onset
        elif "section" in reasons:
            self._origin = self._section_bar
        return reasons[0]

    def _change(self, ctx: RenderContext, reason: str) -> None:
        self._prev = self.scenes[self.index][1]
        self.index = (self.index + 1) % len(self.scenes)
        self._fade_from = self._last = ctx.beat_time
        self._last_bar = ctx.bar
        self.changes.append(SceneChange(ctx.beat_time, reason, self.index, ctx.bar))

    # -- drawing ---------------------------------------------------------------------
    def render(self, ctx: RenderContext) -> np.ndarray:
        self._learn(ctx)
        if ctx.has_beat and ctx.beat != self._beat:
            self._beat = ctx.beat
            if self._last_bar is not None and ctx.bar < self._last_bar:    # a new stream: its bars count from 0
                self._origin, self._last_bar = min(self._origin, ctx.bar), None
            if ctx.is_downbeat:
                reason = self._decide(ctx)
                if reason is not None:
                    self._change(ctx, reason)
        effect = self.scenes[self.index][1]
        effect.config["beat_sensitivity"] = self.config["beat_sensitivity"]     # live control events
        out = effect.render(ctx)
        if self._prev is not None:
            span = self.config["crossfade_beats"] * ctx.period
            mix = 1.0 if span <= 0 else (ctx.t - self._fade_from) / span
            if mix >= 1.0:
                self._prev = None
            else:
                mix = np.float32(max(mix, 0.0))
                out = out * mix + self._prev.render(ctx) * (np.float32(1.0) - mix)
        return out.astype(np.float32, copy=False)
