"""``beatbus harmony run``: the harmony daemon (``harmony eval``, also ``beatbus eval harmony``, is in
:mod:`beatbus.lab.cli`)."""
from __future__ import annotations

import argparse

__all__ = ["register", "cmd_run"]


def cmd_run(args: argparse.Namespace) -> int:
    from beatbus.commands import cli_settings, connect
    from beatbus.runtime import run_services

    from .features import chroma_filterbank
    from .service import HarmonyService

    settings = cli_settings(args)
    chroma_filterbank(settings.sr, 4096)          # librosa missing: one line now, not at the first source
    with connect(settings, embedded_ok=False) as bus:
        svc = HarmonyService(bus, settings=settings, sources=args.sources or None)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def register(commands: dict) -> None:
    """Add ``beatbus harmony ...`` to the top-level commands."""
    from beatbus.commands import add_common_options, subcommands

    sub = subcommands(commands, "harmony", "live key and chords, next chord change")
    r = sub.add_parser("run", help="harmony daemon: bb:{src}:audio (+beats) -> bb:{src}:harmony "
                                   "(owns sources by lease)")
    r.add_argument("--sources", nargs="*", help="sources to own (default: every live source)")
    add_common_options(r)
    r.set_defaults(func=cmd_run)
