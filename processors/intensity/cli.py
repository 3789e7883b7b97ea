"""``beatbus intensity run``: the intensity daemon (``intensity eval|bench`` are in :mod:`beatbus.lab.cli`)."""
from __future__ import annotations

import argparse

__all__ = ["register", "cmd_run"]


def cmd_run(args: argparse.Namespace) -> int:
    from beatbus.commands import cli_settings, connect
    from beatbus.runtime import run_services

    from .service import IntensityService

    settings = cli_settings(args)
    with connect(settings, embedded_ok=False) as bus:
        svc = IntensityService(bus, settings=settings, sources=args.sources or None, rate=args.rate,
                               transitions=not args.no_transitions)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def register(commands: dict) -> None:
    """Add ``beatbus intensity ...`` to the top-level commands."""
    from beatbus.commands import add_adaptive_options, add_common_options, subcommands

    from .service import IntensityService

    sub = subcommands(commands, "intensity", "intensity features and energy transitions")
    r = sub.add_parser("run", help="intensity daemon: bb:{src}:audio -> bb:{src}:intensity (owns sources by lease)")
    r.add_argument("--sources", nargs="*", help="sources to own (default: every live source)")
    r.add_argument("--rate", type=float, default=IntensityService.DEFAULT_RATE,
                   help=f"IntensityEvents per second (default {IntensityService.DEFAULT_RATE:g})")
    r.add_argument("--no-transitions", action="store_true", help="do not publish TransitionEvents")
    add_adaptive_options(r)
    add_common_options(r)
    r.set_defaults(func=cmd_run)
