"""``beatbus process``: the beat processor daemon (owns sources by lease)."""
from __future__ import annotations

import argparse

from beatbus.commands import add_adaptive_options, add_common_options, cli_settings, connect
from beatbus.config import DESCRIPTIONS, Settings

from .backends import names

__all__ = ["register", "add_backend_options", "make_processor"]


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """``--backend`` (a registered beat backend) and ``--device``, for every command that tracks beats."""
    p.add_argument("--backend", choices=names(), help=DESCRIPTIONS["backend"])
    p.add_argument("--device", choices=["cpu", "cuda"], help=DESCRIPTIONS["device"])


def make_processor(settings: Settings):
    """A factory of per-source beat processors with the configured backend."""
    from .processor import BeatProcessor

    return lambda: BeatProcessor(backend=settings.backend, sr=settings.sr, device=settings.device)


def cmd_process(args: argparse.Namespace) -> int:
    from beatbus.processors.beat.service import BeatService
    from beatbus.runtime import run_services

    settings = cli_settings(args)
    make_processor(settings)()  # fail fast on a missing extra or model, before any lease
    with connect(settings, embedded_ok=False) as bus:
        svc = BeatService(bus, settings=settings, make_processor=make_processor(settings),
                          sources=args.sources or None)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def register(commands: dict) -> None:
    """Add ``process`` to the ``beatbus`` parser."""
    pp = commands["top"].add_parser("process", help="beat processor daemon (owns sources by lease)")
    pp.add_argument("--sources", nargs="*", help="sources to own (default: every live source)")
    add_backend_options(pp)
    add_adaptive_options(pp)
    add_common_options(pp)
    pp.set_defaults(func=cmd_process)
