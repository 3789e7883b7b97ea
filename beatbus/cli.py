"""The ``beatbus`` command line.

User errors (``BeatbusError``) print one line, ``beatbus: error: ...``, and exit 2;
they never show a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import sys
import threading
from typing import Any

import msgspec
import orjson

from . import __version__
from .commands import add_common_options, cli_settings, connect
from .config import Settings, load_settings
from .deprecation import add_deprecated_option
from .errors import BeatbusError, ConfigError, missing_extra
from .log import get_logger, setup_logging
from .processors.beat.cli import add_backend_options, make_processor
from .producers.cli import add_mic_device_option, open_audio

__all__ = ["main", "build_parser"]

# Every stage adds its commands one way: its ``cli.py`` has ``register(commands)``, where
# ``commands["top"]`` is ``beatbus``'s sub-parser collection and groups (``consume``, ``bench``...)
# come from :func:`beatbus.commands.subcommands`. This module is the composition root: it
# imports every stage and nothing imports it.
EXTENSIONS = ("beatbus.producers.cli", "beatbus.processors.beat.cli", "beatbus.consumers.terminal.cli",
              "beatbus.consumers.led.cli", "beatbus.consumers.trigger.cli", "beatbus.consumers.generate.cli",
              "beatbus.consumers.clock.cli", "beatbus.api.cli",
              "beatbus.processors.intensity.cli", "beatbus.processors.structure.cli", "beatbus.processors.harmony.cli",
              "beatbus.hls.cli", "beatbus.deploy.cli",
              "beatbus.lab.cli")

log = get_logger("cli")


def cmd_run(args: argparse.Namespace) -> int:
    from beatbus.consumers.terminal import TerminalConsumer
    from beatbus.processors.beat.service import BeatService
    from beatbus.processors.intensity.service import IntensityService
    from beatbus.processors.structure.service import StructureService
    from beatbus.producers.service import Publisher

    from .runtime import run_services

    settings = cli_settings(args)
    if args.metrics_addr is None and settings.metrics_addr == Settings().metrics_addr:
        settings = load_settings({**vars(args), "metrics_addr": "off"}, config_file=args.config)
    given = [name for name, on in (("a file", args.path), ("--click", args.click is not None), ("--mic", args.mic)) if on]
    if len(given) != 1:
        raise ConfigError("give one audio source: a file, --click BPM or --mic" +
                          (f" (got {' and '.join(given)})" if given else ""))
    kind = "click" if args.click is not None else "mic" if args.mic else "file"
    if kind == "click":
        args.bpm = args.click
    led_plan = None
    if args.led:  # validated before anything starts: a bad URL or effect is a one-line error
        from beatbus.consumers.led.service import plan_led

        led_plan = plan_led(settings, outputs=args.led, effect=args.effect, pixels=args.pixels,
                            source=settings.source)
    make_processor(settings)()  # fail fast on a missing extra or model, before anything starts
    if args.error_generator_url:
        from beatbus.consumers.trigger.delivery import check_client

        check_client()
    audio = open_audio(kind, args, settings)
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
        # one source: degrading the only one costs it quality (a beat re-lock) and saves nothing for others
        fixed = msgspec.structs.replace(settings, adaptive=False)
        processor = BeatService(bus, settings=fixed, make_processor=make_processor(settings), sources=[settings.source])
        # the whole pipeline: LED scenes, section colours and trigger patterns follow sections and drops
        stages = [IntensityService(bus, settings=fixed, sources=[settings.source]),
                  StructureService(bus, settings=fixed, sources=[settings.source])]
        producer = Publisher(bus, audio, settings=settings)
        print(f"beatbus: {kind} -> bb:{{{settings.source}}}:audio -> {settings.backend} beats "
              f"(broker {'embedded' if not settings.redis_url else 'REDIS_URL'})", file=sys.stderr)
        if not settings.redis_url:      # so that `beatbus api` and the other daemons can join this pipeline
            print(f"beatbus: other beatbus commands join it with REDIS_URL={bus.url}", file=sys.stderr, flush=True)
        try:
            # stopped (--duration, Ctrl-C): the producer first, so the end of the stream reaches every
            # reader, a clock or LED daemon joined through REDIS_URL too
            return run_services([*consumers, *stages, processor, producer], metrics_addr=settings.metrics_addr,
                                until=[terminal], duration=args.duration, sources=[producer])
        finally:
            if dashboard is not None:
                dashboard.stop()


def _analysis(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:

    from beatbus.processors.beat import BeatProcessor, track_offline
    from beatbus.processors.beat.rhythm import span_rhythm, tempo_curve
    from beatbus.producers import FileSource

    from .progress import Progress

    beats = []
    with Progress(f"analyze {args.path}", _audio_seconds(args.path), "s of audio") as bar:
        with FileSource(args.path, sr=settings.sr, hop=settings.hop, realtime=False) as audio:
            if args.online:  # the live pipeline's causal tracker
                proc = BeatProcessor(backend=settings.backend, sr=settings.sr, device=settings.device)
                for chunk in audio:
                    beats.extend(proc.process(chunk.samples))
                    bar.set((chunk.sample_index + len(chunk.samples)) / settings.sr, note=f"{len(beats)} beats")
                beats.extend(proc.flush())
            else:
                def samples():
                    for chunk in audio:
                        yield chunk.samples
                        bar.set((chunk.sample_index + len(chunk.samples)) / settings.sr, note="activations")

                beats = track_offline(samples(), backend=settings.backend, sr=settings.sr, device=settings.device)
        whole = span_rhythm(beats, 0.0, float("inf"))
        result = {"tempo": whole["tempo"] or 0.0, "meter": whole["meter"],
                  "tempo_curve": [{"time": t, "bpm": bpm} for t, bpm in tempo_curve(beats)], "beats": [
            {"time": round(b.time, 4), "beat_in_bar": b.beat_in_bar, "is_downbeat": b.is_downbeat,
             "bpm": round(b.bpm, 2), "confidence": round(b.confidence, 3)} for b in beats]}
        if getattr(args, "sections", False):
            from beatbus.processors.structure import analyze_sections

            bar.interval = 0.0
            bar.set(bar.done, note=f"{len(beats)} beats; finding sections")
            # beat times only: the structure finds its bar phase itself (see analyze_structure)
            result["sections"] = [{**sec, **span_rhythm(beats, sec["start"], sec["end"])}
                                  for sec in analyze_sections(args.path, beats=[b["time"] for b in result["beats"]])]
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
        meter = f", meter {result['meter']}" if result["meter"] else ""
        print(f"tempo {result['tempo']:.1f} BPM{meter}, {len(result['beats'])} beats")
        for sec in result.get("sections", []):
            rhythm = f"  {sec['tempo']:6.1f} BPM  meter {sec['meter']}" if sec["tempo"] else ""
            print(f"{sec['start']:8.2f}s - {sec['end']:8.2f}s  {sec['label']:7s}  conf {sec['confidence']:.2f}{rhythm}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import EmbeddedBroker

    setup_logging("info")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(args.dir) as broker:
        print(f"REDIS_URL={broker.url}", flush=True)
        stop.wait()
    return 0


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


# -- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beatbus", description="Real-time rhythm events over Redis Streams.")
    p.add_argument("--version", action="version", version=f"beatbus {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="whole pipeline on an embedded broker, beats printed")
    r.add_argument("path", nargs="?", help="audio file (wav/flac/ogg/mp3)")
    r.add_argument("--click", type=float, metavar="BPM", help="a metronome source instead of a file")
    r.add_argument("--mic", action="store_true",
                   help="capture from an audio input (PyAudio): a microphone, or what this computer plays")
    add_mic_device_option(r)
    r.add_argument("--duration", type=float,
                   help="stop after this many seconds of wall-clock time (with --fast, a file may end sooner)")
    r.add_argument("--fast", action="store_true", help="files: as fast as possible instead of real time")
    r.add_argument("--loop", action="store_true", help="files: start over at the end")
    r.add_argument("--meter", type=int, default=4, help="click: beats per bar")
    r.add_argument("--led", action="append", metavar="URL",
                   help="also drive LEDs: ddp://host, sacn://host, artnet://host, opc://host, wled://host, "
                        "terminal://, web://NAME (a browser preview; its URL is printed), ws://HOST:PORT "
                        "(repeatable)")
    r.add_argument("--effect", help="LED effect (see `beatbus consume led --list-effects`)")
    r.add_argument("--pixels", type=int, help="LED pixel count")
    r.add_argument("--error-generator-url", dest="error_generator_url", metavar="URL",
                   help="also fire error patterns at URL/api/rhythm-trigger on the beat (e.g. http://127.0.0.1:9090)")
    add_deprecated_option(r, "--trigger", "--error-generator-url")
    add_backend_options(r)
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("analyze", help="beats of a file, offline, as fast as possible")
    a.add_argument("path")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("--csv", metavar="FILE", help="write beats as CSV ('-' for stdout)")
    a.add_argument("--online", action="store_true",
                   help="the live pipeline's causal tracker (default: decode the whole file at once, "
                        "which finds intros and scores higher)")
    a.add_argument("--sections", action="store_true",
                   help="also find song sections (intro/verse/chorus/bridge/outro), offline")
    add_backend_options(a)
    a.set_defaults(func=cmd_analyze)

    b = sub.add_parser("broker", help="run the embedded broker in the foreground and print its REDIS_URL")
    b.add_argument("--dir", help="directory for its socket (default: a private temp dir)")
    b.set_defaults(func=cmd_broker)

    s = sub.add_parser("schemas", help="export event JSON Schemas into schemas/json")
    s.add_argument("export", nargs="?", choices=["export"], default="export")
    s.add_argument("--check", action="store_true", help="fail if the checked-in files are stale")
    s.set_defaults(func=cmd_schemas)

    for q in (r, a):
        add_common_options(q)
    import importlib
    import importlib.util

    commands = {"top": sub}
    for name in EXTENSIONS:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) and importlib.util.find_spec(name):
            importlib.import_module(name).register(commands)
    return p


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread (a daemon's loop handles it itself, beatbus/runtime.py)."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


def _install_sigterm() -> None:
    """SIGTERM raises :class:`_Terminated` in the main thread. Where Python swallows an exception
    (an at-fork hook of ``subprocess``'s fork, a finalizer) it is reported as "unraisable": the
    signal is then sent again a moment later, from a thread, so it lands once that code has
    returned instead of being lost (a CI run saw `bench load` run on for 90 s after a SIGTERM that
    arrived inside logging's at-fork hook). Sent at once, it would land in this hook, and be lost."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    hook = sys.unraisablehook

    def unraisable(u) -> None:
        if u.exc_type is _Terminated:
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        else:
            hook(u)

    sys.unraisablehook = unraisable


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so a benchmark, evaluation or training job killed by a
    # supervisor removes its temporary folders and stops its child processes first
    if threading.current_thread() is threading.main_thread():
        _install_sigterm()
    try:
        return int(args.func(args) or 0)
    except BeatbusError as exc:
        print(f"beatbus: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        missing = missing_extra(exc)
        if missing is None:         # not an optional package: a bug, shown in full
            raise
        print(f"beatbus: error: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        # cleaned up: now end as the signal asked (a shell or systemd sees "killed by SIGTERM")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
