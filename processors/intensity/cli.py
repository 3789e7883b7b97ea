"""``beatbus intensity run|eval|bench``: the intensity daemon, transition evaluation, feature cost."""
from __future__ import annotations

import argparse

__all__ = ["register", "cmd_run", "cmd_eval", "cmd_bench"]


def cmd_run(args: argparse.Namespace) -> int:
    from beatbus.cli import cli_settings, connect
    from beatbus.runtime import run_services

    from .service import IntensityService

    settings = cli_settings(args)
    with connect(settings, embedded_ok=False) as bus:
        svc = IntensityService(bus, settings=settings, sources=args.sources or None, rate=args.rate,
                               transitions=not args.no_transitions)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def cmd_eval(args: argparse.Namespace) -> int:
    from beatbus.errors import ConfigError
    from beatbus.log import setup_logging

    from .evaluate import run

    setup_logging("warning")
    try:
        return run(args)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def cmd_bench(args: argparse.Namespace) -> int:
    from beatbus.errors import ConfigError

    from .bench import run

    try:
        return run(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def register(commands: dict) -> None:
    """Add ``beatbus intensity ...`` to the top-level commands."""
    from beatbus.cli import add_common_options

    from . import bench, evaluate
    from .service import IntensityService

    p = commands["top"].add_parser("intensity", help="intensity features and energy transitions")
    sub = p.add_subparsers(dest="intensity", required=True)
    r = sub.add_parser("run", help="intensity daemon: bb:{src}:audio -> bb:{src}:intensity (owns sources by lease)")
    r.add_argument("--sources", nargs="*", help="sources to own (default: every live source)")
    r.add_argument("--rate", type=float, default=IntensityService.DEFAULT_RATE,
                   help=f"IntensityEvents per second (default {IntensityService.DEFAULT_RATE:g})")
    r.add_argument("--no-transitions", action="store_true", help="do not publish TransitionEvents")
    add_common_options(r)
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("eval", help="transition precision/recall on synthetic songs with known transitions")
    evaluate.add_arguments(e)
    e.set_defaults(func=cmd_eval)
    b = sub.add_parser("bench", help="feature cost per 20 ms frame and stream, on one core")
    bench.add_arguments(b)
    b.set_defaults(func=cmd_bench)
