"""beatbus's error tree: every error a user can cause is one of these.

::

    BeatbusError
    ├── ConfigError          bad setting, flag, env var or TOML file
    ├── BrokerError          Redis unreachable, refused, or misbehaving
    ├── SchemaError          a payload that does not match its event schema
    ├── AudioSourceError     missing/corrupt file, no device, refused rate
    ├── SourceClaimedError   another producer already owns this source name
    └── DependencyError      an optional extra is not installed

The CLI prints ``beatbus: error: <message>`` for these and never a traceback;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = [
    "BeatbusError", "ConfigError", "BrokerError", "SchemaError",
    "AudioSourceError", "SourceClaimedError", "DependencyError", "require",
]


class BeatbusError(Exception):
    """Root of every error beatbus raises on purpose."""


class ConfigError(BeatbusError, ValueError):
    """A setting has a bad value or type."""


class BrokerError(BeatbusError):
    """The broker cannot be reached or refused an operation."""


class SchemaError(BeatbusError, ValueError):
    """A payload failed validation against its event schema."""


class AudioSourceError(BeatbusError):
    """An audio source (file, device, synth) cannot deliver audio."""


class SourceClaimedError(BeatbusError):
    """Another live producer already publishes under this source name."""


class DependencyError(BeatbusError, ImportError):
    """An optional dependency (an extra) is missing."""


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise DependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{what} needs the '{module}' package: pip install 'beatbus[{extra}]'"
        ) from exc
