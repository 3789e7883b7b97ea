"""Serving the app with uvicorn: in the foreground (``beatbus api``) or in a thread (tests, ``run``)."""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
import time

import uvicorn

from beatbus.errors import ConfigError
from beatbus.log import get_logger
from beatbus.runtime import Watchdog, sd_notify

__all__ = ["ApiServer", "serve", "bind", "is_loopback", "check_exposure"]

log = get_logger("beatbus.api.server")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Plain(logging.Filter):
    """uvicorn attaches a terminal-coloured copy of each message; beatbus logs are plain. And its
    WebSocket handshake lines carry the path with its query string, where a client may have put an
    API key (refused there, but logged): the query is cut from every path uvicorn logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        if isinstance(record.args, tuple):
            record.args = tuple(_no_query(a) for a in record.args)
        return True


def _no_query(arg):
    if isinstance(arg, str) and arg.startswith("/") and "?" in arg:
        return arg.split("?", 1)[0] + "?..."
    return arg


for _name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
    logging.getLogger(_name).addFilter(_Plain())


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or ConfigError naming the address and the cause."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve the API on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def check_exposure(guard, host: str) -> bool:
    """May an app with this :class:`~api.deps.Guard` listen on ``host``? Without API keys only on
    loopback (ConfigError otherwise). Returns True when keys are configured, False in open mode.
    """
    keyed = bool(guard is not None and guard.has_keys())
    if not keyed and not is_loopback(host):
        raise ConfigError(f"refusing to serve the API on {host} without API keys: create one with "
                          "`beatbus api keys create --scope read` (or bind 127.0.0.1)")
    return keyed


def _config(app, host: str, port: int, log_level: str) -> uvicorn.Config:
    check_exposure(getattr(app.state, "guard", None), host)
    # log_config=None: uvicorn's records go through beatbus's logging (text or JSON lines)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, log_config=None,
                          ws_max_size=64 * 1024, timeout_graceful_shutdown=3, lifespan="on")


class _Server(uvicorn.Server):
    """uvicorn, behaving like every beatbus daemon: systemd notify, and exit 0 after a SIGTERM drain
    (uvicorn itself re-raises the signal once shut down, which ends the process with -15)."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            sd_notify("READY=1")
        self.watchdog = Watchdog()

    async def on_tick(self, counter: int) -> bool:
        # uvicorn ticks every 0.1 s while its loop is alive: a hung loop stops the pings
        now = time.monotonic()
        if self.watchdog.due(now):
            self.watchdog.ping(now)
        return await super().on_tick(counter)

    async def shutdown(self, sockets=None) -> None:
        sd_notify("STOPPING=1")
        await super().shutdown(sockets)


def serve(app, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          sock: socket.socket | None = None) -> int:
    """Serve until SIGINT/SIGTERM, then drain and return 0 (``sock``: already bound by :func:`bind`)."""
    sock = sock or bind(host, port)
    server = _Server(_config(app, host, port, log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


class ApiServer:
    """uvicorn on a background thread: ``with ApiServer(app, port=p) as srv: ... srv.url``."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning"):
        self.host, self.port = host, port
        self.server = _Server(_config(app, host, port, log_level))
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=lambda: self.server.run(sockets=[self.sock]), name="api-server",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ApiServer:
        self.sock = bind(self.host, self.port)
        self.port = self.sock.getsockname()[1]
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"API server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.sock is not None:
            self.sock.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
