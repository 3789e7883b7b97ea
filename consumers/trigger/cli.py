"""Command: ``beatbus consume trigger``."""
from __future__ import annotations

import argparse
import sys

from beatbus.commands import add_common_options, cli_settings, connect, subcommands
from beatbus.deprecation import add_deprecated_option

from .config import DESCRIPTIONS, URL_FLAG

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


def register(commands: dict) -> None:
    c = subcommands(commands, "consume", "consumer daemons").add_parser(
        "trigger", help="POST error-generator triggers on beats (daemon)")
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
