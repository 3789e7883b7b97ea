"""``beatbus produce file|mic|click`` (the producer daemon) and ``beatbus devices``."""
from __future__ import annotations

import argparse

from beatbus.commands import add_common_options, cli_settings, connect
from beatbus.config import Settings
from beatbus.deprecation import add_deprecated_option
from beatbus.errors import AudioSourceError, ConfigError

from . import Source, list_devices, open_source

__all__ = ["register", "open_audio", "add_mic_device_option"]

_MARKS = {"monitor": "[what this computer plays]", "loopback": "[ALSA loopback]"}


def add_mic_device_option(p: argparse.ArgumentParser) -> None:
    """``--mic-device``, for every command that captures (``produce mic``, ``run --mic``)."""
    p.add_argument("--mic-device", dest="mic_device", metavar="DEVICE",
                   help="index, name or a unique part of a name or description, e.g. 'monitor' "
                        "(what this computer plays); see `beatbus devices`")


def open_audio(kind: str, args: argparse.Namespace, settings: Settings) -> Source:
    """The audio source a command line asks for (``produce`` and ``run``).

    Bad parameters (the sources check them with ValueError) become one-line ConfigErrors.
    """
    kw: dict = {"sr": settings.sr, "hop": settings.hop}
    if kind == "file":
        kw |= {"path": args.path, "realtime": not args.fast, "loop": args.loop}
    elif kind == "click":
        kw |= {"bpm": args.bpm, "realtime": not getattr(args, "fast", False), "duration": args.duration,
               "meter": getattr(args, "meter", 4)}
    elif kind == "mic":
        kw |= {"device": args.mic_device}
    try:
        return open_source(kind, **kw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def cmd_produce(args: argparse.Namespace) -> int:
    from beatbus.runtime import run_services

    from .service import Publisher

    settings = cli_settings(args)
    audio = open_audio(args.kind, args, settings)
    with connect(settings, embedded_ok=False) as bus:
        return run_services([Publisher(bus, audio, settings=settings)], metrics_addr=settings.metrics_addr,
                            duration=getattr(args, "duration", None))


def cmd_devices(args: argparse.Namespace) -> int:
    devices = list_devices()
    if not devices:
        raise AudioSourceError("no audio input devices found: no sound card, and no sound server (PulseAudio / "
                               "PipeWire) answered (README: Capture what the computer plays)")
    rows = [("-" if d["index"] is None else str(d["index"]), d["kind"], d["name"],
             ", ".join(filter(None, [d["description"], f"{d['max_input_channels']} ch",
                                     f"{d['default_sample_rate']:.0f} Hz",
                                     "default input" if d["is_default"] else ""])),
             _MARKS.get(d["kind"], "")) for d in devices]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip())
    print("pick one with --mic-device INDEX or NAME (a unique part of it will do)")
    return 0


def register(commands: dict) -> None:
    """Add ``produce`` and ``devices`` to the ``beatbus`` parser."""
    sub = commands["top"]
    pr = sub.add_parser("produce", help="publish audio to bb:{source}:audio (daemon)")
    psub = pr.add_subparsers(dest="kind", required=True)
    pf = psub.add_parser("file", help="an audio file, paced in real time")
    pf.add_argument("path")
    pf.add_argument("--fast", action="store_true")
    pf.add_argument("--loop", action="store_true")
    pm = psub.add_parser("mic", help="a PyAudio input device")
    add_mic_device_option(pm)
    add_deprecated_option(pm, "--device", "--mic-device")
    pc = psub.add_parser("click", help="a metronome with known beats")
    pc.add_argument("--bpm", type=float, default=120.0)
    pc.add_argument("--meter", type=int, default=4)
    pc.add_argument("--duration", type=float)
    pc.add_argument("--fast", action="store_true")
    for q in (pf, pm, pc):
        add_common_options(q)
        q.set_defaults(func=cmd_produce)

    d = sub.add_parser("devices", help="list audio inputs, sound-server monitors (what this computer plays) "
                                       "included")
    add_common_options(d)
    d.set_defaults(func=cmd_devices)
