"""Commands: ``beatbus train beat-small`` and ``beatbus hls train|convert|csim|build|report``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from beatbus.cli import subcommands

__all__ = ["register"]

# not imported from processors.beat.small: that imports torch, too slow for ``beatbus --help``
_SMALL_CKPT = Path(__file__).resolve().parent.parent / "processors" / "beat" / "data" / "small.pt"
_SONGS_DIR = Path.home() / ".cache" / "beatbus" / "synth"


def _data_opts(p: argparse.ArgumentParser, *, epochs: int) -> None:
    p.add_argument("--songs", type=int, default=60, help="synthetic songs (the last 4 are the dev set) (default 60)")
    p.add_argument("--seed", type=int, default=7, help="seeds songs, crops and weights (default 7)")
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--songs-dir", type=Path, default=_SONGS_DIR, help=f"render / reuse songs here (default {_SONGS_DIR})")


def cmd_train_small(args: argparse.Namespace) -> int:
    from beatbus.processors.beat.train import train_small

    res = train_small(songs=args.songs, seed=args.seed, epochs=args.epochs, out=args.out, songs_dir=args.songs_dir,
                      distill=args.distill, augment=args.augment)
    print(json.dumps(res))
    return 0


def cmd_hls_train(args: argparse.Namespace) -> int:
    from .pipeline import train_hls

    res = train_hls(checkpoint=args.checkpoint, songs_dir=args.songs_dir, songs=args.songs, seed=args.seed,
                    epochs=args.epochs, out=args.out)
    print(json.dumps(res))
    return 0


def cmd_hls_convert(args: argparse.Namespace) -> int:
    from .project import compile_project, write_project

    hls_model = write_project(weights=args.weights, config=args.config, out_dir=args.out)
    print(f"beatbus: hls4ml project written to {args.out}", file=sys.stderr)
    if not args.no_compile:
        print(f"beatbus: C-simulation library {compile_project(hls_model)}")
    return 0


def cmd_hls_csim(args: argparse.Namespace) -> int:
    from .pipeline import csim_check, format_csim

    res = csim_check(project=args.project, weights=args.weights, checkpoint=args.checkpoint, audio=args.audio,
                     songs_dir=args.songs_dir, songs=args.songs, seed=args.seed, max_frames=args.frames)
    print(format_csim(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0 if res["ok"] else 1


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
    train = subcommands(commands, "train", "train models")
    p = train.add_parser("beat-small", help="train the small beat activation model on synthetic songs")
    _data_opts(p, epochs=40)
    p.add_argument("--out", type=Path, default=_SMALL_CKPT, help="checkpoint (default: the shipped processors/beat/data/small.pt)")
    p.add_argument("--distill", type=float, default=0.3, help="share of BeatNet model 1 in the targets (default 0.3)")
    p.add_argument("--augment", type=int, default=0,
                   help="degraded copies (EQ, reverb, noise, codecs, ...) per training song (default 0; "
                        "'hls train' uses processors.beat.train.DEFAULT_AUGMENT copies)")
    p.set_defaults(func=cmd_train_small)

    from .model import DEFAULT_WEIGHTS
    from .project import DEFAULT_CONFIG, DEFAULT_PROJECT

    hls = subcommands(commands, "hls", "FPGA beat kernel: QKeras + hls4ml")
    p = hls.add_parser("train", help="distil the QKeras model from the small torch model")
    _data_opts(p, epochs=3)
    p.add_argument("--checkpoint", type=Path, default=None, help="small torch checkpoint (default: shipped)")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help=f"weights prefix (default {DEFAULT_WEIGHTS})")
    p.set_defaults(func=cmd_hls_train)

    p = hls.add_parser("convert", help="write the hls4ml project and compile its C simulation")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="reviewed hls4ml YAML")
    p.add_argument("--out", type=Path, default=DEFAULT_PROJECT, help=f"project directory (default {DEFAULT_PROJECT})")
    p.add_argument("--no-compile", action="store_true", help="write the project only")
    p.set_defaults(func=cmd_hls_convert)

    p = hls.add_parser("csim", help="C simulation vs QKeras vs torch on the dev songs")
    _data_opts(p, epochs=0)
    p.add_argument("--audio", type=Path, action="append",
                   help="real audio file or folder as the dev set (repeatable; default: the synthetic dev songs)")
    p.add_argument("--project", type=Path, default=DEFAULT_PROJECT)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--frames", type=int, default=3000, help="dev frames to compare (default 3000)")
    p.add_argument("--json", help="write the result here")
    p.set_defaults(func=cmd_hls_csim)

    for name, fn, what in (("build", cmd_hls_build, "C synthesis (needs vitis-run or vivado_hls)"),
                           ("report", cmd_hls_report, "read synthesis reports")):
        p = hls.add_parser(name, help=what)
        p.add_argument("--project", type=Path, default=DEFAULT_PROJECT)
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        p.set_defaults(func=fn)
