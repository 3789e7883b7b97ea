"""``beatbus bench trigger``: BeatEvent emission -> trigger arrival at the receiver, on loopback.

``sources`` sources each publish BeatEvents at ``rate`` beats/s (phases staggered) to an
embedded broker; one :class:`~consumers.trigger.service.TriggerService` (``basic`` pattern:
one trigger per beat) posts to the reference receiver running in its own process. Latency is
the receiver's arrival time minus the beat's ``emitted_at`` (same host clock). The first
second of beats warms the connection pool up and is not measured.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import orjson

from beatbus import keys
from beatbus.broker import EmbeddedBroker
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.trigger.config import load_trigger_config
from beatbus.consumers.trigger.service import TriggerService
from beatbus.schemas import BeatEvent

__all__ = ["bench_trigger", "measure_trigger_latency"]


def _beat(source: str, i: int, rate: float) -> BeatEvent:
    now = time.time()
    return BeatEvent(source=source, timestamp=i / rate, system_time=now, is_downbeat=i % 4 == 0,
                     bpm=60.0 * rate, intensity=0.5, confidence=0.9, beat=i, beat_in_bar=i % 4 + 1,
                     bar=i // 4, meter=4, next_beat_time=(i + 1) / rate, next_beat_system_time=now + 1 / rate,
                     emitted_at=now, backend="bench")


def _start_receiver() -> tuple[subprocess.Popen, str]:
    """The reference receiver in its own process (so it does not share our GIL)."""
    proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "dev", "error-generator", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_")})
    line = proc.stdout.readline()
    if "=" not in line:
        proc.kill()
        raise RuntimeError(f"reference receiver did not start: {line!r}")
    return proc, line.split("=", 1)[1].split()[0]


def measure_trigger_latency(redis_url: str, receiver_url: str, *, sources: int, rate: float,
                            duration: float) -> dict:
    """Run one measurement; returns counts and latency percentiles (ms)."""
    settings = load_settings({"redis_url": redis_url, "metrics_addr": "off", "block_ms": 500}, env={})
    config = load_trigger_config({"url": receiver_url, "max_age": 5.0, "sections": {"unknown": "basic"}}, env={})
    names = [f"bench{k}" for k in range(sources)]
    bus = Bus.connect(redis_url, name="bench-trigger")
    for name in names:
        bus.redis.delete(keys.stream(name, "beats"))
    svc = TriggerService(Bus.connect(redis_url, name="bench-trigger-svc"), settings=settings, config=config,
                         sources=names)
    stop = threading.Event()
    thread = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    thread.start()
    svc.ready.wait(10)
    httpx.delete(f"{receiver_url}/received", trust_env=False)
    emitted: dict[str, float] = {}
    warmup = int(rate)                  # the first second opens connections: not measured
    schedule = sorted((k / (sources * rate) + i / rate, k, i) for k in range(sources)
                      for i in range(warmup + int(duration * rate)))
    start = time.perf_counter()
    for due, k, i in schedule:
        while (d := start + due - time.perf_counter()) > 0:
            time.sleep(min(d, 0.002))
        ev = _beat(names[k], i, rate)
        entry = bus.publish(keys.stream(names[k], "beats"), ev, maxlen=100000)
        if i >= warmup:
            emitted[f"{names[k]}:{entry}:0"] = ev.emitted_at
    deadline = time.monotonic() + 5
    received: list[dict] = []
    while time.monotonic() < deadline:
        received = httpx.get(f"{receiver_url}/received", trust_env=False).json()
        if sum(r["status"] == 200 and r["idempotency_key"] in emitted for r in received) >= len(emitted):
            break
        time.sleep(0.1)
    stop.set()
    thread.join(10)
    lat = np.array([r["arrived_at"] - emitted[r["idempotency_key"]] for r in received
                    if r["status"] == 200 and r["idempotency_key"] in emitted]) * 1e3
    keys_seen = [r["idempotency_key"] for r in received if r["idempotency_key"] in emitted]
    bus.close()
    svc.bus.close()
    return {"sources": sources, "beats_per_s": rate, "triggers": len(emitted), "arrived": len(lat),
            "duplicates": len(keys_seen) - len(set(keys_seen)),
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "max_ms": float(lat.max()) if len(lat) else None, "outcomes": dict(svc.outcomes)}


def bench_trigger(*, sources: int = 10, rate: float = 4.0, duration: float = 15.0, json_path: str | None = None) -> int:
    """Print the latency table (and write JSON); returns a process exit code."""
    proc, url = _start_receiver()
    try:
        with EmbeddedBroker() as broker:
            result = measure_trigger_latency(broker.url, url, sources=sources, rate=rate, duration=duration)
    finally:
        proc.terminate()
        proc.wait(5)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    # a markdown table, as every other benchmark prints (the README's rows are pasted from it)
    print("trigger latency: BeatEvent emitted_at -> reference receiver arrival (loopback, embedded broker)\n")
    print("| sources | beats/s each | triggers | arrived | duplicates | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {result['sources']} | {result['beats_per_s']:.1f} | {result['triggers']} | {result['arrived']} | "
          f"{result['duplicates']} | {fmt(result['p50_ms'])} | {fmt(result['p99_ms'])} | {fmt(result['max_ms'])} |")
    if json_path:
        with open(json_path, "wb") as f:
            f.write(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if result["arrived"] == result["triggers"] else 1
