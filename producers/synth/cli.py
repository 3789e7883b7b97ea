"""``beatbus synth songs OUT_DIR --count N --seed S [--meters 3,4,6] [--tempo-range 60,200]``."""
from __future__ import annotations

import argparse
import sys
import time

from beatbus.errors import ConfigError

__all__ = ["register", "cmd_songs", "parse_numbers", "main"]


def parse_numbers(text: str, *, name: str, count: int | None = None, kind=float) -> tuple:
    """``"60,200"`` -> ``(60.0, 200.0)``; ConfigError naming the option on anything else."""
    try:
        vals = tuple(kind(x) for x in str(text).split(",") if x.strip() != "")
    except ValueError:
        raise ConfigError(f"{name}={text!r} must be comma-separated numbers") from None
    if not vals or (count is not None and len(vals) != count):
        want = f"{count} comma-separated numbers" if count else "comma-separated numbers"
        raise ConfigError(f"{name}={text!r} must be {want}")
    return vals


def cmd_songs(args: argparse.Namespace) -> int:
    from beatbus.log import setup_logging

    from . import render_songs

    setup_logging("warning")
    meters = parse_numbers(args.meters, name="--meters", kind=int)
    tempo_range = parse_numbers(args.tempo_range, name="--tempo-range", count=2)
    duration_range = parse_numbers(args.duration_range, name="--duration-range", count=2)
    t0 = time.monotonic()
    for name in ("tempo_changes", "ramps"):
        p = getattr(args, name)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')}={p} must be a probability in [0, 1]")
    from beatbus.progress import Progress

    def rendered(files) -> None:
        bar.clear()                       # the path goes to stdout, between two redraws of the line
        print(files.audio, flush=True)
        bar.update(1)

    try:
        with Progress(f"synth songs -> {args.out_dir}", args.count, "songs") as bar:
            bar.set(0)
            songs = render_songs(args.out_dir, count=args.count, seed=args.seed, meters=meters,
                                 tempo_range=tempo_range, duration_range=duration_range, audio_format=args.format,
                                 sr=args.sr, plan_kw={"step_prob": args.tempo_changes, "ramp_prob": args.ramps},
                                 progress=rendered)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"{len(songs)} songs in {args.out_dir} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return 0


def register(commands: dict) -> None:
    """Add ``beatbus synth songs`` to the top-level commands."""
    p = commands["top"].add_parser("synth", help="synthetic songs with exact annotations (music21 + FluidSynth)")
    sub = p.add_subparsers(dest="synth", required=True)
    s = sub.add_parser("songs", help="render N random songs: audio + .beats + .sections + .json + .mid")
    s.add_argument("out_dir", help="output directory (created if missing)")
    s.add_argument("--count", type=int, default=10, help="number of songs (default 10)")
    s.add_argument("--seed", type=int, default=0, help="song i is reproducible from (seed, i) (default 0)")
    s.add_argument("--meters", default="3,4,6", help="candidate meters: 3 (3/4), 4 (4/4), 6 (6/8) (default 3,4,6)")
    s.add_argument("--tempo-range", dest="tempo_range", default="60,200", help="LO,HI initial tempo in BPM")
    s.add_argument("--duration-range", dest="duration_range", default="30,90", help="LO,HI song length in s")
    s.add_argument("--tempo-changes", dest="tempo_changes", type=float, default=0.15,
                   help="probability that a bridge steps the tempo by ~15%% (default 0.15)")
    s.add_argument("--ramps", type=float, default=0.25,
                   help="probability that a bridge or outro ramps the tempo (default 0.25)")
    s.add_argument("--format", choices=["flac", "wav"], default="flac")
    s.add_argument("--sr", type=int, default=22050, help="sample rate (Hz)")
    s.set_defaults(func=cmd_songs)


def main(argv: list[str] | None = None) -> int:
    """``python -m beatbus.producers.synth.cli songs OUT_DIR ...`` (same as ``beatbus synth songs``)."""
    import sys

    from beatbus.errors import BeatbusError

    p = argparse.ArgumentParser(prog="beatbus")
    register({"top": p.add_subparsers(dest="command", required=True)})
    args = p.parse_args(["synth", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except BeatbusError as exc:
        print(f"beatbus: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
