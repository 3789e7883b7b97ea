"""``beatbus consume terminal``: print beats."""
from __future__ import annotations

import argparse

from beatbus.commands import add_common_options, cli_settings, connect, subcommands

__all__ = ["register"]


def cmd_consume_terminal(args: argparse.Namespace) -> int:
    from beatbus.runtime import run_services

    from .service import TerminalConsumer

    settings = cli_settings(args)
    with connect(settings, embedded_ok=False) as bus:
        svc = TerminalConsumer(bus, settings=settings, sources=args.sources or [settings.source],
                               exit_on_end=args.exit_on_end)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def register(commands: dict) -> None:
    """Add ``consume terminal`` to the ``beatbus`` parser."""
    ct = subcommands(commands, "consume", "consumer daemons").add_parser(
        "terminal", help="print beats (led by the source name when it follows several)")
    ct.add_argument("--sources", nargs="*", help="sources to follow (default: the configured --source)")
    ct.add_argument("--exit-on-end", action="store_true", help="exit when every source has ended")
    add_common_options(ct)
    ct.set_defaults(func=cmd_consume_terminal)
