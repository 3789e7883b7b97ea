"""A private PulseAudio sound server with one null sink: "what this computer plays", without a sound card.

The null sink consumes audio in real time on the system clock, and its monitor source hands
the same samples to whoever captures it, so a test can play a file with ``paplay`` and
capture it with ``beatbus run --mic --mic-device monitor``. Clients find the server through
``PULSE_SERVER`` (:attr:`SoundServer.env`); nothing touches a user's own sound server.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .procs import wait_for

__all__ = ["SoundServer"]


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: ./install.sh installs it", pytrace=False)
    return path


class SoundServer:
    """``pulseaudio`` on a socket in a temp dir, with the null sink ``beatbus_null``.

    Attributes
    ----------
    sink, monitor : str
        The null sink's name and its monitor source's name.
    env : dict
        ``PULSE_SERVER`` for clients (pactl, paplay, PortAudio's ``pulse`` device, pulsectl).
    """

    sink = "beatbus_null"
    monitor = "beatbus_null.monitor"

    def __init__(self):
        self.binary = _binary("pulseaudio")
        # A short path of its own: a unix socket path must fit in 108 bytes, and tmp_path may not.
        self.dir = Path(tempfile.mkdtemp(prefix="bb-pulse-"))
        self.env = {"PULSE_SERVER": f"unix:{self.dir / 'run' / 'native'}"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> SoundServer:
        for sub in ("run", "home"):
            (self.dir / sub).mkdir()
        env = {**os.environ, "XDG_RUNTIME_DIR": str(self.dir / "run"), "HOME": str(self.dir / "home")}
        self.log = open(self.dir / "pulseaudio.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
             "--log-target=stderr",
             "-L", f"module-native-protocol-unix auth-anonymous=1 socket={self.dir / 'run' / 'native'}",
             "-L", f"module-null-sink sink_name={self.sink} rate=44100"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for(lambda: self.proc.poll() is not None or self.pactl("info").returncode == 0, timeout=30) \
                or self.proc.poll() is not None:
            self.stop()
            pytest.fail(f"pulseaudio did not start: {(self.dir / 'pulseaudio.log').read_text()[-2000:]}")
        return self

    def pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([_binary("pactl"), *args], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=30)

    def play(self, path: str | os.PathLike) -> subprocess.Popen:
        """Start playing ``path`` to the null sink (``paplay``); the caller waits for it."""
        return subprocess.Popen([_binary("paplay"), "-d", self.sink, str(path)], env={**os.environ, **self.env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
