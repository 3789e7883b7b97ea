"""One configuration loader for every daemon.

Precedence (later wins): built-in defaults < TOML file < environment < command-line flags.

- TOML file: ``--config PATH`` or ``BEATBUS_CONFIG``; flat keys, e.g. ``backend = "dsp"``,
  or a ``[beatbus]`` table; other tables (``[led]``, ``[trigger]``...) belong to their stages.
- Environment: ``BEATBUS_<KEY>`` (e.g. ``BEATBUS_METRICS_ADDR``), plus ``REDIS_URL``.
- Flags: each command's options; ``None`` means "not given".

Every key has a default, a description and a range (``FIELDS``); unknown keys and values
out of range are rejected loudly with the key named.
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from . import keys
from .errors import ConfigError

__all__ = ["Settings", "load_settings", "layered", "read_toml", "stage_table", "DESCRIPTIONS", "redact_url"]

M = msgspec.Meta


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    redis_url: str | None = None
    rq_url: str | None = None
    source: Annotated[str, M(pattern=keys.NAME_PATTERN)] = "default"
    # 'auto', 'off' or HOST:PORT, checked here so a bad value stops a command before it prints anything
    metrics_addr: Annotated[str, M(pattern=r"^(?:[Aa][Uu][Tt][Oo]|[Oo][Ff][Ff]|\S*:\d{1,5})$")] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    sr: Annotated[int, M(ge=8000, le=96000)] = 22050
    hop: Annotated[int, M(ge=32, le=1920)] = 441
    maxlen_audio: Annotated[int, M(ge=100)] = 3000
    maxlen_events: Annotated[int, M(ge=100)] = 10000
    block_ms: Annotated[int, M(ge=10, le=1000)] = 500
    lease_ttl: Annotated[float, M(ge=0.5, le=300)] = 5.0
    heartbeat: Annotated[float, M(ge=0.1, le=60)] = 1.0
    max_deliveries: Annotated[int, M(ge=1, le=100)] = 5
    claim_idle_ms: Annotated[int, M(ge=100)] = 30000
    buffer_seconds: Annotated[float, M(ge=0, le=600)] = 10.0
    # a name in the beat-backend registry (plug-ins add names): checked when a processor is built
    backend: Annotated[str, M(pattern=r"^[a-z0-9_]{1,32}$")] = "beatnet"
    device: Literal["cpu", "cuda"] = "cpu"
    threads: Annotated[int, M(ge=0, le=256)] = 1
    adaptive: bool = True
    adaptive_high_load: Annotated[float, M(gt=0, le=100)] = 0.85


DESCRIPTIONS: dict[str, str] = {
    "redis_url": ("Broker URL (redis://, rediss://, unix://, or redis+cluster:// for a Redis Cluster). "
                  "Unset: an embedded server for `beatbus run`."),
    "rq_url": "Redis for the generation job queue (rq needs a plain Redis, not a cluster). "
              "Unset: the broker (REDIS_URL).",
    "source": "Source name: which audio stream a daemon produces or consumes.",
    "metrics_addr": "HOST:PORT of the Prometheus /metrics endpoint; 'auto': the daemon's own port on 127.0.0.1 "
                    "(processor 9601, intensity 9621, ...: README, Scrape); 'off' disables it; port 0 picks one.",
    "log_level": "debug | info | warning | error.",
    "log_format": "text (key=value) or json (one object per line).",
    "sr": "Sample rate (Hz) of the audio stream.",
    "hop": "Samples per audio frame (441 = 20 ms at 22050 Hz).",
    "maxlen_audio": "Approximate cap (entries) of each audio stream (MAXLEN ~).",
    "maxlen_events": "Approximate cap (entries) of each event stream.",
    "block_ms": "XREAD BLOCK time (ms); kept <= 1000 because of redis-py's 5 s socket timeout.",
    "lease_ttl": "Seconds before a dead owner's source lease lapses and another instance takes over.",
    "heartbeat": "Seconds between source-registry heartbeats and lease renewals.",
    "max_deliveries": "Deliveries before a consumer-group entry is dead-lettered.",
    "claim_idle_ms": "Idle time (ms) before the janitor claims a crashed consumer's pending entry.",
    "buffer_seconds": "Audio a producer buffers while the broker is down; beyond it frames are dropped and counted.",
    "backend": "Beat activation backend: dsp | beatnet | small | hls.",
    "device": "Torch device for model backends: cpu | cuda.",
    "threads": "Compute threads per process (BLAS, OpenMP, torch); 0: the libraries' defaults (one per core; "
               "idle ones spin). An explicit OPENBLAS_NUM_THREADS / OMP_NUM_THREADS wins.",
    "adaptive": "Audio stages (process, intensity run, structure run): under load, degrade one source one step "
                "at a time (beats: a cheaper backend; intensity: half rate; structure: half rate, then shed), the "
                "least recently watched first, and restore when the load allows (README, Adaptive quality).",
    "adaptive_high_load": "Stage load (busy s per s of audio) above which adaptive quality degrades a source; "
                          "restores need a projected load under 0.7 x this.",
}


def redact_url(url: str | None) -> str:
    """Hide the password of a broker URL for logs and errors."""
    if not url:
        return "<embedded>"
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{host}")
    if "password" in parts.query.lower():      # redis-py also takes ?password=...
        from urllib.parse import parse_qsl, urlencode

        query = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query)]
        parts = parts._replace(query=urlencode(query, safe="*/"))
    return urlunsplit(parts)


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file, or raise ConfigError naming the file and the problem."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def stage_table(path: str | os.PathLike, name: str) -> dict[str, Any]:
    """A stage's own table (``[led]``, ``[trigger]``, ``[generate]``...) of the config file; {} if absent."""
    table = read_toml(path).get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: '{name}' must be a table")
    return table


def state_dir(env: dict[str, str] | None = None) -> Path:
    """Where daemons keep state (API keys, uploads...): ``BEATBUS_STATE_DIR``, else systemd's
    ``STATE_DIRECTORY``, else ``$XDG_STATE_HOME/beatbus`` (``~/.local/state/beatbus``)."""
    env = dict(os.environ) if env is None else env
    if env.get("BEATBUS_STATE_DIR"):
        return Path(env["BEATBUS_STATE_DIR"])
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "beatbus"


# The tables a config file may hold besides the core's keys: each belongs to a stage's own loader
# (stage_table); any other name is a typo that would otherwise be ignored without a word.
TABLES = ("beatbus", "api", "clock", "generate", "led", "trigger")


def _read_toml(path: Path) -> dict[str, Any]:
    doc = read_toml(path)
    unknown = sorted(k for k, v in doc.items() if isinstance(v, dict) and k not in TABLES)
    if unknown:
        raise ConfigError(f"config file {path}: unknown table {', '.join(f'[{k}]' for k in unknown)} "
                          f"(tables: {', '.join(f'[{k}]' for k in TABLES)})")
    flat = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    if "beatbus" in doc:
        if flat:
            raise ConfigError(f"config file {path}: {', '.join(sorted(flat))} outside the [beatbus] table: "
                              "put the core's keys either at the top or in [beatbus], not both")
        return doc["beatbus"]
    # Flat file: the core's keys are the top-level scalars; tables such as [led] or
    # [trigger] belong to their stages' own loaders (stage_table).
    return flat


def _env_name(key: str, env: dict[str, str]) -> str | None:
    """The variable a core setting is read from: ``BEATBUS_<KEY>``, for the broker also ``REDIS_URL``."""
    for name in (f"BEATBUS_{key.upper()}", *(("REDIS_URL",) if key == "redis_url" else ())):
        if env.get(name):
            return name
    return None


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    return {key: env[name] for key in Settings.__struct_fields__ if (name := _env_name(key, env))}


def layered(fields, *, table: str | None, from_env, flags: dict[str, Any] | None,
            config_file: str | os.PathLike | None, env: dict[str, str]) -> dict[str, Any]:
    """The one precedence, for the core and every stage: TOML < environment < flags.

    ``table`` names the stage's TOML table (None: the core's keys); ``from_env(env)`` reads the
    stage's environment variables; flags that are None (not given) or not in ``fields`` are skipped.
    """
    merged: dict[str, Any] = {}
    path = config_file or env.get("BEATBUS_CONFIG")
    if path:
        merged.update(stage_table(path, table) if table else _read_toml(Path(path)))
    merged.update(from_env(env))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None and k in fields})
    return merged


def load_settings(flags: dict[str, Any] | None = None, *, config_file: str | os.PathLike | None = None,
                  env: dict[str, str] | None = None) -> Settings:
    """Merge defaults, TOML, env and flags (in that order) and validate the result."""
    env = dict(os.environ) if env is None else env
    merged = layered(Settings.__struct_fields__, table=None, from_env=_from_env, flags=flags,
                     config_file=config_file, env=env)
    try:
        # strict=False lets env strings become ints/floats; ranges are still enforced.
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration{_origin(str(exc), flags, env, config_file)}: "
                          f"{_readable(str(exc), merged)}") from None


# what a pattern-checked setting must look like, said in words instead of its regular expression
_SHAPES = {"metrics_addr": "HOST:PORT, 'auto' or 'off'",
           "source": keys.NAME_RULE,
           "backend": "a backend name (lower case, digits and _)"}


def _readable(message: str, merged: dict[str, Any]) -> str:
    m = re.search(r"matching regex .* - at `\$\.(\w+)`", message)
    if not m or m.group(1) not in _SHAPES:
        return message
    key = m.group(1)
    return f"{key} {merged.get(key)!r} must be {_SHAPES[key]}"


def _origin(message: str, flags: dict[str, Any] | None, env: dict[str, str], config_file) -> str:
    """`` (BEATBUS_BLOCK_MS)``: where the value msgspec refused (``... at `$.block_ms```) came from."""
    m = re.search(r"at `\$\.(\w+)`", message)
    if not m:
        return ""
    key = m.group(1)
    if (flags or {}).get(key) is not None:
        return f" (--{key.replace('_', '-')})"
    name = _env_name(key, env)
    if name:
        return f" ({name})"
    path = config_file or env.get("BEATBUS_CONFIG")
    return f" (config file {path})" if path else ""
