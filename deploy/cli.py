"""Commands: ``beatbus deploy install|verify``, ``beatbus exporter``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath

from beatbus.commands import add_common_options, cli_settings, connect, subcommands

from . import units
from .units import DAEMONS, DEFAULT_CONFIG_DIR, DEFAULT_UNIT_DIR

__all__ = ["register", "cmd_install", "cmd_verify", "cmd_exporter"]


def _staged(prefix: str, path: str) -> Path:
    return Path(prefix) / path.lstrip("/")


def _redacted(text: str) -> str:
    """``text`` with the password of every ``REDIS_URL=`` line hidden (dry runs print env files)."""
    from beatbus.config import redact_url

    return "".join(f"REDIS_URL={redact_url(line[10:].strip())}\n" if line.startswith("REDIS_URL=") else line
                   for line in text.splitlines(keepends=True))


def cmd_install(args: argparse.Namespace) -> int:
    from beatbus.log import setup_logging

    setup_logging("warning")
    beatbus = Path(args.exec_path) if args.exec_path else units.beatbus_executable()
    instances = units.plan_instances(producers=args.producer or (), processors=args.processors,
                                     intensity=args.intensity, structure=args.structure, harmony=args.harmony,
                                     workers=args.workers,
                                     leds=args.led or (), clocks=args.clock or (), trigger=args.trigger,
                                     generate=args.generate,
                                     api=args.api, exporter=not args.no_exporter)
    plan = units.plan_install(beatbus=str(beatbus), unit_dir=args.unit_dir, config_dir=args.config_dir,
                              env_file=args.env_file, user=args.user, metrics_host=args.metrics_host,
                              redis_url=args.redis_url, rq_url=args.rq_url,
                              error_generator_url=args.error_generator_url,
                              instances=instances)
    from .reach import chain_problems

    unit = next(f for f in plan.files if f.path.name == DAEMONS["processor"].template)
    for problem in chain_problems(str(beatbus), unit.content):   # as the service user, in its sandbox
        plan.warnings.append(f"{problem}: the units cannot start; install the virtual environment (and "
                             f"its Python) under /opt or /srv, or pass --user NAME")
    if args.dry_run:
        for f in plan.files:
            print(f"# --- {_staged(args.prefix, str(f.path))} (mode {f.mode:04o}"
                  f"{', kept if present' if f.keep_existing else ''})")
            print(_redacted(f.content), end="")
        print(f"# dry run: nothing written. Then: {plan.enable_command()}")
    else:
        for path, what in units.write_plan(plan, prefix=args.prefix, force=args.force):
            print(f"{what:7s} {path}")
        print(f"next: {plan.enable_command()}")
        print(f"      check with: {beatbus} deploy verify"
              + (f" --prefix {args.prefix}" if args.prefix != "/" else ""))
    for w in plan.warnings:
        print(f"beatbus: warning: {w}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from beatbus.log import setup_logging

    from .verify import check_units, format_report

    setup_logging("warning")
    unit_dir = _staged(args.prefix, args.unit_dir)
    config_dir = _staged(args.prefix, args.config_dir)
    results = check_units(unit_dir, config_dir=config_dir, prefix=args.prefix)
    print(format_report(results))
    failed = [r for r in results if not r.ok]
    worse = [r for r in results if args.threshold is not None and r.exposure is not None
             and r.exposure > args.threshold]
    for r in failed:
        print(f"beatbus: {r.unit}: " + "; ".join(r.problems), file=sys.stderr)
    for r in worse:
        print(f"beatbus: {r.unit}: exposure {r.exposure:.1f} above --threshold {args.threshold:g}", file=sys.stderr)
    return 1 if failed or worse else 0


def cmd_exporter(args: argparse.Namespace) -> int:
    from beatbus.runtime import run_services

    from .exporter import ExporterService, default_queues

    settings = cli_settings(args)
    queues = args.queue if args.queue is not None else default_queues(args.config)
    with connect(settings, embedded_ok=False) as bus:
        svc = ExporterService(bus, settings=settings, queues=queues, max_age=args.max_age)
        svc.setup()         # the collectors exist before /metrics is served: a first scrape has them
        print(f"beatbus: exporter for rq queues {', '.join(queues) or '(none)'} and every live source",
              file=sys.stderr)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def _check_abs(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise argparse.ArgumentTypeError(f"{value!r} must be an absolute path")
    return value


def register(commands: dict) -> None:
    dep = subcommands(commands, "deploy", "install as systemd services; check the units")
    i = dep.add_parser("install", help="write systemd units, environment files and Prometheus targets",
                       description="Write the unit of every daemon (ExecStart: this virtual environment's "
                                   "beatbus), the shared environment file (mode 0600), one environment file per "
                                   "instance and the Prometheus file_sd targets file.")
    i.add_argument("--prefix", default="/", help="stage every file under this directory (like DESTDIR); "
                                                  "paths inside the units stay the target system's")
    i.add_argument("--unit-dir", dest="unit_dir", type=_check_abs, default=DEFAULT_UNIT_DIR)
    i.add_argument("--config-dir", dest="config_dir", type=_check_abs, default=DEFAULT_CONFIG_DIR,
                   help="per-instance environment files and the scrape targets")
    i.add_argument("--env-file", dest="env_file", type=_check_abs,
                   help="the shared environment file (default CONFIG_DIR/beatbus.env); kept if present")
    i.add_argument("--user", help="run as this existing user (NAME or NAME:GROUP) instead of a dynamic one")
    i.add_argument("--exec", dest="exec_path", type=_check_abs, help="beatbus executable (default: this venv's)")
    i.add_argument("--redis-url", dest="redis_url", help="REDIS_URL written into a new environment file "
                                                         "(redis+cluster://HOST:PORT for a Redis Cluster)")
    i.add_argument("--rq-url", dest="rq_url", help="BEATBUS_RQ_URL likewise: the plain Redis of the generation "
                                                   "jobs, needed with a cluster --redis-url and worker/generate units")
    i.add_argument("--error-generator-url", dest="error_generator_url", help="BEATBUS_ERROR_GENERATOR_URL likewise")
    i.add_argument("--metrics-host", dest="metrics_host", default="127.0.0.1",
                   help="address every daemon serves /metrics on (default 127.0.0.1)")
    i.add_argument("--producer", action="append", metavar="SOURCE=ARGS",
                   help="a producer instance, e.g. 'stage=mic --mic-device 2' or 'bar=file /srv/a.flac --loop'")
    i.add_argument("--processors", type=int, default=1, help="beat processor instances (default 1)")
    i.add_argument("--intensity", type=int, default=0, help="intensity processor instances")
    i.add_argument("--structure", type=int, default=0, help="structure processor instances")
    i.add_argument("--harmony", type=int, default=0, help="harmony (key and chords) processor instances")
    i.add_argument("--workers", type=int, default=0, help="rq generation workers")
    i.add_argument("--led", action="append", metavar="NAME=ARGS",
                   help="an LED consumer, e.g. 'strip=--output ddp://10.0.0.20 --source stage'")
    i.add_argument("--clock", action="append", metavar="SOURCE=ARGS",
                   help="a beat clock of a source, e.g. 'stage=--osc 10.0.0.7:9000 --midi beatbus'")
    i.add_argument("--trigger", action="store_true", help="configure the trigger consumer")
    i.add_argument("--generate", action="store_true", help="configure the generation consumer")
    i.add_argument("--api", action="store_true", help="configure the HTTP API")
    i.add_argument("--no-exporter", dest="no_exporter", action="store_true",
                   help="do not configure the exporter (rq queues, stream lag)")
    i.add_argument("--force", action="store_true", help="also overwrite an existing shared environment file")
    i.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the files instead of writing")
    i.set_defaults(func=cmd_install)

    v = dep.add_parser("verify", help="systemd-analyze verify and security on the installed units",
                       description="Run systemd-analyze verify and security (offline) on every beatbus unit and "
                                   "parse each configured instance's command line; exit 1 on any problem.")
    v.add_argument("--prefix", default="/")
    v.add_argument("--unit-dir", dest="unit_dir", type=_check_abs, default=DEFAULT_UNIT_DIR)
    v.add_argument("--config-dir", dest="config_dir", type=_check_abs, default=DEFAULT_CONFIG_DIR)
    v.add_argument("--threshold", type=float, help="also fail when a unit's exposure is above this (0-10)")
    v.set_defaults(func=cmd_verify)

    e = commands["top"].add_parser("exporter", help="Prometheus exporter: rq queues, stream lag, dead letters "
                                                    "(daemon)")
    e.add_argument("--queue", action="append", help="rq queue to report (repeatable; default the generation "
                                                     "queue)")
    e.add_argument("--max-age", dest="max_age", type=float,
                   help="seconds since a producer heartbeat for a source to count as live")
    add_common_options(e, rq=True)
    e.set_defaults(func=cmd_exporter)
