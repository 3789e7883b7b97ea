"""Configuration of the trigger consumer: delivery knobs plus the pattern maps.

Precedence (later wins), as for :func:`beatbus.config.load_settings`: built-in defaults <
the ``[trigger]`` table of the TOML file (``--config`` / ``BEATBUS_CONFIG``) < environment
(``BEATBUS_ERROR_GENERATOR_URL``, ``BEATBUS_TRIGGER_<KEY>``) < command-line flags
(``--error-generator-url``). The error generator's URL has that one name everywhere; the old
spellings (``ERROR_GENERATOR_URL``, ``BEATBUS_TRIGGER_URL``, the key ``url``) still work and say
the new name once.

Example TOML (core keys go under ``[beatbus]`` when a file has other tables)::

    [beatbus]
    source = "stage"

    [trigger]
    error_generator_url = "http://127.0.0.1:9090"
    max_age = 0.3

    [trigger.sections]
    chorus = "chaotic"

    [trigger.patterns.chaotic]
    on = "beat"
    burst_min = 3
    burst_max = 6
"""
from __future__ import annotations

import os
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from beatbus import keys
from beatbus.config import layered
from beatbus.deprecation import deprecated
from beatbus.errors import ConfigError

from .patterns import DEFAULT_PATTERNS, DEFAULT_SECTIONS, PatternBook, Rule

__all__ = ["TriggerConfig", "load_trigger_config", "check_url", "DESCRIPTIONS", "URL_ENV", "URL_FLAG"]

M = msgspec.Meta
URL_ENV = "BEATBUS_ERROR_GENERATOR_URL"
URL_FLAG = "--error-generator-url"
_OLD_URL_ENVS = ("ERROR_GENERATOR_URL", "BEATBUS_TRIGGER_URL")   # deprecated spellings of URL_ENV


class TriggerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    error_generator_url: str | None = None
    path: Annotated[str, M(pattern=r"^/[A-Za-z0-9_./-]*$")] = "/api/rhythm-trigger"
    timeout: Annotated[float, M(gt=0.0, le=30.0)] = 0.5
    max_age: Annotated[float, M(gt=0.0, le=3600.0)] = 0.5
    retries: Annotated[int, M(ge=0, le=10)] = 3
    backoff_base: Annotated[float, M(ge=0.0, le=5.0)] = 0.02
    backoff_cap: Annotated[float, M(ge=0.0, le=30.0)] = 0.2
    concurrency: Annotated[int, M(ge=1, le=1024)] = 32
    max_pending: Annotated[int, M(ge=1, le=100000)] = 1000
    breaker_failures: Annotated[int, M(ge=1, le=1000)] = 5
    breaker_reset: Annotated[float, M(ge=0.05, le=600.0)] = 2.0
    dedup_ttl: Annotated[float, M(ge=1.0, le=7 * 86400.0)] = 3600.0
    group: Annotated[str, M(pattern=keys.NAME_PATTERN)] = "trigger"
    sections: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_SECTIONS))
    patterns: dict[str, Rule] = msgspec.field(default_factory=lambda: dict(DEFAULT_PATTERNS))

    @property
    def url(self) -> str | None:
        """Short for :attr:`error_generator_url`."""
        return self.error_generator_url

    @property
    def endpoint(self) -> str:
        """Full URL triggers are POSTed to (``error_generator_url`` + ``path``)."""
        if not self.url:
            raise ConfigError(f"no error generator URL: pass {URL_FLAG} or set {URL_ENV}")
        return self.url.rstrip("/") + self.path

    def book(self) -> PatternBook:
        return PatternBook(self.patterns, self.sections)


DESCRIPTIONS: dict[str, str] = {
    "error_generator_url": f"Base URL of the error generator (also {URL_ENV}); triggers go to URL + path.",
    "path": "Path of the trigger endpoint.",
    "timeout": "Seconds one POST may take (connect, write, read) before it counts as failed.",
    "max_age": "Seconds after its due time a trigger is dropped as stale (a late trigger is off-beat).",
    "retries": "Retries after a 5xx or connection error (4xx is never retried).",
    "backoff_base": "First retry delay bound (s); doubles per retry, full jitter.",
    "backoff_cap": "Largest retry delay bound (s).",
    "concurrency": "POSTs in flight at once (also the connection pool size).",
    "max_pending": "Triggers queued for delivery before new ones are dropped (outcome overflow).",
    "breaker_failures": "Consecutive failed attempts that open the circuit breaker.",
    "breaker_reset": "Seconds the circuit stays open before one probe request is let through.",
    "dedup_ttl": "Seconds an idempotency key is remembered in Redis (redelivery dedup).",
    "group": "Consumer group name on the beat streams.",
    "sections": "Section label -> pattern (error_type) map.",
    "patterns": "Pattern -> firing rule (on, every, burst_min, burst_max, accent, spread).",
}


def check_url(url: str | None) -> None:
    """Raise ConfigError unless ``url`` is an http(s) URL with a host (None passes)."""
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"error generator URL {url!r} must be an http:// or https:// URL with a host")


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (URL_ENV, *_OLD_URL_ENVS):
        if env.get(name):
            if name != URL_ENV:
                deprecated(name, URL_ENV)
            out["error_generator_url"] = env[name]
            break
    for key in TriggerConfig.__struct_fields__:
        if key in ("sections", "patterns", "error_generator_url"):
            continue
        val = env.get(f"BEATBUS_TRIGGER_{key.upper()}")
        if val:
            out[key] = val
    return out


def load_trigger_config(flags: dict[str, Any] | None = None, *, config_file: str | os.PathLike | None = None,
                        env: dict[str, str] | None = None) -> TriggerConfig:
    """Merge defaults, the TOML ``[trigger]`` table, env and flags; validate loudly.

    ``sections`` and ``patterns`` from the file are merged over the defaults, so a file
    may redefine one pattern or remap one section only.

    Raises
    ------
    ConfigError
        Naming the key and the problem.
    """
    env = dict(os.environ) if env is None else env
    flags = dict(flags or {})
    if "url" in flags:              # Python callers' short name (the CLI says --error-generator-url)
        url = flags.pop("url")
        flags["error_generator_url"] = flags.get("error_generator_url") or url
    merged = layered(TriggerConfig.__struct_fields__, table="trigger", from_env=_from_env, flags=flags,
                     config_file=config_file, env=env)
    if "url" in merged:             # only the TOML table's old key can put it there
        deprecated("[trigger] url", "[trigger] error_generator_url")
        merged.setdefault("error_generator_url", merged.pop("url"))
    merged["sections"] = {**DEFAULT_SECTIONS, **(merged.get("sections") or {})}
    patterns = {k: msgspec.structs.asdict(v) for k, v in DEFAULT_PATTERNS.items()}
    patterns.update(merged.get("patterns") or {})
    merged["patterns"] = patterns
    try:
        cfg = msgspec.convert(merged, TriggerConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid trigger configuration: {exc}") from None
    check_url(cfg.url)
    cfg.book()  # cross-checks the two maps (raises ConfigError)
    return cfg
