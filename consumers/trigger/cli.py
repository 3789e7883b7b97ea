"""Commands: ``beatbus consume trigger``, ``beatbus dev error-generator``, ``beatbus bench trigger``."""
from __future__ import annotations

import argparse
import sys

from beatbus.cli import add_common_options, cli_settings, connect, subcommands
from beatbus.deprecation import add_deprecated_option

from .config import DESCRIPTIONS, URL_ENV, URL_FLAG

__all__ = ["register"]


def cmd_consume_trigger(args: argparse.Namespace) -> int:
    from beatbus.runtime import run_services

    from .config import load_trigger_config
    from .service import TriggerService

    settings = cli_settings(args)
    config = load_trigger_config({"error_generator_url": args.error_generator_url, "timeout": args.timeout,
                                  "max_age": args.max_age, "retries": args.retries,
                                  "concurrency": args.concurrency, "group": args.group}, config_file=args.config)
    config.endpoint  # noqa: B018  (a missing URL is a one-line error before connecting)
    with connect(settings, embedded_ok=False) as bus:
        svc = TriggerService(bus, settings=settings, config=config, sources=args.sources or None)
        print(f"beatbus: triggers -> {config.endpoint}", file=sys.stderr)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def cmd_error_generator(args: argparse.Namespace) -> int:
    import signal
    import threading

    from beatbus.log import setup_logging

    from .receiver import ReferenceReceiver

    setup_logging("info")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with ReferenceReceiver(args.host, args.port) as rx:
        print(f"{URL_ENV}={rx.url}  (reference receiver: a test double of the error generator)", flush=True)
        stop.wait()
    return 0


def cmd_bench_trigger(args: argparse.Namespace) -> int:
    from beatbus.log import setup_logging

    from .bench import bench_trigger

    setup_logging("warning")
    return bench_trigger(sources=args.sources, rate=args.rate, duration=args.duration, json_path=args.json)


def register(commands: dict) -> None:
    c = commands["consume"].add_parser("trigger", help="POST error-generator triggers on beats (daemon)")
    c.add_argument(URL_FLAG, dest="error_generator_url", metavar="URL", help=DESCRIPTIONS["error_generator_url"])
    add_deprecated_option(c, "--url", URL_FLAG)
    c.add_argument("--sources", nargs="*", help="sources to serve (default: every live source)")
    c.add_argument("--timeout", type=float, help=DESCRIPTIONS["timeout"])
    c.add_argument("--max-age", dest="max_age", type=float, help=DESCRIPTIONS["max_age"])
    c.add_argument("--retries", type=int, help=DESCRIPTIONS["retries"])
    c.add_argument("--concurrency", type=int, help=DESCRIPTIONS["concurrency"])
    c.add_argument("--group", help=DESCRIPTIONS["group"])
    add_common_options(c)
    c.set_defaults(func=cmd_consume_trigger)

    dev = subcommands(commands, "dev", "development helpers and test doubles")
    eg = dev.add_parser("error-generator",
                        help="reference receiver: a test double of the error-generator service")
    eg.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    eg.add_argument("--port", type=int, default=9090)
    eg.set_defaults(func=cmd_error_generator)

    bench = subcommands(commands, "bench", "benchmarks")
    bt = bench.add_parser("trigger", help="beat emission -> trigger arrival latency on loopback")
    bt.add_argument("--sources", type=int, default=10, help="sources publishing beats")
    bt.add_argument("--rate", type=float, default=4.0, help="beats/s per source")
    bt.add_argument("--duration", type=float, default=15.0, help="seconds of beats")
    bt.add_argument("--json", help="also write results to this file")
    bt.set_defaults(func=cmd_bench_trigger)
