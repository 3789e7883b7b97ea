"""``beatbus bench bus``: publish-to-consume latency and throughput on loopback.

Brokers measured side by side in one run: the embedded server (unix socket) and, when
``redis-server`` is installed, a plain Redis on a unix socket and on TCP loopback, and (with
``redis-cli`` too) a local Redis Cluster of 3 masters + 3 replicas on TCP loopback.
Two phases per broker: *throughput* (one XADD per BeatEvent, as fast as one publisher
can, a reader draining concurrently) and *latency* (paced at ``rate`` events/s); each with the
events on one source, and spread over ``sources`` sources followed by one reader (what a
processor or LED consumer of many sources does: on a cluster, one XREAD thread per source's slot).
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from beatbus.broker import EmbeddedBroker
from beatbus.bus import Bus, Reader
from beatbus.errors import BrokerError
from beatbus.progress import Progress
from beatbus.schemas import BeatEvent, decode

from .cluster import LocalCluster, free_port

__all__ = ["bench_bus", "measure"]


def _event(i: int) -> BeatEvent:
    now = time.time()
    return BeatEvent(source="bench", timestamp=i * 0.5, system_time=now, is_downbeat=i % 4 == 0,
                     bpm=120.0, intensity=0.5, confidence=0.9, beat=i, beat_in_bar=i % 4 + 1,
                     bar=i // 4, meter=4, next_beat_time=i * 0.5 + 0.5, next_beat_system_time=now + 0.5,
                     emitted_at=now)


def measure(url: str, *, events: int, rate: float | None, sources: int = 1) -> dict:
    """Publish ``events`` BeatEvents round-robin over ``sources`` sources' streams (paced at
    ``rate``/s, or unpaced if None) and time their receipt by one reader of them all."""
    pub, sub = Bus.connect(url, name="bench-pub"), Bus.connect(url, name="bench-sub")
    run = time.monotonic_ns()
    streams = [f"bb:{{bench{k}}}:beats:{run}" for k in range(sources)]
    reader = Reader(sub, streams, block_ms=200)
    latencies: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while len(latencies) < events and not done.is_set():
            for _, _, fields in reader.read(count=1000):
                ev = decode(fields[b"d"], BeatEvent)
                latencies.append(time.time() - ev.emitted_at)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    start = time.perf_counter()
    for i in range(events):
        if rate:
            due = start + i / rate
            while (d := due - time.perf_counter()) > 0:
                time.sleep(min(d, 0.002))
        pub.publish(streams[i % sources], _event(i), maxlen=100000)
    t.join(timeout=30)
    done.set()
    elapsed = time.perf_counter() - start
    reader.close()
    for stream in streams:
        pub.redis.delete(stream)
    pub.close(), sub.close()
    lat = np.array(latencies) * 1e3
    return {"events": len(lat), "events_per_s": len(lat) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}


def _redis_server(tmp: Path):
    """Start Debian's redis-server on a unix socket and a loopback port (None if absent)."""
    binary = shutil.which("redis-server")
    if not binary:
        return None, []
    port, sock = free_port(), tmp / "redis.sock"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(sock),
                             "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            Bus.connect(url).close()
            break
        except BrokerError:       # not listening yet
            time.sleep(0.02)
    return proc, [("redis-server (unix)", f"unix://{sock}"), ("redis-server (tcp)", url)]


def bench_bus(*, events: int = 20000, rate: float = 1000.0, sources: int = 30, json_path: str | None = None) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="beatbus-bench-") as tmp, EmbeddedBroker() as embedded, \
            contextlib.ExitStack() as stack:
        proc, others = _redis_server(Path(tmp))
        if proc is not None:
            stack.callback(_stop, proc)
        brokers = [("embedded valkey (unix)", embedded.url), *others]
        if others and shutil.which("redis-cli"):
            cluster = stack.enter_context(LocalCluster(Path(tmp) / "cluster"))
            brokers.append(("Redis Cluster 3+3 (tcp)", cluster.url))
        spreads = [1, sources] if sources > 1 else [1]
        with Progress("bench bus", 2 * len(brokers) * len(spreads), "phases") as bar:
            for name, url in brokers:
                for n in spreads:
                    bar.set(bar.done, note=f"{name}, {n} source(s): {events} events unpaced")
                    thr = measure(url, events=events, rate=None, sources=n)
                    paced = max(500, min(events, int(rate * 3)))
                    bar.set(bar.done + 1, note=f"{name}, {n} source(s): {paced} events at {rate:.0f}/s")
                    lat = measure(url, events=paced, rate=rate, sources=n)
                    bar.update(1)
                    results.append({"broker": name, "sources": n, "throughput": thr, "latency": lat})
    print(f"bus benchmark: BeatEvent JSON, 1 publisher + 1 reader, {events} events unpaced; "
          f"latency phase paced at {rate:.0f}/s; events on 1 source or round-robin over {sources}")
    print("| broker | sources | events/s (unpaced) | p50 ms (unpaced) | p99 ms (unpaced) | p50 ms (paced) | p99 ms (paced) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        t, lat = r["throughput"], r["latency"]
        print(f"| {r['broker']} | {r['sources']} | {t['events_per_s']:.0f} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | "
              f"{lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} |")
    if not others:
        print("(redis-server not installed: only the embedded broker was measured)")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps({"results": results}, option=orjson.OPT_INDENT_2))
    return 0


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(5)
