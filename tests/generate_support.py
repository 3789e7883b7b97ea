"""Shared pieces of the generation tests: tiny models on disk, settings, a uvicorn server, a worker."""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import uvicorn

from beatbus.bus import Bus
from beatbus.config import load_settings
from consumers.generate.config import load_generate_config
from consumers.generate.jobs import WorkerContext, install_context
from consumers.generate.storage import Store
from consumers.generate.tiny import build_tiny_clap, build_tiny_musicgen, build_tiny_musicgen_melody
from consumers.generate.worker import GenerationWorker, set_torch_threads


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
