"""Service runtime shared by every daemon: signals, systemd notify, watchdog, metrics.

A :class:`Service` is a loop in a thread. :func:`run_services` starts the metrics server,
runs the services, tells systemd ``READY=1``, pings ``WATCHDOG=1`` only while every
service's loop is still ticking (a hung loop lets systemd restart us), and on
SIGTERM/SIGINT asks every service to drain and returns 0.
"""
from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

from .errors import BeatbusError
from .log import get_logger
from .metrics import publish_role, serve_metrics

__all__ = ["Service", "run_services", "sd_notify", "Watchdog", "children_die_with_parent", "instance_id",
           "name_os_thread"]

log = get_logger("runtime")


def sd_notify(state: str) -> bool:
    """Send a state line to systemd's ``NOTIFY_SOCKET`` (no-op when not under systemd).

    Written by hand: it is a single datagram, not worth a dependency.
    """
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)  # a notify socket nobody reads must never stall shutdown
            s.connect(path)
            s.send(state.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed", extra={"error": str(exc)})
        return False


class Watchdog:
    """systemd's watchdog (``WatchdogSec=``, given as ``WATCHDOG_USEC``): a ping is :meth:`due` every
    WatchdogSec/2, the first one at once (with READY: a slow first step must not cost a period).

    The caller pings only while its loop is healthy: a hung loop stops the pings and systemd
    restarts the daemon. Without ``WATCHDOG_USEC`` a ping is never due.
    """

    def __init__(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self.period: float | None = usec / 2e6 if usec else None
        self._last = time.monotonic() - (self.period or 0)

    def due(self, now: float) -> bool:
        """Whether a ping is due at ``now`` (``time.monotonic()``)."""
        return self.period is not None and now - self._last >= self.period

    def ping(self, now: float) -> None:
        # every WatchdogSec/2, not every turn of the loop: the notify queue is small
        sd_notify("WATCHDOG=1")
        self._last = now


_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15       # prctl(2) options
STOP_S = 8.0         # every service's drain together, from the stop request on
_forked_by = 0


def children_die_with_parent() -> None:
    """Every child this process forks from now on (rq's scheduler) gets SIGTERM when it dies, even by
    SIGKILL: an orphan keeps the parent's sockets, its /metrics port among them, and its replacement
    could not start. (Linux's parent-death signal; it follows the forking thread, so fork from a
    thread that lives as long as the process, as rq does.)"""
    if sys.platform.startswith("linux"):
        os.register_at_fork(before=_note_parent, after_in_child=_die_with_parent)


def _note_parent() -> None:
    global _forked_by
    _forked_by = os.getpid()


def _die_with_parent() -> None:
    die_with(_forked_by)


def die_with(parent_pid: int) -> None:
    """In a freshly forked child (e.g. a ``subprocess.Popen`` ``preexec_fn``): SIGTERM when the parent
    ``parent_pid`` dies, even by SIGKILL; at once if it already has."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:           # the parent died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the kernel too (``top -H``, ``ps -L``, /proc/PID/task/*/comm),
    so a thread's CPU is attributable from outside; Python 3.11 names threads only for itself."""
    if sys.platform.startswith("linux"):
        # ctypes: the stdlib gains this only in 3.14; the kernel keeps 15 bytes
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def instance_id(role: str) -> str:
    """A name unique to this process: ``host:pid:role`` (an owner of leases, a consumer in a group)."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


class Service:
    """Base class of a daemon loop.

    Subclasses implement :meth:`step` (one bounded unit of work, returning False when the
    service has finished, e.g. end of file) and may override :meth:`setup` / :meth:`drain`.
    """

    name = "service"

    def __init__(self) -> None:
        self.tick = time.monotonic()
        self.ready = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def setup(self) -> None:
        """Called in the service thread before the loop."""

    def step(self, stop: threading.Event) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def drain(self) -> None:
        """Called once after the loop ends (stop requested or finished): flush, release."""

    def run(self, stop: threading.Event) -> None:
        name_os_thread(self.name)
        try:
            self.setup()
            self.ready.set()
            while not stop.is_set():
                self.tick = time.monotonic()
                if self.step(stop) is False:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by run_services; the service is dead
            self.error = exc
        finally:
            try:
                self.drain()
            except Exception as exc:  # noqa: BLE001 - a failing drain must not hide the original error
                log.warning("drain failed", extra={"service": self.name, "error": str(exc)})
            self.done.set()


def run_services(services: Sequence[Service], *, metrics_addr: str = "off",
                 until: Sequence[Service] | None = None, duration: float | None = None,
                 sources: Sequence[Service] = ()) -> int:
    """Run services in threads until a signal, ``duration`` or the ``until`` services finish.

    Services start in the given order, each after the previous one's ``setup`` finished.
    ``sources`` (a whole pipeline in one process, ``beatbus run``) stop first: their end-of-stream
    markers then flow through the other stages, so every reader, in this process or another, sees
    the stream end; the rest stop when the ``until`` services finished (or the stop budget is spent).
    A second signal stops everything at once.

    Returns 0 on a clean stop, 1 if a service died with an unexpected error; re-raises a
    BeatbusError (a user error such as an unreadable file) for the CLI to print.
    """
    stop = threading.Event()
    halt = threading.Event()                       # a signal asked to stop (the other ends break the loop)
    source_stop = threading.Event() if sources else stop
    for s in services:
        publish_role(s.name)
    bound = serve_metrics(metrics_addr, role=services[0].name if services else None)
    if bound:
        log.info("metrics served", extra={"url": f"http://{bound[0]}:{bound[1]}/metrics"})

    def _on_signal(signum, _frame):
        log.info("signal received; draining", extra={"signal": signal.Signals(signum).name})
        if halt.is_set():
            stop.set()                             # a second signal: no ordered stop
        halt.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)

    # Start in order, each once the previous is ready, so readers exist before writers.
    threads = []
    for s in services:
        t = threading.Thread(target=s.run, args=(source_stop if s in sources else stop,), name=s.name, daemon=True)
        t.start()
        threads.append(t)
        while not (s.ready.wait(0.05) or s.done.is_set() or halt.is_set()):
            pass
    # What exists now (libraries, models) lives as long as the process: out of the collector's
    # sight, a full collection scans only what the loops allocate (with torch loaded one took
    # ~140 ms: a latency spike in a real-time daemon; frozen, 6 ms).
    gc.collect()
    gc.freeze()
    sd_notify("READY=1")
    watchdog = Watchdog()
    wd_every = watchdog.period
    started = time.monotonic()
    waiters = list(until) if until is not None else list(services)
    try:
        while not halt.is_set():
            if any(s.error for s in services):
                break
            if all(s.done.is_set() for s in waiters):
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            now = time.monotonic()
            if wd_every is not None and watchdog.due(now) \
                    and all(now - s.tick < 2 * wd_every or s.done.is_set() for s in services):
                watchdog.ping(now)
            halt.wait(min(wd_every or 0.1, 0.1))
    finally:
        sd_notify("STOPPING=1")
        # one bound for every drain together, well inside systemd's TimeoutStopSec (30 s): a drain
        # blocked on a broker that does not answer must not hold the process past it
        deadline = time.monotonic() + STOP_S
        if sources and not stop.is_set():
            source_stop.set()
            # half the budget for the end markers to reach the readers, the rest for the drains
            follow = time.monotonic() + STOP_S / 2
            while time.monotonic() < follow and not stop.is_set() and not any(s.error for s in services) \
                    and not all(s.done.is_set() for s in waiters):
                time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [s.name for s, t in zip(services, threads) if t.is_alive()]
        if stuck:
            log.warning("exiting before a drain finished (the broker did not answer in time)",
                        extra={"services": ",".join(stuck), "seconds": STOP_S})
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [s for s in services if s.error]
    for s in failed:
        if isinstance(s.error, BeatbusError):
            raise s.error
    for s in failed:
        log.error("service died", exc_info=s.error, extra={"service": s.name})
    return 1 if failed else 0
