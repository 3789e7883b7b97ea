"""Structured logging: ``key=value`` text for terminals, JSON lines for journald/Loki."""
from __future__ import annotations

import logging
import sys
import time

import orjson

__all__ = ["setup_logging", "get_logger"]

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extra(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={v}" for k, v in _extra(record).items())
        line = f"{ts} {record.levelname.lower():7s} {record.name}: {record.getMessage()}"
        if fields:
            line += "  " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": record.created, "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage(), **_extra(record)}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, not as it was at setup: a command
    run in-process (tests, notebooks) may swap stderr and close the old one, and the threads it left
    would then fail on every line (stdlib's ``logging.lastResort`` does the same, privately)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once, on stderr (stdout belongs to command output)."""
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx/httpcore (and the hub's httpx2 fork) log every request at INFO: one line per trigger, i.e.
    # per beat. Warnings stay.
    for chatty in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"beatbus.{name}" if not name.startswith("beatbus") else name)
