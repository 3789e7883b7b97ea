"""Shared pieces of the generation tests: tiny models on disk, settings, a uvicorn server, a worker."""
from __future__ import annotations

import contextlib
import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import soundfile as sf
import uvicorn

from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.generate.availability import KINDS
from beatbus.consumers.generate.config import load_generate_config
from beatbus.consumers.generate.jobs import WorkerContext, install_context
from beatbus.consumers.generate.storage import Store
from beatbus.consumers.generate.worker import GenerationWorker, set_torch_threads
from beatbus.lab.doubles.tiny_models import build_tiny_clap, build_tiny_musicgen, build_tiny_musicgen_melody


def build_models(root: Path) -> dict[str, Path]:
    """Tiny MusicGen, MusicGen-Melody and CLAP saved with save_pretrained under ``root``."""
    set_torch_threads(1)          # tiny models on shared cores: threads only add contention
    return {"musicgen": build_tiny_musicgen(root / "musicgen"),
            "melody": build_tiny_musicgen_melody(root / "melody"),
            "clap": build_tiny_clap(root / "clap")}


def gen_config(state: Path, models: dict[str, Path], **over):
    flags = {"state_dir": str(state), "musicgen_model": str(models["musicgen"]),
             "musicgen_melody_model": str(models["melody"]), "clap_model": str(models["clap"]),
             "heartbeat": 0.5, "abandon_after": 3.0, "retries": 1, "retry_interval": 0, "torch_threads": 1,
             "max_upload_bytes": 2 * 1024 * 1024, "max_upload_seconds": 30.0, "capture_seconds": 4.0, **over}
    return load_generate_config(flags, env={})


def gen_settings(broker):
    return load_settings({"redis_url": broker.url, "metrics_addr": "off", "heartbeat": 0.2, "lease_ttl": 1.0,
                          "block_ms": 100, "claim_idle_ms": 200}, env={})


def context(bus: Bus, broker, config) -> WorkerContext:
    ctx = WorkerContext(settings=gen_settings(broker), config=config, store=Store(config.state_path), bus=bus)
    install_context(ctx)
    return ctx


def work_burst(ctx: WorkerContext, bus: Bus) -> bool:
    """Run every queued job in this process (rq SimpleWorker semantics, on the real broker)."""
    return GenerationWorker([ctx.config.queue], connection=bus.redis, context=ctx).work(burst=True,
                                                                                        logging_level="WARNING")


@contextlib.contextmanager
def offering(ctx: WorkerContext, bus: Bus, kinds=KINDS):
    """A registered, heartbeating, idle GenerationWorker that offers ``kinds``: what the API, the CLI
    and the stream service look for before they queue a job (:func:`work_burst` then runs the jobs)."""
    worker = GenerationWorker([ctx.config.queue], connection=bus.redis, context=ctx, models=kinds)
    worker.register_birth()
    stop = threading.Event()

    def beat():
        while not stop.wait(5.0):
            worker.heartbeat()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(5)
        worker.register_death()


def to_hf_cache(model_dir: Path, hf_home: Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """Copy a save_pretrained directory into the Hugging Face cache layout under ``hf_home`` as ``repo_id``
    (hub/models--ORG--NAME/snapshots/REV + refs/main), as a download would leave it."""
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo


class FakeHub:
    """A loopback stand-in for the Hugging Face hub serving one model directory as ``repo_id``: the
    routes huggingface_hub's model_info, snapshot_download and hf_hub_download use (metadata, the
    recursive tree listing, HEAD/GET of each file). It records what was asked."""

    COMMIT = "1" * 40

    def __init__(self, model_dir: Path, repo_id: str):
        import hashlib
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        files = {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in sorted(model_dir.rglob("*"))
                 if p.is_file()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None, *, send_body=True):
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def _serve(self, send_body: bool):
                path = self.path.split("?")[0]
                hub.requests.append(f"{self.command} {path}")
                api, resolve = f"/api/models/{repo_id}", f"/{repo_id}/resolve/"
                if path in (api, f"{api}/revision/main"):
                    doc = {"id": repo_id, "sha": hub.COMMIT, "siblings": [{"rfilename": f} for f in files]}
                    return self._reply(200, orjson.dumps(doc), {"Content-Type": "application/json"})
                if path.startswith(f"{api}/tree/"):
                    doc = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                           for f, b in files.items()]
                    return self._reply(200, orjson.dumps(doc), {"Content-Type": "application/json"})
                if path.startswith(resolve) and path[len(resolve):].partition("/")[2] in files:
                    body = files[path[len(resolve):].partition("/")[2]]
                    return self._reply(200, body, {"X-Repo-Commit": hub.COMMIT,
                                                   "ETag": f'"{hashlib.sha256(body).hexdigest()}"'},
                                       send_body=send_body)
                self._reply(404, b"", {"X-Error-Code": "EntryNotFound"})

            def do_GET(self):  # noqa: N802
                self._serve(True)

            def do_HEAD(self):  # noqa: N802
                self._serve(False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def tone(seconds: float, sr: int = 22050, freqs=(220.0, 261.63, 329.63), amp: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)).astype(np.float32)


def encode(x: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


class UvicornThread:
    """A real uvicorn server for ``app`` on 127.0.0.1:``port`` in a background thread."""

    def __init__(self, app, port: int):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
