"""Old spellings of options and variables that still work, each saying its new name once.

One name per concept across CLI, TOML, environment and README; the old names stay as hidden
aliases so existing scripts, unit files and environment files keep working::

    add_deprecated_option(parser, "--trigger-url", "--error-generator-url")
    deprecated("ERROR_GENERATOR_URL", "BEATBUS_ERROR_GENERATOR_URL")
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["deprecated", "add_deprecated_option"]

_said: set[str] = set()


def deprecated(old: str, new: str) -> None:
    """Print ``beatbus: warning: OLD is deprecated; use NEW`` on stderr, once per process."""
    if old in _said:
        return
    _said.add(old)
    print(f"beatbus: warning: {old} is deprecated; use {new}", file=sys.stderr, flush=True)


class _DeprecatedOption(argparse.Action):
    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string or self.option_strings[0], self.new)
        setattr(namespace, self.dest, values)


def add_deprecated_option(parser: argparse.ArgumentParser, old: str, new: str, **kwargs) -> None:
    """Accept ``old`` as a hidden alias of the option ``new`` (same ``dest``; ``type`` etc. in kwargs).

    It is left out of ``--help``, stores into the new option's destination and warns once.
    """
    dest = next(a.dest for a in parser._actions if new in a.option_strings)
    parser.add_argument(old, dest=dest, action=_DeprecatedOption, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)
