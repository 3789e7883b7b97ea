"""What every command of every stage shares: common options, settings from flags, a broker connection.

Stage ``cli.py`` modules build their commands from these; nothing imports :mod:`beatbus.cli`
(the composition root).
"""
from __future__ import annotations

import argparse
import contextlib

from . import threads
from .config import DESCRIPTIONS, Settings, load_settings
from .errors import ConfigError
from .log import setup_logging

__all__ = ["subcommands", "add_common_options", "add_adaptive_options", "cli_settings", "connect"]


def subcommands(commands: dict, name: str, help: str):  # noqa: A002  (argparse's word)
    """The sub-parser collection of ``beatbus <name> ...``, shared by every stage.

    Created by whichever stage asks first (``dev``, ``generate``, ``train``...), so two
    stages can add commands under one word.
    """
    if name not in commands:
        parser = commands["top"].add_parser(name, help=help)
        commands[name] = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return commands[name]


def add_common_options(p: argparse.ArgumentParser, *, rq: bool = False) -> None:
    """The configuration flags of every command; ``rq``: also ``--rq-url`` (commands that use the job queue)."""
    g = p.add_argument_group("configuration (flags > BEATBUS_* env > TOML file > defaults)")
    g.add_argument("--config", help="TOML configuration file (also BEATBUS_CONFIG)")
    g.add_argument("--redis-url", dest="redis_url", help=DESCRIPTIONS["redis_url"] + " Also REDIS_URL.")
    if rq:
        g.add_argument("--rq-url", dest="rq_url", help=DESCRIPTIONS["rq_url"] + " Also BEATBUS_RQ_URL.")
    g.add_argument("--source", help=DESCRIPTIONS["source"])
    g.add_argument("--metrics-addr", dest="metrics_addr", help=DESCRIPTIONS["metrics_addr"])
    g.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    g.add_argument("--log-format", dest="log_format", choices=["text", "json"])


def add_adaptive_options(p: argparse.ArgumentParser) -> None:
    """``--adaptive`` / ``--no-adaptive`` and ``--adaptive-high-load``: the daemons of the audio stages."""
    p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                   help=DESCRIPTIONS["adaptive"] + " Default on.")
    p.add_argument("--adaptive-high-load", dest="adaptive_high_load", type=float,
                   help=DESCRIPTIONS["adaptive_high_load"] + " Default 0.85.")


def cli_settings(args: argparse.Namespace) -> Settings:
    """Settings from flags/env/TOML for a parsed command; also sets up logging."""
    settings = load_settings(vars(args), config_file=getattr(args, "config", None))
    setup_logging(settings.log_level, settings.log_format)
    threads.apply(settings.threads)      # a TOML `threads` resizes the pools set at import
    return settings


@contextlib.contextmanager
def connect(settings: Settings, *, embedded_ok: bool):
    """Yield a connected Bus: REDIS_URL's server, or (for ``run``) a private embedded one."""
    from .broker import EmbeddedBroker
    from .bus import Bus

    if settings.redis_url:
        bus = Bus.connect(settings.redis_url)
        try:
            yield bus
        finally:
            bus.close()
        return
    if not embedded_ok:
        raise ConfigError("no broker: set REDIS_URL (or --redis-url); `beatbus broker` starts one "
                          "and prints its URL, and a running `beatbus run` prints the URL of its own")
    with EmbeddedBroker() as broker:
        bus = Bus.connect(broker.url)
        try:
            yield bus
        finally:
            bus.close()
