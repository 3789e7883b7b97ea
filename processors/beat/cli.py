"""``beatbus bench beats``: multi-stream cost of the beat processor (see :mod:`processors.beat.bench`)."""
from __future__ import annotations

import argparse

__all__ = ["register", "cmd_bench_beats", "cmd_bench_backends"]


def cmd_bench_beats(args: argparse.Namespace) -> int:
    """Run :func:`processors.beat.bench.run_bench` and print its table."""
    from .bench import main

    argv = ["--streams", *map(str, args.streams), "--seconds", str(args.seconds), "--audio", str(args.audio)]
    for b in args.backend or []:
        argv += ["--backend", b]
    for m in args.mode or []:
        argv += ["--mode", m]
    if args.no_reference:
        argv.append("--no-reference")
    if args.json:
        argv += ["--json", args.json]
    return main(argv)


def cmd_bench_backends(args: argparse.Namespace) -> int:
    """Run :func:`processors.beat.backends_bench.run_bench` and print its table."""
    from .backends_bench import run_from_args

    return run_from_args(args)


def register(commands: dict) -> None:
    """Add ``bench beats`` and ``bench backends`` to the ``beatbus`` parser."""
    from beatbus.cli import subcommands

    from .bench import add_arguments

    sub = subcommands(commands, "bench", "benchmarks")
    p = sub.add_parser("beats", help="per-frame cost and real-time factor of the beat processor, 1..N streams, single vs batched")
    add_arguments(p)
    p.set_defaults(func=cmd_bench_beats)

    from .backends_bench import add_arguments as add_backend_arguments

    p = sub.add_parser("backends", help="per-frame latency and throughput of the activation backends (CPU, CUDA, QKeras, C-sim, FPGA estimate)")
    add_backend_arguments(p)
    p.set_defaults(func=cmd_bench_backends)
