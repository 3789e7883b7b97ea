"""Children die with their daemon (issue #15 item 7).

`beatbus worker` forks rq's scheduler. After a `kill -9` of the worker the scheduler lived on as an
orphan holding the worker's sockets, its /metrics port among them, so the replacement (systemd's
restart) exited with "Address already in use". The worker's children now get SIGTERM when it dies.
"""
from __future__ import annotations

import os
import signal
import urllib.request

from support.daemons import Daemon, daemon_env
from support.procs import free_port, wait_for


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != b"Z":
                out.append(int(entry.name))
    return out


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"      # a zombie holds nothing
    except OSError:
        return False


def _metrics_answer(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_killed_worker_leaves_no_child_and_its_replacement_binds_the_port(broker, tmp_path):
    port = free_port()
    env = daemon_env(REDIS_URL=broker.url, BEATBUS_METRICS_ADDR=f"127.0.0.1:{port}",
                     BEATBUS_STATE_DIR=str(tmp_path / "state"))
    first = Daemon("worker-1", ["worker", "--preload"], env=env, workdir=tmp_path).start()
    second = None
    try:
        assert wait_for(lambda: (_metrics_answer(port) and _children(first.pid)) or not first.alive(), 120), \
            first.stderr()[-2000:]
        children = _children(first.pid)                  # rq's scheduler, forked once the worker runs
        assert children and first.alive(), first.stderr()[-2000:]
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)
        assert wait_for(lambda: not any(_running(c) for c in children), 15), \
            f"children of the killed worker still run: {[c for c in children if _running(c)]}"
        second = Daemon("worker-2", ["worker", "--preload"], env=env, workdir=tmp_path).start()
        assert wait_for(lambda: second.poll_ready() or not second.alive(), 120), second.stderr()[-2000:]
        assert second.alive() and _metrics_answer(port), second.stderr()[-2000:]
    finally:
        for d in (first, second):
            if d is not None:
                d.stop()


def test_a_killed_beatbus_broker_takes_its_embedded_server_with_it(tmp_path):
    """`beatbus broker` (and `beatbus run`) start a private Valkey server; a `kill -9` must not orphan it."""
    import subprocess
    import sys

    from support.paths import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "broker"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("REDIS_URL=")
        wait_for(lambda: _children(proc.pid), 10)
        servers = _children(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not any(_running(pid) for pid in servers), 10)
    assert not any(_running(pid) for pid in servers), "the embedded server outlived its beatbus process"
