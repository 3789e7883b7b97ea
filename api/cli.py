"""``beatbus api``: the HTTP API, WebSocket feed and dashboard."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

from beatbus.commands import add_common_options, cli_settings, connect
from beatbus.config import redact_url, stage_table
from beatbus.deprecation import add_deprecated_option
from beatbus.errors import ConfigError
from beatbus.log import get_logger

__all__ = ["register"]

log = get_logger("api")


def _generation_router(bus, config_file, settings):
    """Generation's routes when that stage is installed (else None, said once in the log)."""
    try:
        from beatbus.consumers.generate.api import build_router
        from beatbus.consumers.generate.config import load_generate_config
    except ImportError as exc:
        log.info("generation routes not mounted", extra={"reason": str(exc)})
        return None
    from .deps import require

    return build_router(bus, load_generate_config({}, config_file=config_file), settings=settings,
                        read_dependencies=[require("read")], write_dependencies=[require("generate")])


_API_TABLE = {"keys_file", "rates", "cors_origins"}


def _api_table(args: argparse.Namespace) -> dict:
    """The config file's ``[api]`` table: ``keys_file``, ``rates = {trigger = "2/5"}``, ``cors_origins``."""
    path = args.config or os.environ.get("BEATBUS_CONFIG")
    table = stage_table(path, "api") if path else {}
    unknown = set(table) - _API_TABLE
    if unknown:
        raise ConfigError(f"config [api]: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(_API_TABLE))}")
    return table


def _guard(args: argparse.Namespace, table: dict):
    """Keys and rate limits: defaults < [api] table < env (BEATBUS_API_*) < flags."""
    from .auth import KeyStore
    from .deps import Guard
    from .ratelimit import TokenBuckets, parse_rates

    env = dict(os.environ)
    if table.get("keys_file") and not env.get("BEATBUS_API_KEYS_FILE"):
        env["BEATBUS_API_KEYS_FILE"] = str(table["keys_file"])
    rates = parse_rates([f"{k}={v}" for k, v in dict(table.get("rates", {})).items()])
    rates = parse_rates(env.get("BEATBUS_API_RATES", ""), rates)
    return Guard(store=KeyStore.from_env(env), buckets=TokenBuckets(parse_rates(args.rate or [], rates)))


def cmd_api(args: argparse.Namespace) -> int:
    from beatbus.consumers.trigger import load_trigger_config

    from .app import ApiLimits, create_app
    from .server import bind, check_exposure, serve

    settings = cli_settings(args)
    trigger = load_trigger_config({"error_generator_url": args.error_generator_url}, config_file=args.config)
    limits = ApiLimits(**{k: v for k, v in (("body_bytes", args.max_body), ("upload_bytes", args.max_upload))
                          if v is not None})
    table = _api_table(args)
    guard = _guard(args, table)
    origins = (args.cors_origin or [o for o in os.environ.get("BEATBUS_API_CORS_ORIGINS", "").split(",") if o]
               or list(table.get("cors_origins", [])))
    keyed = check_exposure(guard, args.host)          # before anything else: no keys -> loopback only
    with connect(settings, embedded_ok=False) as bus:
        routers = [] if args.no_generate else [r for r in [_generation_router(bus, args.config, settings)] if r]
        app = create_app(bus, settings, trigger=trigger, limits=limits, routers=routers, guard=guard,
                         cors_origins=origins)
        sock = bind(args.host, args.port)
        auth = (f"API keys required ({_key_sources(guard.store)})" if keyed else
                f"no API keys in {guard.store.path}: open to this machine only (127.0.0.1)")
        print(f"beatbus: API and dashboard on http://{args.host}:{sock.getsockname()[1]}/ (OpenAPI at /docs); "
              f"triggers -> {redact_url(trigger.url) if trigger.url else 'not configured'}; {auth}",
              file=sys.stderr, flush=True)
        return serve(app, host=args.host, port=args.port, log_level=settings.log_level, sock=sock)


def _key_sources(store) -> str:
    """``2 in /path/api-keys.json, 1 from BEATBUS_API_KEYS``: where the keys that open the API come from."""
    keys = store.keys()
    n_file = sum(k.origin == "file" for k in keys)
    parts = [f"{n_file} in {store.path}"] if n_file else []
    if len(keys) > n_file:
        parts.append(f"{len(keys) - n_file} from BEATBUS_API_KEYS")
    return ", ".join(parts)


def _store(args: argparse.Namespace):
    from .auth import KeyStore

    env = dict(os.environ)
    if args.keys_file:
        env["BEATBUS_API_KEYS_FILE"] = args.keys_file
    return KeyStore.from_env(env)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from .auth import new_token

    scopes = [s for arg in args.scope for s in arg.split(",") if s]
    if args.env:
        # Nothing stored: print the BEATBUS_API_KEYS entry (digest only) and the token.
        from .auth import KEY_ID, check_scopes
        scopes = check_scopes(scopes)
        if args.name and not re.fullmatch(KEY_ID, args.name):
            raise ConfigError(f"--name {args.name!r}: with --env the name is the key id: 1-32 letters or digits")
        key_id, token, digest = new_token(args.name or None)
        print(f"add to BEATBUS_API_KEYS: {key_id}:{','.join(scopes)}:{digest}", file=sys.stderr)
        print(token)
        return 0
    store = _store(args)
    key, token = store.create(scopes, name=args.name or "")
    print(f"created API key {key.id} ({','.join(key.scopes)}) in {store.path}; it is shown only once:",
          file=sys.stderr)
    print(token)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = [k.public() for k in _store(args).keys()]
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    print(f"{'ID':10} {'SCOPES':28} {'ORIGIN':6} {'CREATED':20} NAME")
    for k in keys:
        print(f"{k['id']:10} {','.join(k['scopes']):28} {k['origin']:6} {k['created']:20} {k['name']}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    key = _store(args).revoke(args.id)
    print(f"revoked API key {key.id} ({key.name or 'no name'})")
    return 0


def _register_keys(api_parser: argparse.ArgumentParser) -> None:
    from .auth import SCOPES

    sub = api_parser.add_subparsers(dest="api_command", metavar="{keys}")
    keys = sub.add_parser("keys", help="manage API keys (bearer tokens with scopes)").add_subparsers(
        dest="keys_command", metavar="{create,list,revoke}", required=True)
    file_opt = argparse.ArgumentParser(add_help=False)
    file_opt.add_argument("--keys-file", dest="keys_file",
                          help="keys file (default: BEATBUS_API_KEYS_FILE, else api-keys.json in the state dir)")
    c = keys.add_parser("create", parents=[file_opt], help="create a key; prints it alone on the last line")
    c.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                   help=f"scope(s) of the key: {', '.join(SCOPES)} (repeat or comma-separate)")
    c.add_argument("--name", help="a label for lists")
    c.add_argument("--env", action="store_true",
                   help="store nothing: print a BEATBUS_API_KEYS entry (digest) on stderr and the key")
    c.set_defaults(func=cmd_keys_create)
    ls = keys.add_parser("list", parents=[file_opt], help="list keys (ids, scopes, names; never secrets)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_keys_list)
    rv = keys.add_parser("revoke", parents=[file_opt], help="revoke a key by id (takes effect at once)")
    rv.add_argument("id")
    rv.set_defaults(func=cmd_keys_revoke)


def register(commands: dict) -> None:
    p = commands["top"].add_parser("api", help="HTTP API, WebSocket events and the live dashboard")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: a free one, printed at start)")
    p.add_argument("--error-generator-url", dest="error_generator_url", metavar="URL",
                   help="error generator base URL for rhythm mode and manual triggers "
                        "(also BEATBUS_ERROR_GENERATOR_URL)")
    add_deprecated_option(p, "--trigger-url", "--error-generator-url")
    p.add_argument("--max-body", dest="max_body", type=int, help="largest JSON request body (bytes)")
    p.add_argument("--max-upload", dest="max_upload", type=int, help="largest audio upload (bytes)")
    p.add_argument("--no-generate", dest="no_generate", action="store_true",
                   help="do not mount the generation routes (/api/upload, /api/generate, ...)")
    p.add_argument("--rate", action="append", metavar="SCOPE=PER_S/BURST",
                   help="rate limit per key and route (repeatable; also BEATBUS_API_RATES), e.g. trigger=2/5")
    p.add_argument("--cors-origin", dest="cors_origin", action="append", metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable; also BEATBUS_API_CORS_ORIGINS); "
                        "default: none")
    add_common_options(p, rq=True)
    p.set_defaults(func=cmd_api)
    _register_keys(p)
