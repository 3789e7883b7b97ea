"""The ``beatbus`` command line.

User errors (``BeatbusError``) print one line, ``beatbus: error: ...``, and exit 2;
they never show a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from typing import Any

import orjson

from . import __version__, threads
from .config import DESCRIPTIONS, Settings, load_settings
from .deprecation import add_deprecated_option
from .errors import BeatbusError, ConfigError
from .log import get_logger, setup_logging

__all__ = ["main", "build_parser", "add_common_options", "cli_settings", "connect", "subcommands", "EXTENSIONS"]

# Stage modules that add their own commands: each has ``register(commands)`` where
# ``commands`` maps "top" and "consume" to argparse sub-parser collections.
EXTENSIONS = ("beatbus.producers.synth.cli", "beatbus.processors.beat.cli", "beatbus.consumers.led.cli", "beatbus.consumers.trigger.cli", "beatbus.consumers.generate.cli", "beatbus.api.cli",
              "beatbus.processors.intensity.cli", "beatbus.processors.structure.cli", "beatbus.hls.cli", "beatbus.deploy.cli")

log = get_logger("cli")
BACKENDS = ("dsp", "beatnet", "small", "hls")


# -- shared plumbing ------------------------------------------------------------------
def subcommands(commands: dict, name: str, help: str):  # noqa: A002  (argparse's word)
    """The sub-parser collection of ``beatbus <name> ...``, shared by every extension.

    Created by whichever extension asks first (``dev``, ``generate``, ``train``...), so two
    stages can add commands under one word.
    """
    if name not in commands:
        parser = commands["top"].add_parser(name, help=help)
        commands[name] = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return commands[name]


def add_common_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (flags > BEATBUS_* env > TOML file > defaults)")
    g.add_argument("--config", help="TOML configuration file (also BEATBUS_CONFIG)")
    g.add_argument("--redis-url", dest="redis_url", help=DESCRIPTIONS["redis_url"] + " Also REDIS_URL.")
    g.add_argument("--source", help=DESCRIPTIONS["source"])
    g.add_argument("--metrics-addr", dest="metrics_addr", help=DESCRIPTIONS["metrics_addr"])
    g.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    g.add_argument("--log-format", dest="log_format", choices=["text", "json"])


def _backend_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, help=DESCRIPTIONS["backend"])
    p.add_argument("--device", choices=["cpu", "cuda"], help=DESCRIPTIONS["device"])


def cli_settings(args: argparse.Namespace) -> Settings:
    """Settings from flags/env/TOML for a parsed command; also sets up logging."""
    settings = load_settings(vars(args), config_file=getattr(args, "config", None))
    setup_logging(settings.log_level, settings.log_format)
    threads.apply(settings.threads)      # a TOML `threads` resizes the pools set at import
    return settings


def _make_processor(settings: Settings):
    from beatbus.processors.beat import BeatProcessor

    return lambda: BeatProcessor(backend=settings.backend, sr=settings.sr, device=settings.device)


@contextlib.contextmanager
def connect(settings: Settings, *, embedded_ok: bool):
    """Yield a connected Bus: REDIS_URL's server, or (for ``run``) a private embedded one."""
    from .broker import EmbeddedBroker
    from .bus import Bus

    if settings.redis_url:
        bus = Bus.connect(settings.redis_url)
        try:
            yield bus
        finally:
            bus.close()
        return
    if not embedded_ok:
        raise ConfigError("no broker: set REDIS_URL (or --redis-url); `beatbus broker` starts one "
                          "and prints its URL, and `beatbus run` brings its own")
    with EmbeddedBroker() as broker:
        bus = Bus.connect(broker.url)
        try:
            yield bus
        finally:
            bus.close()


def _audio_source(kind: str, args: argparse.Namespace, settings: Settings):
    try:
        return _open_audio(kind, args, settings)
    except ValueError as exc:  # the sources validate their parameters with ValueError
        raise ConfigError(str(exc)) from None


def _open_audio(kind: str, args: argparse.Namespace, settings: Settings):
    from beatbus import producers

    if kind == "file":
        return producers.FileSource(args.path, sr=settings.sr, hop=settings.hop,
                                    realtime=not args.fast, loop=args.loop)
    if kind == "click":
        return producers.ClickSource(args.bpm, sr=settings.sr, hop=settings.hop,
                                     realtime=not getattr(args, "fast", False), duration=args.duration,
                                     meter=getattr(args, "meter", 4))
    if kind == "mic":
        return producers.MicSource(args.device_index, sr=settings.sr, hop=settings.hop)
    raise ConfigError(f"unknown source kind {kind!r}")


# -- commands -------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from beatbus.consumers.terminal import TerminalConsumer
    from beatbus.processors.service import BeatService
    from beatbus.producers.publisher import Publisher

    from .runtime import run_services

    settings = cli_settings(args)
    if args.metrics_addr is None and settings.metrics_addr == Settings().metrics_addr:
        settings = load_settings({**vars(args), "metrics_addr": "off"}, config_file=args.config)
    kind = "click" if args.click is not None else "mic" if args.mic else "file"
    if kind == "file" and not args.path:
        raise ConfigError("give an audio file, --click BPM or --mic")
    if kind == "click":
        args.bpm = args.click
    led_plan = None
    if args.led:  # validated before anything starts: a bad URL or effect is a one-line error
        from beatbus.consumers.led.service import plan_led

        led_plan = plan_led(settings, outputs=args.led, effect=args.effect, pixels=args.pixels,
                            source=settings.source)
    audio = _audio_source(kind, args, settings)
    with connect(settings, embedded_ok=True) as bus:
        terminal = TerminalConsumer(bus, settings=settings, sources=[settings.source])
        consumers = [terminal]
        dashboard = None
        if led_plan is not None:
            from beatbus.consumers.led.cli import serve_preview_dashboard
            from beatbus.consumers.led.service import LedService

            consumers.append(LedService(bus, settings=settings, plan=led_plan))
            dashboard = serve_preview_dashboard(bus, settings, led_plan.devices)   # web:// outputs
        if args.error_generator_url:
            from beatbus.consumers.trigger import build_trigger_service

            # before the processor, so its consumer group exists before beats flow
            consumers.append(build_trigger_service(bus, settings, url=args.error_generator_url,
                                                   sources=[settings.source]))
        processor = BeatService(bus, settings=settings, make_processor=_make_processor(settings),
                                sources=[settings.source])
        producer = Publisher(bus, audio, settings=settings)
        print(f"beatbus: {kind} -> bb:{{{settings.source}}}:audio -> {settings.backend} beats "
              f"(broker {'embedded' if not settings.redis_url else 'REDIS_URL'})", file=sys.stderr)
        try:
            return run_services([*consumers, processor, producer], metrics_addr=settings.metrics_addr,
                                until=[terminal], duration=args.duration)
        finally:
            if dashboard is not None:
                dashboard.stop()


def _analysis(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    import numpy as np

    from beatbus import producers
    from beatbus.processors.beat import BeatProcessor

    from .progress import Progress

    proc = BeatProcessor(backend=settings.backend, sr=settings.sr, device=settings.device)
    beats = []
    with Progress(f"analyze {args.path}", _audio_seconds(args.path), "s of audio") as bar:
        with producers.FileSource(args.path, sr=settings.sr, hop=settings.hop, realtime=False) as audio:
            for chunk in audio:
                beats.extend(proc.process(chunk.samples))
                bar.set((chunk.sample_index + len(chunk.samples)) / settings.sr, note=f"{len(beats)} beats")
        beats.extend(proc.flush())
        times = np.array([b.time for b in beats])
        tempo = float(60.0 / np.median(np.diff(times))) if len(times) > 2 else 0.0
        result = {"tempo": round(tempo, 2), "beats": [
            {"time": round(b.time, 4), "beat_in_bar": b.beat_in_bar, "is_downbeat": b.is_downbeat,
             "bpm": round(b.bpm, 2), "confidence": round(b.confidence, 3)} for b in beats]}
        if getattr(args, "sections", False):
            from beatbus.processors.structure import analyze_sections

            bar.interval = 0.0
            bar.set(bar.done, note=f"{len(beats)} beats; finding sections")
            result["sections"] = analyze_sections(args.path, beats=result["beats"])
    return result


def _audio_seconds(path: str) -> float | None:
    """A file's duration for the progress line (None when its header does not say)."""
    try:
        import soundfile

        return float(soundfile.info(path).duration) or None
    except Exception:  # noqa: BLE001  (only a nicer progress line is lost)
        return None


def cmd_analyze(args: argparse.Namespace) -> int:
    settings = cli_settings(args)
    result = _analysis(args, settings)
    if args.csv:
        out = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")
        with contextlib.ExitStack() as stack:
            if out is not sys.stdout:
                stack.enter_context(out)
            w = csv.DictWriter(out, fieldnames=["time", "beat_in_bar", "is_downbeat", "bpm", "confidence"])
            w.writeheader()
            w.writerows(result["beats"])
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    elif not args.csv or args.csv != "-":
        for b in result["beats"]:
            mark = "*" if b["is_downbeat"] else " "
            print(f"{b['time']:8.2f}s  beat {b['beat_in_bar']}{mark} {b['bpm']:6.1f} BPM  conf {b['confidence']:.2f}")
        print(f"tempo {result['tempo']:.1f} BPM, {len(result['beats'])} beats")
        for sec in result.get("sections", []):
            print(f"{sec['start']:8.2f}s - {sec['end']:8.2f}s  {sec['label']:7s}  conf {sec['confidence']:.2f}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from beatbus.producers.publisher import Publisher

    from .runtime import run_services

    settings = cli_settings(args)
    audio = _audio_source(args.kind, args, settings)
    with connect(settings, embedded_ok=False) as bus:
        return run_services([Publisher(bus, audio, settings=settings)], metrics_addr=settings.metrics_addr,
                            duration=getattr(args, "duration", None))


def cmd_process(args: argparse.Namespace) -> int:
    from beatbus.processors.service import BeatService

    from .runtime import run_services

    settings = cli_settings(args)
    _make_processor(settings)()  # fail fast on a missing extra or model, before any lease
    with connect(settings, embedded_ok=False) as bus:
        svc = BeatService(bus, settings=settings, make_processor=_make_processor(settings),
                          sources=args.sources or None)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def cmd_consume(args: argparse.Namespace) -> int:
    from beatbus.consumers.terminal import TerminalConsumer

    from .runtime import run_services

    settings = cli_settings(args)
    with connect(settings, embedded_ok=False) as bus:
        svc = TerminalConsumer(bus, settings=settings, sources=args.sources or [settings.source],
                               exit_on_end=args.exit_on_end)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def cmd_devices(args: argparse.Namespace) -> int:
    from beatbus import producers

    devices = producers.list_devices()
    if not devices:
        print("no audio input devices found")
        return 1
    for d in devices:
        print(f"{d['index']:3d}  {d['name']}  ({d['max_input_channels']} ch, {d['default_sample_rate']:.0f} Hz)")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .broker import EmbeddedBroker

    setup_logging("info")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(args.dir) as broker:
        print(f"REDIS_URL={broker.url}", flush=True)
        stop.wait()
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_bus

    setup_logging("warning")
    return bench_bus(events=args.events, rate=args.rate, json_path=args.json)


def cmd_schemas(args: argparse.Namespace) -> int:
    from beatbus.schemas.export import SCHEMA_DIR, export_schemas, schema_documents

    if args.check:
        stale = [n for n, data in schema_documents().items()
                 if not (SCHEMA_DIR / n).exists() or (SCHEMA_DIR / n).read_bytes() != data]
        if stale:
            raise ConfigError(f"exported schemas are stale: {', '.join(stale)}; run `beatbus schemas export`")
        print("schemas up to date")
        return 0
    for path in export_schemas():
        print(path)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    setup_logging("warning")
    rest = list(args.rest)
    targets = {"beats": "beatbus.processors.beat.evaluate", "sections": "beatbus.processors.structure.evaluate"}
    if not rest or rest[0] not in targets:
        raise ConfigError("usage: beatbus eval beats DIR [--backend NAME ...] [--json FILE] | "
                          "beatbus eval sections DIR [--mode online|offline] [--json FILE]")
    import importlib

    try:
        eval_main = importlib.import_module(targets[rest[0]]).main
    except ImportError as exc:
        raise ConfigError(f"{rest[0]} evaluation is unavailable: {exc}") from None
    return int(eval_main(rest[1:]) or 0)


# -- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beatbus", description="Real-time rhythm events over Redis Streams.")
    p.add_argument("--version", action="version", version=f"beatbus {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="whole pipeline on an embedded broker, beats printed")
    r.add_argument("path", nargs="?", help="audio file (wav/flac/ogg/mp3)")
    r.add_argument("--click", type=float, metavar="BPM", help="a metronome source instead of a file")
    r.add_argument("--mic", action="store_true", help="capture from a microphone (PyAudio)")
    r.add_argument("--mic-device", dest="device_index", type=int, help="input device index (see `beatbus devices`)")
    r.add_argument("--duration", type=float, help="stop after this many seconds")
    r.add_argument("--fast", action="store_true", help="files: as fast as possible instead of real time")
    r.add_argument("--loop", action="store_true", help="files: start over at the end")
    r.add_argument("--meter", type=int, default=4, help="click: beats per bar")
    r.add_argument("--led", action="append", metavar="URL",
                   help="also drive LEDs: ddp://host, sacn://host, artnet://host, opc://host, wled://host, terminal:// (repeatable)")
    r.add_argument("--effect", help="LED effect (see `beatbus consume led --list-effects`)")
    r.add_argument("--pixels", type=int, help="LED pixel count")
    r.add_argument("--error-generator-url", dest="error_generator_url", metavar="URL",
                   help="also fire error patterns at URL/api/rhythm-trigger on the beat (e.g. http://127.0.0.1:9090)")
    add_deprecated_option(r, "--trigger", "--error-generator-url")
    _backend_opts(r)
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("analyze", help="beats of a file, offline, as fast as possible")
    a.add_argument("path")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("--csv", metavar="FILE", help="write beats as CSV ('-' for stdout)")
    a.add_argument("--sections", action="store_true",
                   help="also find song sections (intro/verse/chorus/bridge/outro), offline")
    _backend_opts(a)
    a.set_defaults(func=cmd_analyze)

    pr = sub.add_parser("produce", help="publish audio to bb:{source}:audio (daemon)")
    psub = pr.add_subparsers(dest="kind", required=True)
    pf = psub.add_parser("file", help="an audio file, paced in real time")
    pf.add_argument("path")
    pf.add_argument("--fast", action="store_true")
    pf.add_argument("--loop", action="store_true")
    pm = psub.add_parser("mic", help="a PyAudio input device")
    pm.add_argument("--mic-device", dest="device_index", type=int, help="input device index (see `beatbus devices`)")
    add_deprecated_option(pm, "--device", "--mic-device", type=int)
    pc = psub.add_parser("click", help="a metronome with known beats")
    pc.add_argument("--bpm", type=float, default=120.0)
    pc.add_argument("--meter", type=int, default=4)
    pc.add_argument("--duration", type=float)
    pc.add_argument("--fast", action="store_true")
    for q in (pf, pm, pc):
        add_common_options(q)
        q.set_defaults(func=cmd_produce)

    pp = sub.add_parser("process", help="beat processor daemon (owns sources by lease)")
    pp.add_argument("--sources", nargs="*", help="sources to own (default: every live source)")
    _backend_opts(pp)
    pp.set_defaults(func=cmd_process)

    pcn = sub.add_parser("consume", help="consumer daemons")
    csub = pcn.add_subparsers(dest="consumer", required=True)
    ct = csub.add_parser("terminal", help="print beats")
    ct.add_argument("--sources", nargs="*")
    ct.add_argument("--exit-on-end", action="store_true", help="exit when every source has ended")
    add_common_options(ct)
    ct.set_defaults(func=cmd_consume)

    d = sub.add_parser("devices", help="list audio input devices")
    d.set_defaults(func=cmd_devices)

    b = sub.add_parser("broker", help="run the embedded broker in the foreground and print its REDIS_URL")
    b.add_argument("--dir", help="directory for its socket (default: a private temp dir)")
    b.set_defaults(func=cmd_broker)

    bn = sub.add_parser("bench", help="benchmarks")
    bsub = bn.add_subparsers(dest="bench", required=True)
    bb = bsub.add_parser("bus", help="publish-to-consume latency and throughput on loopback")
    bb.add_argument("--events", type=int, default=20000)
    bb.add_argument("--rate", type=float, default=1000.0, help="events/s for the latency phase")
    bb.add_argument("--json", help="also write results to this file")
    bb.set_defaults(func=cmd_bench)

    s = sub.add_parser("schemas", help="export event JSON Schemas into schemas/json")
    s.add_argument("export", nargs="?", choices=["export"], default="export")
    s.add_argument("--check", action="store_true", help="fail if the checked-in files are stale")
    s.set_defaults(func=cmd_schemas)

    e = sub.add_parser("eval", help="evaluation (e.g. `beatbus eval beats DIR`)", add_help=False)
    e.add_argument("rest", nargs=argparse.REMAINDER)
    e.set_defaults(func=cmd_eval)

    for q in (r, a, pp, d):
        add_common_options(q)
    import importlib
    import importlib.util

    commands = {"top": sub, "consume": csub, "bench": bsub}
    for name in EXTENSIONS:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) and importlib.util.find_spec(name):
            importlib.import_module(name).register(commands)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BeatbusError as exc:
        print(f"beatbus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
