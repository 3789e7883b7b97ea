"""Commands: ``beatbus hls convert|build|report`` (``hls train|csim`` are in :mod:`beatbus.lab.cli`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from beatbus.commands import subcommands

__all__ = ["register"]


def cmd_hls_convert(args: argparse.Namespace) -> int:
    from .project import compile_project, write_project

    hls_model = write_project(weights=args.weights, config=args.config, out_dir=args.out)
    print(f"beatbus: hls4ml project written to {args.out}", file=sys.stderr)
    if not args.no_compile:
        print(f"beatbus: C-simulation library {compile_project(hls_model)}")
    return 0


def cmd_hls_build(args: argparse.Namespace) -> int:
    from .project import build_project

    rc, message = build_project(args.project, config=args.config)
    print(f"beatbus: {message}", file=sys.stderr)
    return rc


def cmd_hls_report(args: argparse.Namespace) -> int:
    from .project import load_config, read_reports

    rep = read_reports(args.project)
    if rep is None:
        clock = load_config(args.config)["clock_period"]
        print(f"beatbus: no synthesis report under {args.project} (run 'beatbus hls build' where Vivado/Vitis "
              f"is installed); target clock {clock} ns", file=sys.stderr)
        return 3
    print(json.dumps(rep, indent=2))
    return 0


def register(commands: dict) -> None:
    from .model import DEFAULT_WEIGHTS
    from .project import DEFAULT_CONFIG, DEFAULT_PROJECT

    hls = subcommands(commands, "hls", "FPGA beat kernel: QKeras + hls4ml")
    p = hls.add_parser("convert", help="write the hls4ml project and compile its C simulation")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="reviewed hls4ml YAML")
    p.add_argument("--out", type=Path, default=DEFAULT_PROJECT, help=f"project directory (default {DEFAULT_PROJECT})")
    p.add_argument("--no-compile", action="store_true", help="write the project only")
    p.set_defaults(func=cmd_hls_convert)

    for name, fn, what in (("build", cmd_hls_build, "C synthesis (needs vitis-run or vivado_hls)"),
                           ("report", cmd_hls_report, "read synthesis reports")):
        p = hls.add_parser(name, help=what)
        p.add_argument("--project", type=Path, default=DEFAULT_PROJECT)
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        p.set_defaults(func=fn)
