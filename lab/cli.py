"""The lab's commands: benchmarks, evaluation, training, synthetic songs and test doubles.

``beatbus bench ...``, ``beatbus eval beats|sections``, ``beatbus synth songs``,
``beatbus dev error-generator``, ``beatbus train beat-small``, ``beatbus label beats``,
``beatbus intensity eval|bench``, ``beatbus structure eval``, ``beatbus harmony eval`` and ``beatbus hls train|csim``.
Registered last (``beatbus.cli`` ``EXTENSIONS``), so the words a stage owns (``train``, ``intensity``, ``structure``,
``harmony``, ``hls``) already exist and these commands follow the stage's own.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from beatbus.commands import subcommands
from beatbus.errors import ConfigError
from beatbus.log import setup_logging

__all__ = ["register", "parse_numbers"]

# not imported from processors.beat.small: that imports torch, too slow for ``beatbus --help``
_SONGS_DIR = Path.home() / ".cache" / "beatbus" / "synth"
_REAL_CACHE = Path.home() / ".cache" / "beatbus" / "real"


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


# -- bench ----------------------------------------------------------------------------
def cmd_bench_bus(args: argparse.Namespace) -> int:
    from .bench.bus import bench_bus

    setup_logging("warning")
    return bench_bus(events=args.events, rate=args.rate, sources=args.sources, json_path=args.json)


def cmd_bench_beats(args: argparse.Namespace) -> int:
    """Run :func:`lab.bench.beats.run_bench` and print its table."""
    from .bench.beats import main

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
    """Run :func:`lab.bench.backends.run_bench` and print its table."""
    from .bench.backends import run_from_args

    return run_from_args(args)


def cmd_bench_clock(args: argparse.Namespace) -> int:
    from .bench.clock import bench_clock

    setup_logging("warning")
    return bench_clock(args.files, bpm=args.bpm, click_seconds=args.click_seconds, backend=args.backend,
                       json_path=args.json)


def cmd_bench_led_timing(args: argparse.Namespace) -> int:
    from .bench.led import bench_led_timing

    setup_logging("warning")
    return bench_led_timing(args.files, backend=args.backend, effect=args.effect, fps=args.fps,
                            json_path=args.json)


def cmd_bench_led_render(args: argparse.Namespace) -> int:
    from .bench.led import bench_led_render

    setup_logging("warning")
    return bench_led_render(pixels=args.pixels, fps=args.fps, seconds=args.seconds, effects=args.effect,
                            json_path=args.json)


def cmd_bench_scenes(args: argparse.Namespace) -> int:
    from .bench.scenes import bench_scenes

    setup_logging("warning")
    return bench_scenes(args.songs_dir, count=args.count, every_bars=args.every_bars, seed=args.seed, fps=args.fps,
                        json_path=args.json)


def cmd_bench_trigger(args: argparse.Namespace) -> int:
    from .bench.trigger import bench_trigger

    setup_logging("warning")
    return bench_trigger(sources=args.sources, rate=args.rate, duration=args.duration, json_path=args.json)


def cmd_bench_generate(args: argparse.Namespace) -> int:
    from .bench.generate import bench_generate

    setup_logging("warning")
    return bench_generate(jobs=args.jobs, small=args.small, seconds=args.seconds, json_path=args.json)


def cmd_bench_sections(args: argparse.Namespace) -> int:
    """Run :func:`lab.bench.sections.bench_sections` and print its table."""
    from .bench.sections import run

    setup_logging("warning")
    return run(args)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a count or counts separated by commas, e.g. 25,50,100") from None
    if not all(n > 0 for n in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: source counts must be positive")
    return counts


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"--{name} {v:g} must be positive")


def cmd_bench_load(args: argparse.Namespace) -> int:
    from .bench.load import bench_load

    _check_positive(processors=args.processors, duration=args.duration)
    setup_logging("warning")
    return bench_load(sources=args.sources, processors=args.processors, duration=args.duration, warmup=args.warmup,
                      backend=args.backend, file=args.file, assign=args.assign, cluster=args.cluster,
                      json_path=args.json, adaptive=args.adaptive)


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from .bench.load import bench_soak

    _check_positive(minutes=args.minutes, sample=args.sample)
    setup_logging("warning")
    return bench_soak(minutes=args.minutes, file=args.file, sample=args.sample, warmup=args.warmup,
                      backend=args.backend, json_path=args.json)


# -- eval, synth, dev -----------------------------------------------------------------
def cmd_eval_beats(args: argparse.Namespace) -> int:
    from .eval.beats import run

    setup_logging("warning")
    return run(args)


def cmd_synth_songs(args: argparse.Namespace) -> int:
    from .synth import render_songs

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


def cmd_error_generator(args: argparse.Namespace) -> int:
    import signal
    import threading

    from beatbus.consumers.trigger.config import URL_ENV

    from .doubles.error_generator import ReferenceReceiver

    setup_logging("info")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with ReferenceReceiver(args.host, args.port) as rx:
        print(f"{URL_ENV}={rx.url}  (reference receiver: a test double of the error generator)", flush=True)
        stop.wait()
    return 0


# -- train, intensity, structure, hls -------------------------------------------------
def cmd_train_small(args: argparse.Namespace) -> int:
    from .train.beat_small import train_small

    try:
        res = train_small(songs=args.songs, seed=args.seed, epochs=args.epochs, out=args.out, songs_dir=args.songs_dir,
                          distill=args.distill, augment=args.augment, data_dirs=args.data or (), held_out=args.held_out,
                          init=args.init, lr=args.lr, cache_dir=args.cache_dir, val_songs=args.val_songs)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(res))
    return 0


def cmd_label_beats(args: argparse.Namespace) -> int:
    from .train.label import Rule, label_dirs

    setup_logging("warning")
    rule = Rule(min_activation=args.min_activation, min_beats=args.min_beats)
    rows = label_dirs(args.paths, args.out, rule=rule, force=args.force,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_intensity_eval(args: argparse.Namespace) -> int:
    from .eval.intensity import run

    setup_logging("warning")
    try:
        return run(args)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def cmd_intensity_bench(args: argparse.Namespace) -> int:
    from .bench.intensity import run

    try:
        return run(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def cmd_structure_eval(args: argparse.Namespace) -> int:
    from .eval.sections import run

    setup_logging("warning")
    try:
        return run(args)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def cmd_harmony_eval(args: argparse.Namespace) -> int:
    from .eval.harmony import run

    setup_logging("warning")
    try:
        return run(args)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def cmd_hls_train(args: argparse.Namespace) -> int:
    from .train.hls import train_hls

    res = train_hls(checkpoint=args.checkpoint, songs_dir=args.songs_dir, songs=args.songs, seed=args.seed,
                    epochs=args.epochs, data=args.data, out=args.out)
    print(json.dumps(res))
    return 0


def cmd_hls_csim(args: argparse.Namespace) -> int:
    from .train.hls import csim_check, format_csim

    res = csim_check(project=args.project, weights=args.weights, checkpoint=args.checkpoint, audio=args.audio,
                     songs_dir=args.songs_dir, songs=args.songs, seed=args.seed, max_frames=args.frames)
    print(format_csim(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0 if res["ok"] else 1


# -- registration ---------------------------------------------------------------------
def _data_opts(p: argparse.ArgumentParser, *, epochs: int) -> None:
    p.add_argument("--songs", type=int, default=60, help="synthetic songs (the last 4 are the dev set) (default 60)")
    p.add_argument("--seed", type=int, default=7, help="seeds songs, crops and weights (default 7)")
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--songs-dir", type=Path, default=_SONGS_DIR, help=f"render / reuse songs here (default {_SONGS_DIR})")


def _register_bench(top) -> None:
    from beatbus.processors.beat.backends import names

    BACKENDS = names()

    from .bench import backends, beats, sections

    bench = top.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    bb = bench.add_parser("bus", help="publish-to-consume latency and throughput on loopback")
    bb.add_argument("--events", type=int, default=20000)
    bb.add_argument("--rate", type=float, default=1000.0, help="events/s for the latency phase")
    bb.add_argument("--sources", type=int, default=30, help="sources the events are spread over in the second row")
    bb.add_argument("--json", help="also write results to this file")
    bb.set_defaults(func=cmd_bench_bus)

    p = bench.add_parser("beats",
                         help="per-frame cost and real-time factor of the beat processor, 1..N streams, single vs batched")
    beats.add_arguments(p)
    p.set_defaults(func=cmd_bench_beats)
    p = bench.add_parser("backends", help="per-frame latency and throughput of the activation backends "
                                          "(CPU, CUDA, QKeras, C-sim, FPGA estimate)")
    backends.add_arguments(p)
    p.set_defaults(func=cmd_bench_backends)

    t = bench.add_parser("led-timing", help="flash timing vs annotated beats, real time through the real pipeline")
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files with a .beats annotation beside them")
    t.add_argument("--backend", choices=BACKENDS, default="dsp")
    t.add_argument("--effect", default="beat_flash")
    t.add_argument("--fps", type=float, default=60.0)
    t.add_argument("--json", metavar="OUT", help="also write results to this file")
    t.set_defaults(func=cmd_bench_led_timing)
    r = bench.add_parser("led-render", help="render + encode CPU and send jitter per effect")
    r.add_argument("--pixels", type=int, default=1000)
    r.add_argument("--fps", type=float, default=60.0)
    r.add_argument("--seconds", type=float, default=5.0, help="per effect")
    r.add_argument("--effect", action="append", help="effects to measure (default: all)")
    r.add_argument("--json", metavar="OUT", help="also write results to this file")
    r.set_defaults(func=cmd_bench_led_render)
    sc = bench.add_parser("scenes", help="scenes effect: changes vs annotated section boundaries, drops and downbeats")
    sc.add_argument("songs_dir", nargs="?", type=Path, default=_SONGS_DIR,
                    help=f"songs of 'beatbus synth songs' (default {_SONGS_DIR})")
    sc.add_argument("--count", type=int, default=10, help="songs to replay, the first by name (default 10)")
    sc.add_argument("--every-bars", dest="every_bars", type=int, default=8, help="phrase of the phrase mode row")
    sc.add_argument("--seed", type=int, default=0, help="seed of the beats' delivery delays")
    sc.add_argument("--fps", type=float, default=60.0)
    sc.add_argument("--json", metavar="OUT", help="also write results to this file")
    sc.set_defaults(func=cmd_bench_scenes)

    bt = bench.add_parser("trigger", help="beat emission -> trigger arrival latency on loopback")
    bt.add_argument("--sources", type=int, default=10, help="sources publishing beats")
    bt.add_argument("--rate", type=float, default=4.0, help="beats/s per source")
    bt.add_argument("--duration", type=float, default=15.0, help="seconds of beats")
    bt.add_argument("--json", help="also write results to this file")
    bt.set_defaults(func=cmd_bench_trigger)

    ck = bench.add_parser("clock", help="beat clock (OSC, MIDI clock) vs a click and annotated files: tick jitter, "
                                        "beat offsets; real time through the real pipeline")
    ck.add_argument("files", nargs="*", metavar="FILE", help="audio files with a .beats annotation beside them")
    ck.add_argument("--bpm", type=float, default=120.0, help="tempo of the click track run (default 120)")
    ck.add_argument("--click-seconds", dest="click_seconds", type=float, default=20.0,
                    help="length of the click track run (default 20 s)")
    ck.add_argument("--backend", choices=BACKENDS, default="dsp")
    ck.add_argument("--json", metavar="OUT", help="also write results to this file")
    ck.set_defaults(func=cmd_bench_clock)

    bg = bench.add_parser("generate", help="job overhead, MusicGen steps/s and RTF, LSTM tokens/s (CPU)")
    bg.add_argument("--jobs", type=int, default=30, help="no-op jobs for the queue round-trip latency")
    bg.add_argument("--small", action="store_true", help="also time the full musicgen-small architecture")
    bg.add_argument("--seconds", type=float, default=2.0, help="audio seconds per MusicGen timing")
    bg.add_argument("--json", help="also write results to this file")
    bg.set_defaults(func=cmd_bench_generate)

    lo = bench.add_parser("load", help="N real-time sources through M processor daemons: CPU, lag, latency")
    lo.add_argument("--sources", type=_counts, default=[50], metavar="N[,N...]",
                    help="source counts, ascending; stops after the first that does not keep up (default 50)")
    lo.add_argument("--processors", type=int, default=1)
    lo.add_argument("--duration", type=float, default=60.0, help="seconds measured (after the warm-up)")
    lo.add_argument("--warmup", type=float, default=15.0)
    lo.add_argument("--backend", choices=BACKENDS, help="default: the daemon's own default (beatnet)")
    lo.add_argument("--file", help="loop this audio file on every source (default: click tracks)")
    lo.add_argument("--assign", choices=["shard", "discover"], default="shard",
                    help="shard: each processor gets --sources of its share; discover: they race for leases")
    lo.add_argument("--cluster", action="store_true",
                    help="also run every count on a local Redis Cluster (3 masters + 3 replicas), side by side")
    lo.add_argument("--adaptive", choices=["default", "on", "off", "both"], default="default",
                    help="the processors' adaptive quality: passed on (--adaptive), off (--no-adaptive), both "
                         "(each count twice, one row each) or not passed (default: the daemon's own, on)")
    lo.add_argument("--json", help="also write results to this file")
    lo.set_defaults(func=cmd_bench_load)
    so = bench.add_parser("soak", help="the full pipeline on a looped file: RSS, lag and latency over time")
    so.add_argument("--minutes", type=float, default=10.0)
    so.add_argument("--file", help="audio file to loop (default: a 30 s click track)")
    so.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    so.add_argument("--warmup", type=float, help="seconds not judged for memory growth (default min(60, 25 %%))")
    so.add_argument("--backend", choices=BACKENDS, default="dsp")
    so.add_argument("--json", help="also write every sample to this file")
    so.set_defaults(func=cmd_bench_soak)

    se = bench.add_parser("sections", help="live section churn: events, relabels and dashboard label changes "
                                           "per minute on long streams (loops, mixes, silence, a tone)")
    sections.add_arguments(se)
    se.set_defaults(func=cmd_bench_sections)


def _register_synth(top) -> None:
    p = top.add_parser("synth", help="synthetic songs with exact annotations (music21 + FluidSynth)")
    sub = p.add_subparsers(dest="synth", required=True)
    s = sub.add_parser("songs", help="render N random songs: audio + .beats + .sections + .chords + .json + .mid")
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
    s.set_defaults(func=cmd_synth_songs)


def _register_hls(commands: dict) -> None:
    from beatbus.hls.model import DEFAULT_WEIGHTS
    from beatbus.hls.project import DEFAULT_PROJECT

    hls = subcommands(commands, "hls", "FPGA beat kernel: QKeras + hls4ml")
    p = hls.add_parser("train", help="distil the QKeras model from the small torch model")
    _data_opts(p, epochs=3)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="small torch checkpoint, e.g. one of 'train beat-small --init shipped' (default: shipped)")
    p.add_argument("--data", type=Path, action="append", metavar="DIR",
                   help="recordings (files or folders) distilled on besides the --songs (repeatable; --songs 0: "
                        "recordings only); the targets are the checkpoint's own outputs, so no annotation is needed")
    p.add_argument("--out", type=Path, required=True,
                   help=f"weights prefix (the shipped ones are {DEFAULT_WEIGHTS}: never overwritten by default)")
    p.set_defaults(func=cmd_hls_train)

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


def register(commands: dict) -> None:
    """Add every lab command to the ``beatbus`` parser."""
    from .bench import intensity as intensity_bench
    from .eval import beats as beats_eval
    from .eval import harmony as harmony_eval
    from .eval import intensity as intensity_eval
    from .eval import sections

    top = commands["top"]
    _register_bench(top)

    evaluate = subcommands(commands, "eval", "accuracy against annotations: beats, sections, harmony")
    p = evaluate.add_parser("beats", help="beat, downbeat and tempo accuracy of the trackers (mir_eval), per group",
                            description=beats_eval.__doc__.splitlines()[0], epilog=beats_eval.EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    beats_eval.add_arguments(p)
    p.set_defaults(func=cmd_eval_beats)
    p = evaluate.add_parser("sections", help="section boundaries and labels (same as `beatbus structure eval`)")
    sections.add_arguments(p)
    p.set_defaults(func=cmd_structure_eval)
    p = evaluate.add_parser("harmony", help="key, chord and change-timing accuracy (same as `beatbus harmony eval`)")
    harmony_eval.add_arguments(p)
    p.set_defaults(func=cmd_harmony_eval)

    _register_synth(top)

    dev = subcommands(commands, "dev", "development helpers and test doubles")
    eg = dev.add_parser("error-generator",
                        help="reference receiver: a test double of the error-generator service")
    eg.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    eg.add_argument("--port", type=int, default=9090)
    eg.set_defaults(func=cmd_error_generator)

    train = subcommands(commands, "train", "train models")
    p = train.add_parser("beat-small", help="train the small beat activation model on synthetic songs and "
                                            "annotated recordings")
    _data_opts(p, epochs=40)
    p.add_argument("--out", type=Path, required=True,
                   help="checkpoint to write (the shipped one, processors/beat/data/small.pt, is never overwritten "
                        "by default)")
    p.add_argument("--distill", type=float, default=0.3, help="share of BeatNet model 1 in the targets (default 0.3)")
    p.add_argument("--augment", type=int, default=0,
                   help="degraded copies (EQ, reverb, noise, codecs, ...) per training song or recording "
                        "(default 0; 'hls train' uses lab.train.beat_small.DEFAULT_AUGMENT copies)")
    p.add_argument("--data", type=Path, action="append", metavar="DIR",
                   help="folder of annotated recordings (<name>.beats/.jams/.txt beside the audio; pseudo-labels "
                        "of 'beatbus label beats': only their '# keep' stretches) mixed with the --songs "
                        "(repeatable; --songs 0: recordings only)")
    p.add_argument("--held-out", dest="held_out", type=float, default=0.1,
                   help="share of the --data files held out, chosen by a hash of --seed and the name, "
                        "reported each epoch (default 0.1)")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="fine-tune this checkpoint ('shipped': processors/beat/data/small.pt) instead of "
                        "training from scratch")
    p.add_argument("--val-songs", dest="val_songs", type=int, default=4,
                   help="the last synthetic songs, kept as their dev set (default 4)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate, cosine-annealed (default 3e-3)")
    p.add_argument("--cache-dir", dest="cache_dir", type=Path, default=_REAL_CACHE,
                   help=f"feature arrays of the --data recordings are cached here (default {_REAL_CACHE})")
    p.set_defaults(func=cmd_train_small)

    label = subcommands(commands, "label", "pseudo-labels for training")
    p = label.add_parser("beats", help="beats of unannotated audio by the offline decoder, kept in confident "
                                      "stretches only: a folder for 'train beat-small --data'")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders (searched recursively)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="writes <name>.beats and a link <name>.<ext> to the audio here; labelled names are skipped")
    p.add_argument("--min-activation", dest="min_activation", type=float, default=0.3,
                   help="mean BeatNet activation at the beats of an 8-beat window (default 0.3)")
    p.add_argument("--min-beats", dest="min_beats", type=int, default=16,
                   help="shortest kept stretch in beats (default 16)")
    p.add_argument("--force", action="store_true", help="label again names already in --out")
    p.add_argument("--json", metavar="FILE", help="also write one row per recording here")
    p.set_defaults(func=cmd_label_beats)

    intensity = subcommands(commands, "intensity", "intensity features and energy transitions")
    p = intensity.add_parser("eval", help="transition precision/recall on synthetic songs with known transitions")
    intensity_eval.add_arguments(p)
    p.set_defaults(func=cmd_intensity_eval)
    p = intensity.add_parser("bench", help="feature cost per 20 ms frame and stream, on one core")
    intensity_bench.add_arguments(p)
    p.set_defaults(func=cmd_intensity_bench)

    structure = subcommands(commands, "structure", "song sections: intro/verse/chorus/bridge/outro")
    p = structure.add_parser("eval", help="section evaluation (same as `beatbus eval sections`)")
    sections.add_arguments(p)
    p.set_defaults(func=cmd_structure_eval)

    harmony = subcommands(commands, "harmony", "live key and chords, next chord change")
    p = harmony.add_parser("eval", help="key, chord (majmin) and change-timing accuracy on synthetic songs "
                                        "(same as `beatbus eval harmony`)")
    harmony_eval.add_arguments(p)
    p.set_defaults(func=cmd_harmony_eval)

    _register_hls(commands)
