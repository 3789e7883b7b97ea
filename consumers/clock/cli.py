"""Command: ``beatbus clock run``."""
from __future__ import annotations

import argparse
import sys

from beatbus.commands import add_common_options, cli_settings, connect, subcommands
from beatbus.deprecation import add_deprecated_option

from .config import DESCRIPTIONS

__all__ = ["register", "cmd_clock_run"]


def cmd_clock_run(args: argparse.Namespace) -> int:
    from beatbus.errors import ConfigError
    from beatbus.runtime import run_services

    from .config import load_clock_config
    from .midi import open_virtual_port
    from .osc import OscSender, parse_target
    from .service import ClockService

    settings = cli_settings(args)
    config = load_clock_config({"osc": args.osc, "midi": args.midi, "output_latency_ms": args.output_latency_ms},
                               config_file=args.config)
    if not config.osc and not config.midi:
        raise ConfigError("the clock goes nowhere: give --osc HOST:PORT (repeatable) and/or --midi PORTNAME")
    # every output is opened before connecting: a bad target or no ALSA sequencer is one line, exit 2
    osc = OscSender([parse_target(t) for t in config.osc]) if config.osc else None
    midi = open_virtual_port(config.midi) if config.midi else None
    try:
        with connect(settings, embedded_ok=False) as bus:
            svc = ClockService(bus, settings=settings, source=settings.source, config=config, osc=osc, midi=midi,
                               exit_on_end=args.exit_on_end)
            outs = ([f"OSC {osc}"] if osc else []) + ([f"MIDI port {config.midi!r}"] if midi else [])
            print(f"beatbus: clock of bb:{{{settings.source}}}:beats -> {', '.join(outs)} "
                  f"(output latency {config.output_latency_ms:g} ms)", file=sys.stderr, flush=True)
            return run_services([svc], metrics_addr=settings.metrics_addr)
    finally:
        for out in (osc, midi):
            if out is not None:
                out.close()


def register(commands: dict) -> None:
    """Add ``clock run`` to the ``beatbus`` parser."""
    c = subcommands(commands, "clock", "beat clock to other software: OSC and MIDI clock").add_parser(
        "run", help="send the beat clock of a source: OSC messages and MIDI clock on predicted beats (daemon)",
        description="Follow one source's beats and send them on time to other software: OSC messages "
                    "(/beatbus/beat, /bar, /tempo, /section, /start, /stop) to UDP targets and MIDI clock "
                    "(24 ppqn, start/stop, song position) on a virtual MIDI port. Both are scheduled on the "
                    "predicted beats, sent --output-latency-ms early. Options also in the [clock] TOML table "
                    "and BEATBUS_CLOCK_* (README: Beat clock).")
    c.add_argument("--osc", action="append", metavar="HOST:PORT", help=DESCRIPTIONS["osc"])
    c.add_argument("--midi", metavar="PORTNAME", help=DESCRIPTIONS["midi"])
    c.add_argument("--output-latency-ms", dest="output_latency_ms", type=float, metavar="MS",
                   help=DESCRIPTIONS["output_latency_ms"] + " (default 0)")
    add_deprecated_option(c, "--latency-ms", "--output-latency-ms", type=float)
    c.add_argument("--exit-on-end", action="store_true", help="exit when the source's stream ends")
    add_common_options(c)
    c.set_defaults(func=cmd_clock_run)
