"""Effect registry: every module in this package defines one effect (see ``base``).

Adding an effect means adding a file; :func:`load_effects` imports them all.
"""
from __future__ import annotations

import importlib
import pkgutil

from beatbus.errors import ConfigError

from .base import EFFECTS, Effect, intensity_curve

__all__ = ["Effect", "EFFECTS", "load_effects", "get_effect", "create_effect", "intensity_curve"]


def load_effects() -> dict[str, type[Effect]]:
    """Import every effect module once; returns the registry ``{name: class}``."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
    return EFFECTS


def get_effect(name: str) -> type[Effect]:
    """The effect class called ``name``, or ConfigError listing the known effects."""
    registry = load_effects()
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown effect {name!r} (known: {', '.join(sorted(registry))})") from None


def create_effect(name: str, pixels: int, config: dict | None = None) -> Effect:
    return get_effect(name)(pixels, config)
