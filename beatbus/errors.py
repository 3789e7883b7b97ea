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


def require(module: str, what: str):
    """Import ``module`` or raise DependencyError naming the extra (:data:`EXTRA_OF`) that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRA_OF[module.split(".")[0]]
        raise DependencyError(
            f"{what} needs the '{module}' package: pip install 'beatbus[{extra}]'"
        ) from exc


# Import name -> the optional extra (pyproject.toml) that installs it: a lighter install
# (BEATBUS_EXTRAS=audio) lacks them, and a command reaching one must say what to install, not
# show a traceback. tests/unit/test_extras.py keeps this equal to pyproject's extras.
EXTRA_OF = {
    "pyaudio": "audio", "librosa": "audio", "pulsectl": "audio",
    "torch": "ml", "BeatNet": "ml", "mir_eval": "ml",
    "fastapi": "api", "uvicorn": "api", "httpx": "api", "websockets": "api", "multipart": "api",
    "fastapi_offline": "api",
    "rq": "gen", "transformers": "gen", "music21": "gen",
    "hls4ml": "hls", "qkeras": "hls", "tensorflow": "hls", "pyparsing": "hls", "yaml": "hls",
    "zeroconf": "wled",
    "pythonosc": "clock", "mido": "clock", "rtmidi": "clock",
}


def missing_extra(exc: ImportError) -> DependencyError | None:
    """The one-line error for an import of a package an extra installs; None for any other (a bug)."""
    if isinstance(exc, DependencyError):
        return exc
    name = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(name)
    if extra is None:
        return None
    return DependencyError(f"this command needs the '{name}' package: pip install 'beatbus[{extra}]' "
                           "(or the full install: ./install.sh)")
