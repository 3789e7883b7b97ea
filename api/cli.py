"""``beatbus api``: the HTTP API, WebSocket feed and dashboard."""
from __future__ import annotations

import argparse
import sys

from beatbus.cli import add_common_options, cli_settings, connect
from beatbus.log import get_logger

__all__ = ["register"]

log = get_logger("api")


def _generation_router(bus, config_file):
    """Generation's routes when that stage is installed (else None, said once in the log)."""
    try:
        from consumers.generate.api import build_router
        from consumers.generate.config import load_generate_config
    except ImportError as exc:
        log.info("generation routes not mounted", extra={"reason": str(exc)})
        return None
    from .deps import require

    return build_router(bus, load_generate_config({}, config_file=config_file),
                        read_dependencies=[require("read")], write_dependencies=[require("generate")])


def cmd_api(args: argparse.Namespace) -> int:
    from consumers.trigger import load_trigger_config

    from .app import ApiLimits, create_app
    from .server import bind, serve

    settings = cli_settings(args)
    trigger = load_trigger_config({"url": args.trigger_url}, config_file=args.config)
    limits = ApiLimits(**{k: v for k, v in (("body_bytes", args.max_body), ("upload_bytes", args.max_upload))
                          if v is not None})
    with connect(settings, embedded_ok=False) as bus:
        routers = [] if args.no_generate else [r for r in [_generation_router(bus, args.config)] if r]
        app = create_app(bus, settings, trigger=trigger, limits=limits, routers=routers)
        sock = bind(args.host, args.port)
        print(f"beatbus: API and dashboard on http://{args.host}:{sock.getsockname()[1]}/ (OpenAPI at /docs); "
              f"triggers -> {trigger.url or 'not configured'}", file=sys.stderr, flush=True)
        return serve(app, host=args.host, port=args.port, log_level=settings.log_level, sock=sock)


def register(commands: dict) -> None:
    p = commands["top"].add_parser("api", help="HTTP API, WebSocket events and the live dashboard")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--trigger-url", dest="trigger_url",
                   help="error generator base URL for rhythm mode and manual triggers (also ERROR_GENERATOR_URL)")
    p.add_argument("--max-body", dest="max_body", type=int, help="largest JSON request body (bytes)")
    p.add_argument("--max-upload", dest="max_upload", type=int, help="largest audio upload (bytes)")
    p.add_argument("--no-generate", dest="no_generate", action="store_true",
                   help="do not mount the generation routes (/api/upload, /api/generate, ...)")
    add_common_options(p)
    p.set_defaults(func=cmd_api)
