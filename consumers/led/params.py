"""Parameter schemas: every configurable key with a default, a description and a range.

Effects and outputs declare ``CONFIG_SCHEMA`` / ``PARAMS`` as ``{key: Param}``; the same
schema fills defaults, converts strings from URLs and flags, validates loudly (one-line
:class:`~beatbus.errors.ConfigError` naming the key) and documents itself
(``beatbus consume led --list-effects``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beatbus.errors import ConfigError

__all__ = ["Param", "validate_config", "check_keys", "describe"]

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One configuration key.

    Parameters
    ----------
    default : bool, int, float or str
        Default value; its type is the key's type.
    description : str
        What it does, with units.
    min, max : float, optional
        Inclusive range for numbers.
    choices : tuple of str, optional
        Allowed values for strings.
    """

    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def kind(self) -> type:
        return type(self.default)

    def range_text(self) -> str:
        if self.kind is bool:
            return "true | false"
        if self.choices:
            return " | ".join(self.choices)
        if self.kind is str:
            return "text"
        return f"{self.min:g} .. {self.max:g}"

    def convert(self, key: str, value: Any, where: str) -> Any:
        """Coerce ``value`` (maybe a string from a URL or flag) and check its range."""
        def bad(why: str) -> ConfigError:
            return ConfigError(f"{where}: {key}={value!r} {why}")

        kind = self.kind
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise bad("must be true or false")
        if kind in (int, float):
            if isinstance(value, bool):
                raise bad(f"must be a number in {self.range_text()}")
            try:
                num = kind(value) if not (kind is int and isinstance(value, float)) else value
            except (TypeError, ValueError):
                raise bad(f"must be a number in {self.range_text()}") from None
            if kind is int and (isinstance(num, float) and not num.is_integer()):
                raise bad("must be a whole number")
            num = kind(num)
            if not math.isfinite(num) or (self.min is not None and num < self.min) or \
                    (self.max is not None and num > self.max):
                raise bad(f"is out of range {self.range_text()}")
            return num
        if not isinstance(value, str):
            raise bad("must be a string")
        if self.choices and value not in self.choices:
            raise bad(f"must be one of {self.range_text()}")
        return value


def check_keys(schema: Mapping[str, Param], owner: str) -> None:
    """Reject schema keys that are not snake_case or spell 'colour' (one spelling: color)."""
    for key, param in schema.items():
        if not _SNAKE.match(key) or "colour" in key:
            raise ConfigError(f"{owner}: config key {key!r} must be snake_case and spell 'color'")
        if not isinstance(param, Param) or not param.description:
            raise ConfigError(f"{owner}: config key {key!r} needs a Param with a description")
        if param.kind in (int, float) and (param.min is None or param.max is None):
            raise ConfigError(f"{owner}: config key {key!r} needs a min and a max")


def validate_config(schema: Mapping[str, Param], config: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Defaults overlaid with ``config``, each value converted and range-checked.

    Raises
    ------
    ConfigError
        Unknown key (the known ones are listed) or a value out of range.
    """
    out = {k: p.default for k, p in schema.items()}
    for key, value in (config or {}).items():
        if key not in schema:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(schema))})")
        out[key] = schema[key].convert(key, value, where)
    return out


def describe(schema: Mapping[str, Param]) -> list[str]:
    """``key = default  (range)  description`` lines for help output."""
    return [f"  {k} = {p.default!r}  ({p.range_text()})  {p.description}" for k, p in schema.items()]
