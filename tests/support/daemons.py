"""Real `beatbus` commands as processes: started as a user (or systemd) starts them, watched from outside.

Each command runs in its own process group (so a child it spawns, e.g. rq's scheduler, is
stopped and counted with it), writes stdout and stderr to files, and tells readiness the way
systemd hears it: ``READY=1`` on its own ``NOTIFY_SOCKET``.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["Daemon", "daemon_env", "beatbus_argv", "group_cpu_times"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
# Set by a deployment or a developer's shell, never by a user's default environment: the suite
# must see the thread pools the daemons choose for themselves (issue #15 item 2).
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")


def beatbus_argv() -> list[str]:
    """The installed console script next to this interpreter (what the README runs), else ``-m``."""
    script = Path(sys.executable).with_name("beatbus")
    return [str(script)] if script.exists() else [sys.executable, "-m", "beatbus.cli"]


def daemon_env(**extra: str) -> dict[str, str]:
    """This environment without any beatbus setting or thread-pool override, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BEATBUS_") and k not in ("REDIS_URL", "ERROR_GENERATOR_URL", "NOTIFY_SOCKET",
                                                         *_THREAD_VARS)}
    env.update(extra)
    return env


def _die_with_parent() -> None:
    """In the child: stop if pytest itself is killed (the fixture's cleanup then never runs)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def group_cpu_times(pgid: int) -> tuple[float, float]:
    """User and system CPU seconds of every live process in process group ``pgid`` (/proc/PID/stat)."""
    user = system = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:                     # it exited meanwhile
            continue
        fields = stat[stat.rindex(b")") + 2:].split()    # after "(comm)": state ppid pgrp ...
        if int(fields[2]) == pgid:
            user += int(fields[11])                       # utime, stime: fields 14 and 15 of stat
            system += int(fields[12])
    return user / _CLK_TCK, system / _CLK_TCK


class Daemon:
    """One `beatbus` command.

    Parameters
    ----------
    name : str
        Short role name (also the log file names and the ``unit`` label in Prometheus).
    args : list of str
        Arguments after ``beatbus``.
    env : dict
        Its whole environment.
    workdir : Path
        Where its logs and notify socket go.
    metrics : str or None
        ``HOST:PORT`` serving its /metrics, or None.
    unit : str
        The systemd unit it stands for (``beatbus-processor@1``): Prometheus's ``unit`` label.
    """

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], workdir: Path,
                 metrics: str | None = None, unit: str = ""):
        self.name, self.args, self.metrics, self.unit = name, args, metrics, unit
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self._notify_path = workdir / f"{name}.notify"
        self.env = dict(env, NOTIFY_SOCKET=str(self._notify_path))
        self.proc: subprocess.Popen | None = None
        self.ready_at: float | None = None
        self.stop_problem: str | None = None
        self._notify: socket.socket | None = None
        self._listener: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.notified: list[tuple[float, str]] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Daemon:
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._notify_path))
        self._notify.settimeout(0.05)
        # A thread of its own stamps each line as it arrives, as systemd does: read only when the test
        # polls, lines queued while it looked at other daemons would all get the same late time.
        self._listener = threading.Thread(target=self._listen, args=(self._notify,), daemon=True,
                                          name=f"notify-{self.name}")
        self._listener.start()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([*beatbus_argv(), *self.args], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        return self

    def poll_ready(self) -> bool:
        """True once it has sent ``READY=1`` (the listener thread records it)."""
        return self.ready_at is not None

    def notifications(self) -> list[tuple[float, str]]:
        """Every notify line it sent so far (``READY=1``, ``WATCHDOG=1`` ...) with its monotonic arrival time."""
        with self._lock:
            return list(self.notified)

    def _listen(self, sock: socket.socket) -> None:
        while True:
            try:
                msg = sock.recv(4096)
            except TimeoutError:
                if self._closing.is_set():       # stopped, and all it said is read (STOPPING=1)
                    return
                continue
            now = time.monotonic()
            with self._lock:
                for line in msg.decode(errors="replace").splitlines():
                    self.notified.append((now, line))
                    if line == "READY=1" and self.ready_at is None:
                        self.ready_at = now

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU seconds used so far by it and the children in its process group."""
        return group_cpu_times(self.pid)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """One line: how it was started and whether it still runs."""
        state = "running" if self.alive() else f"exited {self.proc.returncode}" if self.proc else "not started"
        return f"{self.name} (pid {self.proc.pid if self.proc else '-'}, {state}): beatbus {' '.join(self.args)}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to its process group, SIGKILL to whatever is left after ``timeout``.

        Sets :attr:`stop_problem`: None when it was running and drained and exited 0 on SIGTERM
        with nothing left behind (the README's promise), else what happened.
        """
        if self.proc is not None:
            self.stop_problem = None if self.proc.poll() is None else f"had already exited {self.proc.returncode}"
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                if sig == signal.SIGKILL and self.stop_problem is None:
                    self.stop_problem = f"it (or a child) was still running {timeout:.0f} s after SIGTERM"
                try:
                    self.proc.wait(wait)
                except subprocess.TimeoutExpired:
                    continue
                if not _group_exists(self.proc.pid):
                    break
            if self.stop_problem is None and self.proc.returncode != 0:
                self.stop_problem = f"exited {self.proc.returncode} after SIGTERM"
        if self._notify is not None:
            self._closing.set()
            if self._listener is not None:
                self._listener.join(timeout=5)
            self._notify.close()
            self._notify = None


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
