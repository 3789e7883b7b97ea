"""Generation as a newcomer meets it (issue #15, item 8), through the real commands.

The machine has the shipped LSTM and nothing else: the Hugging Face hub is a closed port (or
a server that never answers) given as ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` unset, ``HF_HOME`` an
empty directory. Real ``beatbus worker`` / ``beatbus api`` / ``beatbus generate`` processes;
httpx and music21 check the results from outside.
"""
from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

import httpx
import orjson
import pytest
import soundfile as sf
from music21 import converter
from music21 import tempo as m21tempo
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from beatbus.lab.doubles.tiny_models import build_tiny_musicgen

from support.generate import FakeHub, to_hf_cache
from support.paths import ROOT
from support.procs import free_port


class SilentHub:
    """A TCP port that accepts connections (the kernel's backlog) and never answers: a hub that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


@pytest.fixture(params=["refused", "silent"])
def dead_hub(request):
    if request.param == "refused":
        yield f"http://127.0.0.1:{free_port()}"          # nothing listens there
    else:
        hub = SilentHub()
        yield hub.url
        hub.close()


def user_env(tmp_path, hub: str, **extra) -> dict:
    """A user's environment: no beatbus or Hugging Face settings but an empty HF_HOME and the hub URL."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BEATBUS_", "HF_", "TRANSFORMERS_")) and k not in ("REDIS_URL", "NOTIFY_SOCKET")}
    env.update({"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub, "HF_HUB_ETAG_TIMEOUT": "3",
                "BEATBUS_STATE_DIR": str(tmp_path / "state"), "BEATBUS_GENERATE_TORCH_THREADS": "1",
                **{k: str(v) for k, v in extra.items()}})
    return env


def beatbus(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beatbus.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def spawn(*args: str, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "beatbus.cli", *args], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_model_neither_cached_nor_downloadable_is_one_clear_line(tmp_path, dead_hub):
    started = time.monotonic()
    r = beatbus("generate", "musicgen", "--local", "--duration", "5", "--out", str(tmp_path / "x.wav"),
                env=user_env(tmp_path, dead_hub))
    assert r.returncode == 2, r.stderr
    assert time.monotonic() - started < 90                  # one 3 s probe, not the hub's minute of retries
    lines = [ln for ln in r.stderr.strip().splitlines() if "loading model" not in ln]     # the INFO line before
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(
        f"beatbus: error: MusicGen model 'facebook/musicgen-small' is not in the Hugging Face cache "
        f"({tmp_path / 'hf' / 'hub'}) and cannot be downloaded: the Hugging Face hub at {dead_hub} is unreachable ("
    ), lines[0]
    assert lines[0].endswith("; or set BEATBUS_MUSICGEN_MODEL=DIR (saved by save_pretrained)"), lines[0]
    assert not (tmp_path / "x.wav").exists()


def test_a_model_directory_that_is_not_there_is_one_line_about_that_directory(tmp_path, dead_hub):
    """--model names a path: the error is about that path, not a variable the user did not set."""
    r = beatbus("generate", "musicgen", "--local", "--model", str(tmp_path / "nothing-here"), "--duration", "5",
                "--out", str(tmp_path / "x.wav"), env=user_env(tmp_path, dead_hub))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if "loading model" not in ln]
    assert lines == [f"beatbus: error: MusicGen model directory {tmp_path / 'nothing-here'} does not exist; give a "
                     "directory saved by save_pretrained, or a Hugging Face model id"], r.stderr


def test_models_load_from_the_hugging_face_cache_layout_without_the_hub(tmp_path, broker):
    to_hf_cache(build_tiny_musicgen(tmp_path / "built"), tmp_path / "hf", "tiny-org/musicgen")
    env = user_env(tmp_path, f"http://127.0.0.1:{free_port()}", BEATBUS_MUSICGEN_MODEL="tiny-org/musicgen")
    out = tmp_path / "piece.wav"
    r = beatbus("generate", "musicgen", "--local", "--duration", "5", "--seed", "1", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    x, sr = sf.read(out)
    assert sr == 32000 and len(x) == 5 * 32000
    # the worker finds it in the cache too, and offers it
    r = beatbus("worker", "--burst", "--metrics-addr", "off", env={**env, "REDIS_URL": broker.url})
    assert r.returncode == 0, r.stderr
    assert "model offered  kind=musicgen model=tiny-org/musicgen from=cache" in r.stderr
    assert "loaded=lstm,musicgen" in r.stderr.replace("transformers:", "")


def on_a_terminal(args: list[str], env: dict, timeout: float = 180) -> tuple[int, str]:
    """Run the real CLI with its stderr on a pseudo-terminal of 120 columns (as a user's shell): (rc, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:                       # EIO: the process closed the terminal
            break
        if ready and not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(30), out.decode(errors="replace")


def test_first_use_downloads_the_whole_model_into_the_cache_with_progress_on_a_terminal(tmp_path, broker):
    built = build_tiny_musicgen(tmp_path / "built")
    args = ["generate", "musicgen", "--local", "--duration", "5", "--seed", "1", "--state-dir", str(tmp_path / "s")]
    with FakeHub(built, "tiny-org/musicgen") as hub:
        env = user_env(tmp_path, hub.url, BEATBUS_MUSICGEN_MODEL="tiny-org/musicgen")
        rc, err = on_a_terminal([*args, "--out", str(tmp_path / "a.wav")], env)
        assert rc == 0, err
        assert "downloading model into the Hugging Face cache (first use)  model=tiny-org/musicgen" in err
        assert "Fetching 6 files" in err and "100%" in err                   # the hub's progress bars
        fetched = {r.rsplit("/", 1)[-1] for r in hub.requests if r.startswith("GET /tiny-org/musicgen/resolve/")}
        assert fetched == {p.name for p in built.iterdir()}                 # model, tokenizer, processor: all
        # in a pipe (journald): the log lines say it, no progress bars
        piped = beatbus(*args, "--out", str(tmp_path / "b.wav"), env={**env, "HF_HOME": str(tmp_path / "hf2")})
        assert piped.returncode == 0, piped.stderr
        assert "model downloaded  model=tiny-org/musicgen" in piped.stderr and "Fetching" not in piped.stderr
        assert "%|" not in piped.stderr and "HTTP Request" not in piped.stderr, piped.stderr
        # a worker offers what the hub serves, and its first job downloads it
        wenv = {**env, "HF_HOME": str(tmp_path / "hf3"), "REDIS_URL": broker.url, "BEATBUS_METRICS_ADDR": "off"}
        with open(tmp_path / "worker.log", "wb") as log:
            worker = spawn("worker", env=wenv, log=log)
            try:
                wait_for(lambda: b"worker ready" in (tmp_path / "worker.log").read_bytes(), 120, "the worker")
                r = beatbus("generate", "musicgen", "--duration", "5", "--out", str(tmp_path / "d.wav"), "--wait",
                            "120", env=wenv)                         # queued for the worker, not --local
                assert r.returncode == 0, r.stderr + (tmp_path / "worker.log").read_text()
            finally:
                assert stop(worker) == 0
        log = (tmp_path / "worker.log").read_text()
        assert "model offered  kind=musicgen model=tiny-org/musicgen from=hub (downloaded by its first job)" in log
        assert log.count("downloading model into the Hugging Face cache") == 1 and "Traceback" not in log, log
    # the hub gone, the cache serves: no network, no download
    r = beatbus(*args, "--out", str(tmp_path / "c.wav"), env={**env, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert r.returncode == 0 and "downloading" not in r.stderr, r.stderr
    for name in ("a.wav", "b.wav", "c.wav", "d.wav"):
        x, sr = sf.read(tmp_path / name)
        assert sr == 32000 and len(x) == 5 * 32000


def test_worker_defaults_offer_the_shipped_lstm_and_the_api_refuses_what_no_worker_can_run(broker, tmp_path):
    hub = f"http://127.0.0.1:{free_port()}"
    env = user_env(tmp_path, hub, REDIS_URL=broker.url, BEATBUS_METRICS_ADDR="off")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    with open(api_log, "wb") as alog, open(worker_log, "wb") as wlog, \
            httpx.Client(base_url=api_url, timeout=30, trust_env=False) as http:
        api = spawn("api", "--port", str(port), env=env, log=alog)
        worker = None
        try:
            wait_for(lambda: _up(http), 60, "the API")
            r = http.post("/api/generate", json={"kind": "lstm", "tempo": 100, "bars": 4})
            assert r.status_code == 503, r.text                             # no worker at all yet
            assert r.json()["detail"] == ("no live worker can run lstm: no `beatbus worker` serves queue "
                                          "'beatbus-generate'")

            worker = spawn("worker", env=env, log=wlog)                       # defaults, as the README runs it
            wait_for(lambda: b"worker ready" in worker_log.read_bytes() or worker.poll() is not None, 120,
                     "the worker")
            assert worker.poll() is None, worker_log.read_text()

            r = http.post("/api/generate", json={"kind": "musicgen", "prompt": "lofi", "duration": 5})
            assert r.status_code == 503, r.text
            detail = r.json()["detail"]
            assert detail.startswith("no live worker can run musicgen: the 1 live worker(s) of queue "
                                     "'beatbus-generate' offer lstm"), detail
            r = http.post("/api/upload", files={"file": ("take.wav", _wav(tmp_path), "audio/wav")})
            assert r.status_code == 201 and r.json()["embedding"] is None     # stored; no CLAP job queued
            assert "no live worker can run clap" in r.json()["embedding_unavailable"]

            r = http.post("/api/generate", json={"kind": "lstm", "tempo": 100, "bars": 4, "seed": 2})
            assert r.status_code == 202, r.text
            good = r.json()["generation_id"]
            st = wait_for(lambda: (s := http.get(f"/api/status/{good}").json())["status"] in ("finished", "failed")
                          and s, 120, "the LSTM job")
            assert st["status"] == "finished", st
            mid = http.get(f"/api/download/{good}")
            assert mid.status_code == 200 and mid.headers["content-type"] == "audio/midi"
            (tmp_path / "x.mid").write_bytes(mid.content)
            score = converter.parse(tmp_path / "x.mid")
            assert [m.number for m in score.flatten().getElementsByClass(m21tempo.MetronomeMark)] == [100]

            # the CLI, queued for the worker: MIDI to --out, the rendering beside it (issue #15, item 13)
            if shutil.which("fluidsynth"):
                r = beatbus("generate", "lstm", "--render-audio", "--bars", "4", "--tempo", "120", "--seed", "1",
                            "--out", str(tmp_path / "cli.mid"), "--wait", "120", env=env)
                assert r.returncode == 0, r.stderr
                assert orjson.loads(r.stdout.strip().splitlines()[-1])["audio"] == str(tmp_path / "cli.wav")
                assert (tmp_path / "cli.mid").read_bytes()[:4] == b"MThd"
                x, sr = sf.read(tmp_path / "cli.wav")
                assert sr == 32000 and len(x) / sr >= 7.9

            # a job that fails: one line with its cause in the worker's log, no traceback
            queue = Queue("beatbus-generate", connection=_redis(broker), serializer=JSONSerializer)
            bad = queue.enqueue("beatbus.consumers.generate.jobs.run_generation", '{"id": 1}', job_id="bad-payload")
            wait_for(lambda: Job.fetch(bad.id, connection=queue.connection,
                                       serializer=JSONSerializer).get_status(refresh=True) == "failed", 60,
                     "the bad job to fail")
        finally:
            if worker is not None:
                assert stop(worker) == 0, worker_log.read_text()[-3000:]
            stop(api)
    log = worker_log.read_text()
    assert "Traceback" not in log and "Traceback" not in api_log.read_text(), log
    assert "model offered  kind=lstm" in log
    assert (f"model not offered  kind=musicgen reason=not in the Hugging Face cache and the Hugging Face hub at "
            f"{hub} is unreachable (ConnectionRefusedError") in log
    # rq's own chatter is gone: one line when a job starts, one when it ends (issue #15, item 14)
    about_good = [ln for ln in log.splitlines() if good in ln]
    assert [ln.split(": ", 1)[1].split("  ")[0] for ln in about_good] == ["job started", "job finished"], log
    about_bad = [ln for ln in log.splitlines() if "bad-payload" in ln]
    assert [ln.split(": ", 1)[1].split("  ")[0] for ln in about_bad] == ["job started", "generation job failed"], log
    assert "error=job payload is invalid" in about_bad[1]
    for rq_line in ("Job OK", "Result is kept", "Listening on", "cleaning registries", "Subscribing", "subscribing"):
        assert rq_line not in log, log


def _up(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def _redis(broker):
    import redis

    return redis.Redis.from_url(broker.url)


def _wav(tmp_path) -> bytes:
    import numpy as np

    path = tmp_path / "take.wav"
    t = np.arange(22050 * 2) / 22050
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    return path.read_bytes()
