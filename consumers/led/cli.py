"""``beatbus consume led``, and ``beatbus devices --leds`` (WLED controllers found over mDNS)."""
from __future__ import annotations

import argparse
import os
import sys
import threading

from beatbus.deprecation import add_deprecated_option
from beatbus.errors import ConfigError

__all__ = ["register", "cmd_consume_led", "cmd_find_leds", "parse_params", "serve_preview_dashboard"]

DASHBOARD_PORT = 8000           # `beatbus api`'s default; another free port when it is taken


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` -> dict (values stay strings; the effect schema converts them)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r} must be KEY=VALUE, e.g. --param color_palette=fire")
        out[key.strip()] = value.strip()
    return out


def _settings(args: argparse.Namespace):
    """beatbus settings, and the config file whose ``[led]`` table describes the devices."""
    from beatbus.commands import cli_settings

    return cli_settings(args), args.config or os.environ.get("BEATBUS_CONFIG")


def _list_effects() -> int:
    from .effects import load_effects
    from .params import describe

    for name, cls in sorted(load_effects().items()):
        print(f"{name}: {cls.description}")
        print("\n".join(describe(cls.schema())))
    return 0


def _read_taps(svc, stop: threading.Event) -> None:
    print("calibration: press Enter on every beat you hear", file=sys.stderr, flush=True)
    n = 0
    for _line in sys.stdin:
        if stop.is_set():
            return
        learned = svc.tap()
        n += 1
        if learned is None:
            print(f"tap {n}: learning ({len(svc.timing.calibrator.errors)} taps on the beat)", file=sys.stderr)
        else:
            print(f"tap {n}: offset {learned * 1000:+.0f} ms (keep it with --offset-ms {learned * 1000:.0f})",
                  file=sys.stderr)


def serve_preview_dashboard(bus, settings, devices):
    """``beatbus run --led web://NAME``: serve the dashboard in this process (``run``'s broker is
    private, so no ``beatbus api`` could show it) and print its URL. None when no device is web://."""
    from urllib.parse import quote

    names = [d.name for d in devices if d.spec.scheme == "web"]
    if not names:
        return None
    from beatbus.api.app import create_app
    from beatbus.api.server import ApiServer

    app = create_app(bus, settings)
    try:
        server = ApiServer(app, port=DASHBOARD_PORT).start()
    except ConfigError:
        server = ApiServer(app, port=0).start()
    print(f"beatbus: LED preview of {', '.join(names)} in the dashboard: {server.url}/?led={quote(names[0])}",
          file=sys.stderr, flush=True)
    return server


def cmd_find_leds(args: argparse.Namespace) -> int:
    """``beatbus devices --leds``: the WLED controllers that answer mDNS within ``--timeout`` s."""
    from .discover import discover

    found = discover(args.timeout)
    if not found:
        print(f"no WLED device answered within {args.timeout:g} s (same network? mDNS (UDP 5353) let through? "
              "a longer --timeout?)")
        return 0
    rows = [(d.name, d.output, d.host,
             ", ".join(filter(None, [" ".join(d.addresses[1:]), f"port {d.port}", f"mac {d.mac}" if d.mac else ""])))
            for d in found]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip())
    print("add one: beatbus consume led --output 'URL?pixels=N', or 'find WLED' in the dashboard's Lights panel")
    return 0


def _add_leds_option(commands: dict) -> None:
    """``beatbus devices`` (the producers' audio inputs) gains ``--leds``: this stage's devices."""
    from .discover import DEFAULT_TIMEOUT_S

    d = commands["top"].choices.get("devices")
    if d is None:
        return
    d.add_argument("--leds", action="store_true",
                   help="list the WLED controllers on the network (mDNS _wled._tcp) instead, with their ddp:// URLs "
                        "(needs the optional extra: pip install 'beatbus[wled]')")
    d.add_argument("--timeout", type=float, metavar="S",
                   help=f"with --leds: how long to listen for answers (default {DEFAULT_TIMEOUT_S:g} s)")
    audio = d.get_default("func")

    def cmd_devices(args: argparse.Namespace) -> int:
        if not args.leds:
            if args.timeout is not None:
                raise ConfigError("--timeout applies to --leds (WLED discovery)")
            return audio(args)
        if args.timeout is None:
            args.timeout = DEFAULT_TIMEOUT_S
        return cmd_find_leds(args)

    d.set_defaults(func=cmd_devices)


def cmd_consume_led(args: argparse.Namespace) -> int:
    from beatbus.commands import connect
    from beatbus.runtime import run_services

    from .service import LedService, plan_led
    from .setup import SetupStore, setup_path

    if args.list_effects:
        return _list_effects()
    settings, led_toml = _settings(args)
    plan = plan_led(settings, outputs=args.output or (), effect=args.effect, pixels=args.pixels, fps=args.fps,
                    offset_ms=args.offset_ms, output_latency_ms=args.output_latency_ms, source=args.source,
                    effect_config=parse_params(args.param), config=led_toml, check=args.check, name=args.name,
                    store=SetupStore(setup_path(args.name)))
    if not plan.devices:
        print(f"beatbus: LED consumer {args.name}: no LED devices yet: add them in the dashboard's Lights panel "
              "(beatbus api) or give --output URL", file=sys.stderr, flush=True)
    with connect(settings, embedded_ok=False) as bus:
        svc = LedService(bus, settings=settings, plan=plan, exit_on_end=args.exit_on_end)
        stop = threading.Event()
        if args.calibrate:
            threading.Thread(target=_read_taps, args=(svc, stop), daemon=True).start()
        try:
            return run_services([svc], metrics_addr=settings.metrics_addr)
        finally:
            stop.set()
            if args.calibrate and svc.timing.calibrator.offset_s is not None:
                print(f"learned offset: {svc.timing.offset_s * 1000:+.0f} ms "
                      f"(use --offset-ms {svc.timing.offset_s * 1000:.0f})", file=sys.stderr)


def register(commands: dict) -> None:
    """Add ``consume led`` to the ``beatbus`` parser."""
    from beatbus.commands import add_common_options, subcommands

    from .service import CHECK_MODES, DEFAULT_CONSUMER

    p = subcommands(commands, "consume", "consumer daemons").add_parser(
        "led", help="drive LED strips on the beat (DDP, sACN, Art-Net, OPC, WLED UDP, terminal, web)",
        description="Render beat-synced effects to LED devices. Output URLs: ddp://HOST[:PORT], "
                    "sacn://HOST?universe=1, artnet://HOST?universe=0, opc://HOST:7890, "
                    "wled://HOST:21324?mode=drgb|dnrgb, terminal://, web://NAME, ws://127.0.0.1:8765. "
                    "A URL may carry pixels, fps, brightness, reverse, output_latency_ms, effect, name. "
                    "Devices and effects changed in the dashboard are saved (STATE_DIR/led/NAME.json) and "
                    "reloaded at start; the flags and TOML are the seed used while nothing is saved "
                    "(or when they name other devices than the saved setup was seeded from).")
    p.add_argument("--output", action="append", metavar="URL",
                   help="an LED output (repeatable); with the TOML devices, the seed of the saved setup")
    p.add_argument("--name", default=DEFAULT_CONSUMER, metavar="NAME",
                   help="this consumer's name: the dashboard's setup commands name it, and its setup is saved "
                        "in STATE_DIR/led/NAME.json (default led; give each LED consumer of a broker its own)")
    p.add_argument("--pixels", type=int, help="pixels per device unless its URL or config says (default 60)")
    p.add_argument("--effect", help="effect name (see --list-effects; default beat_flash)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="effect parameter (repeatable)")
    p.add_argument("--fps", type=float, help="frames per second, 1-200 (default 60; terminal/web 30)")
    p.add_argument("--offset-ms", dest="offset_ms", type=float,
                   help="shift every flash by hand: positive = later (default 0)")
    p.add_argument("--output-latency-ms", dest="output_latency_ms", type=float,
                   help="output latency (send -> light) compensated for every device (default 0; "
                        "a URL's output_latency_ms wins)")
    add_deprecated_option(p, "--latency-ms", "--output-latency-ms", type=float)
    p.add_argument("--calibrate", action="store_true",
                   help="tap Enter on each beat you hear: the offset is learned from the taps")
    p.add_argument("--exit-on-end", action="store_true", help="exit when the source's stream ends")
    p.add_argument("--check", choices=CHECK_MODES, default="warn",
                   help="at start, check that output hosts resolve and are reachable: warn (default: log it and "
                        "keep retrying, for controllers that boot late), strict (exit 2), off")
    p.add_argument("--no-check", dest="check", action="store_const", const="off", help="same as --check off")
    p.add_argument("--list-effects", action="store_true", help="list effects and their parameters")
    add_common_options(p)
    p.set_defaults(func=cmd_consume_led)
    _add_leds_option(commands)
