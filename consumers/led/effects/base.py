"""The effect base class and registry.

An effect is one small class in one file of this package. Subclassing :class:`Effect`
registers it under its module's file name (``effects/strobe.py`` -> ``"strobe"``); a base
that should not be registered sets ``abstract = True``. ``CONFIG_SCHEMA`` gives each key
a default, a description and a range; :meth:`Effect.schema` merges the schemas along the
class hierarchy, so the seed keys below apply to every effect.

``render(ctx)`` returns float32 RGB in 0..1, shape ``(ctx.pixels, 3)``; the device then
maps it onto its segments, applies its brightness cap and encodes it.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from beatbus.errors import ConfigError

from .. import palettes
from ..params import Param, check_keys, validate_config
from ..state import RenderContext

__all__ = ["Effect", "EFFECTS", "intensity_curve", "PALETTE_NAMES", "SEED", "DIRECTION", "strip_x", "beat_rng",
           "smoothing", "bar_start"]

EFFECTS: dict[str, type[Effect]] = {}
PALETTE_NAMES = tuple(palettes.PALETTES)
CURVES = ("linear", "log", "exp")
# shared by the effects that draw at random: the same seed draws the same pattern on the same beats
SEED = Param(0, "Seed of the random pattern (the same seed draws the same pattern on the same beats)", 0, 2**31 - 1)
DIRECTION = Param("forward", "Direction of travel", choices=("forward", "backward"))


def strip_x(pixels: int) -> np.ndarray:
    """Pixel centres along the strip, 0..1 (float32)."""
    return ((np.arange(pixels) + 0.5) / pixels).astype(np.float32)


def beat_rng(seed: int, index: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``index`` (a beat or step number): frame-rate independent."""
    return np.random.default_rng([int(seed), int(index) % (1 << 32)])


def smoothing(dt: float, tau: float) -> float:
    """Share of the way to the target covered in ``dt`` seconds by a first-order lag of ``tau`` (1 when tau is 0)."""
    return 1.0 if tau <= 0 else 1.0 - math.exp(-max(dt, 0.0) / tau)


def bar_start(ctx: RenderContext) -> float:
    """Wall time of the current bar's downbeat on the grid."""
    return ctx.beat_time - (ctx.beat_in_bar - 1) * ctx.period


def intensity_curve(x, curve: str):
    """Map loudness 0..1 to brightness 0..1: ``linear``, ``log`` (lifts quiet parts), ``exp`` (only loud)."""
    x = np.clip(x, 0.0, 1.0)
    if curve == "log":
        return np.log1p(9.0 * x) / np.log(10.0)
    if curve == "exp":
        return (np.power(10.0, x) - 1.0) / 9.0
    return x


class Effect:
    """Base of every effect.

    Parameters
    ----------
    pixels : int
        Length of the strip the effect draws (>= 1).
    config : dict, optional
        Values for keys of :meth:`schema`; missing keys take their defaults.

    Raises
    ------
    ConfigError
        Unknown key or a value out of range.
    """

    abstract: ClassVar[bool] = True
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    CONFIG_SCHEMA: ClassVar[dict[str, Param]] = {
        "beat_sensitivity": Param(0.8, "Beats flash only when the tracker's confidence is at least "
                                       "1 - beat_sensitivity (1 = every beat)", 0.0, 1.0),
        "downbeat_emphasis": Param(0.5, "How much brighter the first beat of a bar is than the others "
                                        "(0 = all equal)", 0.0, 1.0),
        "bpm_sync": Param(True, "Motion follows the tempo (true) or a fixed speed (false)"),
        "intensity_curve": Param("linear", "How loudness maps to brightness", choices=CURVES),
        "color_palette": Param("rainbow", "Palette the colors come from", choices=PALETTE_NAMES),
        "palette_follow": Param("off", "Colors turn with the harmony stage's live key or chord (circle of "
                                       "fifths: C major as drawn, a fifth = 30 degrees of hue; minor darker)",
                                choices=palettes.FOLLOW),
    }

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("abstract", False):
            return
        name = cls.__dict__.get("name") or cls.__module__.rsplit(".", 1)[-1]
        cls.name = name
        check_keys(cls.schema(), f"effect {name}")
        if name in EFFECTS and EFFECTS[name] is not cls:
            raise ConfigError(f"effect name {name!r} is registered twice")
        EFFECTS[name] = cls

    @classmethod
    def schema(cls) -> dict[str, Param]:
        """Merged ``CONFIG_SCHEMA`` of the class and its bases (subclasses win)."""
        merged: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get("CONFIG_SCHEMA", {}))
        return merged

    @classmethod
    def validate(cls, config: dict[str, Any] | None) -> dict[str, Any]:
        return validate_config(cls.schema(), config, f"effect {cls.name}")

    def __init__(self, pixels: int, config: dict[str, Any] | None = None):
        if int(pixels) < 1:
            raise ConfigError(f"effect {self.name}: pixels={pixels} must be >= 1")
        self.pixels = int(pixels)
        self.config = self.validate(config)
        self.setup()

    def setup(self) -> None:
        """Precompute from ``self.config`` and ``self.pixels``."""

    def render(self, ctx: RenderContext) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def follow_harmony(self, rgb: np.ndarray, ctx: RenderContext) -> np.ndarray:
        """``rgb`` turned to the live key or chord when ``palette_follow`` asks (as it is otherwise)."""
        follow = self.config["palette_follow"]
        now = ctx.key if follow == "key" else ctx.chord if follow == "chord" else None
        if now is None:
            return rgb
        return palettes.rotate_hue(rgb, palettes.harmony_hue(*now), dim=0.8 if now[1] else 1.0)

    # -- helpers shared by effects ---------------------------------------------------
    def blank(self) -> np.ndarray:
        return np.zeros((self.pixels, 3), dtype=np.float32)

    def curve(self, x):
        return intensity_curve(x, self.config["intensity_curve"])

    def accent(self, ctx: RenderContext) -> float:
        """Peak level of the current beat: 1 on downbeats, less on others per downbeat_emphasis."""
        return 1.0 if ctx.is_downbeat else 1.0 - 0.6 * self.config["downbeat_emphasis"]

    def flash(self, ctx: RenderContext, decay: float) -> float:
        """Flash envelope 0..1: 1 at the beat's onset, 0 after ``decay`` beats.

        0 when the beat is not flashing (missed onset, no grid) or the tracker's
        confidence is below ``1 - beat_sensitivity``.
        """
        if ctx.flash_age is None or not ctx.has_beat or ctx.confidence < 1.0 - self.config["beat_sensitivity"]:
            return 0.0
        x = ctx.flash_age / (max(decay, 1e-3) * ctx.period)
        return 0.0 if x >= 1.0 else (1.0 - x) ** 2

    def beat_color(self, ctx: RenderContext) -> np.ndarray:
        """The palette stop of the current beat (advances one stop per beat), shape (3,)."""
        return palettes.stop(self.config["color_palette"], ctx.beat)
