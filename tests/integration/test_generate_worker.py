"""`beatbus worker` as a real process: queue-and-wait CLI, systemd notify, SIGKILL mid-job, a full disk."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import orjson
import pytest
import soundfile as sf

from beatbus.cli import main
from beatbus.consumers.generate.jobqueue import GenerationQueue
from beatbus.consumers.generate.spec import build_job, parse_params
from beatbus.consumers.generate.storage import Store
from beatbus.lab.doubles.tiny_models import build_tiny_musicgen

from support.generate import gen_config
from support.paths import ROOT
from support.procs import beatbus_cmd, free_port


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_musicgen(tmp_path_factory.mktemp("models") / "musicgen")


def worker_env(broker, state, model, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k not in ("REDIS_URL",
                                                                                             "NOTIFY_SOCKET")}
    env.update({"REDIS_URL": broker.url, "BEATBUS_STATE_DIR": str(state), "BEATBUS_MUSICGEN_MODEL": str(model),
                "BEATBUS_GENERATE_TORCH_THREADS": "1", "BEATBUS_GENERATE_HEARTBEAT": "0.5",
                "BEATBUS_GENERATE_ABANDON_AFTER": "3", "BEATBUS_GENERATE_RETRIES": "1",
                "BEATBUS_GENERATE_RETRY_INTERVAL": "0", "BEATBUS_METRICS_ADDR": "off", "BEATBUS_LOG_LEVEL": "warning",
                **{k: str(v) for k, v in extra.items()}})
    return env


def start_worker(env: dict, log, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-m", "beatbus.cli", "worker", "--preload", "musicgen", *args],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class NotifySocket:
    """A stand-in for systemd's NOTIFY_SOCKET that keeps draining (a full datagram queue blocks senders)."""

    def __init__(self, path):
        self.path, self.states = str(path), []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.states.append(self.sock.recv(256).decode())
            except TimeoutError:
                continue

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def test_cli_queues_and_waits_for_a_worker_daemon_with_systemd_notify(broker, bus, model, tmp_path, monkeypatch,
                                                                      capsys):
    notify = NotifySocket(tmp_path / "notify.sock")
    port = free_port()
    env = worker_env(broker, tmp_path / "state", model, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=1_000_000,
                     BEATBUS_METRICS_ADDR=f"127.0.0.1:{port}")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = start_worker(env, log)
        try:
            wait_until(lambda: "READY=1" in notify.states, 90, "READY=1")        # sent once the model loaded
            out = tmp_path / "piece.wav"
            r = beatbus_cmd("generate", "musicgen", "--prompt", "lofi", "--duration", "5", "--seed", "2",
                            "--out", str(out), "--wait", "60", "--torch-threads", "1",
                            env={k: v for k, v in env.items() if k.startswith(("BEATBUS_", "REDIS_URL"))},
                            timeout=120)
            assert r.returncode == 0, r.stderr
            gid = orjson.loads(r.stdout.strip().splitlines()[-1])["id"]
            x, sr = sf.read(out)
            assert sr == 32000 and len(x) == 5 * 32000
            for k, v in env.items():                            # the status command, in this process
                if k.startswith("BEATBUS_") or k == "REDIS_URL":
                    monkeypatch.setenv(k, v)
            capsys.readouterr()
            assert main(["generate", "status", gid]) == 0
            doc = orjson.loads(capsys.readouterr().out)
            assert doc["status"] == "finished" and doc["result"]["metadata"]["seed"] == 2
            assert "WATCHDOG=1" in notify.states
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                metrics = resp.read().decode()
            assert 'beatbus_generation_jobs_total{kind="musicgen",outcome="finished"} 1.0' in metrics
            assert 'beatbus_generation_queue_wait_seconds_count{kind="musicgen"} 1.0' in metrics
            worker.send_signal(signal.SIGTERM)                  # warm shutdown: exits once idle
            assert worker.wait(30) == 0, log_path.read_text()[-2000:]
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            notify.close()
    assert notify.states[-1] == "STOPPING=1"
    assert main(["generate", "musicgen", "--duration", "2", "--local", "--out", str(tmp_path / "x.wav")]) == 2
    assert "beatbus: error: duration: Expected `float` >= 5.0" in capsys.readouterr().err


def test_worker_asked_to_preload_missing_weights_stops_with_one_line(broker, tmp_path, monkeypatch, capsys):
    from beatbus.cli import main

    for k in [k for k in os.environ if k.startswith("BEATBUS_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("REDIS_URL", broker.url)
    monkeypatch.setenv("BEATBUS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BEATBUS_MUSICGEN_MODEL", str(tmp_path / "no-model-here"))
    assert main(["worker", "--burst", "--metrics-addr", "off", "--preload", "musicgen"]) == 2
    err = capsys.readouterr().err
    assert f"beatbus: error: cannot preload musicgen: directory {tmp_path / 'no-model-here'} does not exist" in err
    assert "Traceback" not in err


def test_worker_killed_mid_job_is_retried_then_failed_never_stuck(broker, bus, model, tmp_path):
    state = tmp_path / "state"
    cfg = gen_config(state, {"musicgen": model, "melody": model, "clap": model})
    queue = GenerationQueue(bus.redis, cfg, store=Store(state))
    spec = build_job(parse_params({"prompt": "long", "duration": 90}))      # far longer than this test waits
    queue.submit(spec)
    env = worker_env(broker, state, model)
    for attempt, expected in ((1, "queued"), (2, "failed")):
        with open(tmp_path / f"worker{attempt}.log", "wb") as log:
            worker = start_worker(env, log, "--no-scheduler")
            try:
                wait_until(lambda: (s := queue.status(spec.id))["status"] == "started" and s["progress"] >= 2,
                           90, "the job to make progress")
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        killed = time.monotonic()
        st = wait_until(lambda: (s := queue.status(spec.id))["status"] != "started" and s, 15,
                        f"the killed job to leave 'started' (attempt {attempt})")
        assert st["status"] == expected, st
        assert time.monotonic() - killed < 3 + 5                 # abandon_after plus a sweep, not the 2820 s timeout
    assert st["retries_left"] == 0 and "worker died" in st["error"]
    assert not queue.store.result_dir(spec.id).exists()


def _can_mount_tmpfs(tmp_path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {probe}"],
                       capture_output=True)
    return r.returncode == 0


def test_a_full_disk_fails_the_job_with_a_clear_error(broker, bus, model, tmp_path):
    """Results on a 16 KiB tmpfs in a private mount namespace (nothing outside the worker sees it)."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("needs unshare --mount and tmpfs (root or CAP_SYS_ADMIN)")
    state = tmp_path / "state"
    store = Store(state)
    cfg = gen_config(state, {"musicgen": model, "melody": model, "clap": model})
    queue = GenerationQueue(bus.redis, cfg, store=store)
    spec = build_job(parse_params({"duration": 5, "seed": 1}))
    queue.submit(spec)
    env = worker_env(broker, state, model)
    with open(tmp_path / "worker.log", "wb") as log:
        worker = start_worker(env, log, "--burst", prefix=("unshare", "--mount", "sh", "-c",
                                                           f'mount -t tmpfs -o size=16k tmpfs "{store.results}" '
                                                           '&& exec "$@"', "sh"))
        assert worker.wait(120) == 0, (tmp_path / "worker.log").read_text()
    st = queue.status(spec.id)
    assert st["status"] == "failed" and st["retries_left"] == 0, st           # a full disk is not retried
    assert st["error"].startswith("no space left on device: writing audio.wav")
    assert list(store.results.iterdir()) == []                                # no partial result left behind
