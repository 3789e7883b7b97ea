"""``beatbus bench load`` and ``beatbus bench soak``: the pipeline as real processes, measured.

load
    ``sources`` real-time sources (one :mod:`lab.bench.loadgen` process publishing them all)
    through ``processors`` ``beatbus process`` daemons, started as a user starts them (the
    console script, a default environment: no ``BEATBUS_*`` setting, no thread-pool variable),
    once per source count until one does not keep up. Reports CPU and RSS per process (from
    ``/proc``), CPU per source and sources per core,
    checkpoint lag (newest audio id minus the processor's checkpoint), capture-to-event
    latency (``emitted_at - system_time`` of every BeatEvent: what a light or trigger waits
    for, the tracker's look-ahead included) and delivery latency (read by a fan-out reader
    minus ``emitted_at``). The first ``warmup`` seconds (lease pick-up, tracker convergence)
    are not measured. ``adaptive`` runs each count with the processors' adaptive quality on,
    off (``--no-adaptive``) or both, and reports the sources at each quality level at the end
    (the processors' ``beatbus_quality_level`` gauges; the levels: :func:`processors.beat.adaptive.levels_for`).
soak
    The full pipeline on a looped file for ``minutes``: producer, beat, intensity and
    structure processors, trigger consumer -> reference receiver, LED consumer -> a UDP
    sink, and the exporter (whose /metrics the soak reads for lag). RSS, CPU, lag and
    latency are sampled every ``sample`` seconds; RSS growth after warm-up must stay within
    the stated bound (exit 1 otherwise).

Both start a private broker (Debian's ``redis-server`` when installed, else the embedded
one) and print Markdown tables. They are benchmarks: numbers depend on the machine.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from beatbus import keys
from beatbus.broker import EmbeddedBroker
from beatbus.bus import Bus, Reader
from beatbus.config import Settings
from beatbus.errors import SchemaError
from beatbus.processors.beat.adaptive import levels_for
from beatbus.progress import Progress
from beatbus.runtime import die_with
from beatbus.schemas import BeatEvent, decode
from beatbus.threads import POOL_VARS

from .cluster import LocalCluster

__all__ = ["bench_load", "bench_soak", "ProcessProbe", "rss_growth_bound_mb"]

ROOT = Path(__file__).resolve().parents[2]
_TICK = os.sysconf("SC_CLK_TCK")
_METRICS_URL = re.compile(rb"http://127\.0\.0\.1:(\d+)/metrics")  # the daemon's "metrics served" log line


def rss_growth_bound_mb(baseline_mb: float) -> float:
    """Allowed RSS growth of one daemon after warm-up: 16 MB or 10 % of its size, whichever is larger."""
    return max(16.0, 0.10 * baseline_mb)


# -- processes ------------------------------------------------------------------------------
@dataclass
class ProcessProbe:
    """A child process with CPU (from /proc/PID/stat) and RSS (VmRSS) readings."""

    name: str
    proc: subprocess.Popen
    log: Path
    serves_metrics: bool = False
    _metrics_port: int | None = None
    _cpu0: float = 0.0
    _t0: float = 0.0

    @property
    def metrics_port(self) -> int | None:
        """The port the process bound for /metrics, read from its log (None before it said so)."""
        if self.serves_metrics and self._metrics_port is None:
            with contextlib.suppress(OSError):
                found = _METRICS_URL.search(self.log.read_bytes())
                self._metrics_port = int(found[1]) if found else None
        return self._metrics_port

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _TICK

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def mark(self) -> None:
        self._cpu0, self._t0 = self.cpu_seconds(), time.monotonic()

    def cpu_percent(self) -> float:
        """Percent of one core since :meth:`mark`."""
        dt = time.monotonic() - self._t0
        return 100.0 * (self.cpu_seconds() - self._cpu0) / dt if dt > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value from the process's /metrics ({} when unavailable)."""
        if not self.metrics_port:
            return {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _env(url: str, **extra: str) -> dict[str, str]:
    """A user's default environment: no beatbus setting (the default log level, info, says which
    port /metrics got) and no thread-pool override of this shell (the daemons size their pools
    themselves, beatbus/threads.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k not in ("REDIS_URL",
                                                                                            "NOTIFY_SOCKET", *POOL_VARS)}
    env.update({"REDIS_URL": url, "PYTHONUNBUFFERED": "1", **extra})
    return env


class _Fleet:
    """The child processes of one benchmark run (all stopped on exit)."""

    def __init__(self, url: str, tmp: Path):
        self.url, self.tmp = url, tmp
        self.probes: list[ProcessProbe] = []

    def spawn(self, name: str, args: list[str], *, module: str = "beatbus.cli", metrics: bool = True,
              **env: str) -> ProcessProbe:
        # port 0: the kernel picks a free port at bind time (a port picked here first could be
        # taken before the daemon binds it); the daemon logs the one it got
        extra = {"BEATBUS_METRICS_ADDR": "127.0.0.1:0" if metrics else "off", **env}
        log = self.tmp / f"{name}.log"
        # the console script a user runs (`beatbus process ...`), else the module
        script = Path(sys.executable).with_name("beatbus")
        argv = [str(script)] if module == "beatbus.cli" and script.exists() else [sys.executable, "-m", module]
        # its own session (a Ctrl-C at the bench's terminal is the bench's to handle), and SIGTERM when the
        # bench dies, even by SIGKILL: an orphaned load generator would go on loading the machine
        with open(log, "wb") as out:
            proc = subprocess.Popen([*argv, *args], env=_env(self.url, **extra), cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=functools.partial(die_with, os.getpid()))
        probe = ProcessProbe(name, proc, log, serves_metrics=metrics)
        self.probes.append(probe)
        return probe

    def check_alive(self) -> None:
        for p in self.probes:
            if p.proc.poll() is not None:
                tail = p.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for p in reversed(self.probes):
            p.stop()


@dataclass
class _Broker:
    """The private broker of a run: its URL, its name in the tables and its server processes."""

    url: str
    name: str
    procs: list[subprocess.Popen]

    def probe(self, tmp: Path) -> ProcessProbe | _ProbeGroup:
        parts = [ProcessProbe("broker", p, tmp / "broker.log") for p in self.procs]
        return parts[0] if len(parts) == 1 else _ProbeGroup("broker", parts)


@dataclass
class _ProbeGroup:
    """Several processes read as one (a cluster's nodes): CPU and RSS summed."""

    name: str
    parts: list[ProcessProbe]

    def mark(self) -> None:
        for p in self.parts:
            p.mark()

    def cpu_percent(self) -> float:
        return sum(p.cpu_percent() for p in self.parts)

    def rss_mb(self) -> float:
        return sum(p.rss_mb() for p in self.parts)


@contextlib.contextmanager
def _broker(kind: str = "single", tmp: Path | None = None):
    """A private broker. ``single``: on a unix socket, redis-server if installed, else the embedded
    Valkey; ``cluster``: a :class:`~lab.bench.cluster.LocalCluster` (3 masters + 3 replicas on TCP)."""
    if kind == "cluster":
        with LocalCluster(Path(tempfile.mkdtemp(prefix="beatbus-cluster-", dir=tmp))) as cluster:
            yield _Broker(cluster.url, "Redis Cluster 3+3", list(cluster.procs.values()))
        return
    binary = shutil.which("redis-server")
    with EmbeddedBroker(binary=binary) as broker:
        yield _Broker(broker.url, "redis-server" if binary else "embedded valkey", [broker.proc])


# -- beats tap ------------------------------------------------------------------------------
class BeatTap:
    """A fan-out reader of every source's beats, recording latencies (seconds)."""

    def __init__(self, url: str, sources: list[str]):
        self.bus = Bus.connect(url, name="bench-tap")
        self.reader = Reader(self.bus, [keys.stream(s, keys.StreamKind.BEATS) for s in sources], block_ms=200)
        self.capture: list[float] = []        # emitted_at - system_time
        self.delivery: list[float] = []       # read - emitted_at
        self.beats = 0
        self.recording = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beat-tap", daemon=True)

    def start(self) -> BeatTap:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                entries = self.reader.read(count=2000)
            except Exception:  # noqa: BLE001 - a benchmark reader: keep going
                time.sleep(0.1)
                continue
            now = time.time()
            for _, _, fields in entries:
                try:
                    ev = decode(fields[b"d"])
                except (KeyError, SchemaError):
                    continue
                if isinstance(ev, BeatEvent) and self.recording:
                    self.beats += 1
                    self.capture.append(ev.emitted_at - ev.system_time)
                    self.delivery.append(now - ev.emitted_at)

    def window(self) -> tuple[list[float], list[float]]:
        """Latencies since the last call (and forget them)."""
        c, d = self.capture, self.delivery
        self.capture, self.delivery = [], []
        return c, d

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.reader.close()     # its slot threads (a cluster), else they read on while the broker stops
        self.bus.close()


def _pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q)) if len(xs) else float("nan")


def _checkpoint_lags(bus: Bus, sources: list[str], role: str = "beat") -> list[float]:
    """Seconds between each source's newest audio id and the role's checkpoint."""
    pipe = bus.redis.pipeline(transaction=False)
    for s in sources:
        pipe.xinfo_stream(keys.stream(s, keys.StreamKind.AUDIO))
        pipe.get(keys.checkpoint(s, role))
    values = pipe.execute(raise_on_error=False)
    lags = []
    for info, ckpt in zip(values[::2], values[1::2]):
        if isinstance(info, dict) and ckpt:
            last = int(info["last-generated-id"].split(b"-")[0])
            lags.append(max(0.0, (last - int(ckpt.split(b"-")[0])) / 1000))
    return lags


def _wait(cond, timeout: float, what: str, fleet: _Fleet) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _sum_metric(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


# -- load -----------------------------------------------------------------------------------
P99_TARGET_MS = 150.0        # capture-to-event p99 under which a run counts as served in real time


def _load_once(sources: int, *, processors: int, duration: float, warmup: float, backend: str | None,
               file: str | None, assign: str, broker_kind: str = "single", adaptive: bool | None = None) -> dict:
    """One load run of ``sources`` sources; its measurements (see the module docstring)."""
    names = [f"load-{i:03d}" for i in range(sources)]
    with tempfile.TemporaryDirectory(prefix="beatbus-load-") as tmp, _broker(broker_kind, Path(tmp)) as broker:
        tmp, broker_name = Path(tmp), broker.name
        fleet = _Fleet(broker.url, tmp)
        bus = Bus.connect(broker.url, name="bench")
        tap = None
        try:
            procs = []
            for k in range(processors):
                args = ["process", *(["--backend", backend] if backend else [])]
                if adaptive is not None:
                    args.append("--adaptive" if adaptive else "--no-adaptive")
                if assign == "shard":
                    args += ["--sources", *names[k::processors]]
                procs.append(fleet.spawn(f"processor-{k + 1}", args))
            _wait(lambda: all(p.metrics() for p in procs), 90, "the processors' /metrics", fleet)
            gen_args = ["--sources", str(sources), "--prefix", "load", *(["--file", file] if file else [])]
            loadgen = fleet.spawn("loadgen", gen_args, module="beatbus.lab.bench.loadgen", metrics=False)
            owners = lambda: [bus.redis.get(keys.lease(s, "beat")) for s in names]   # noqa: E731
            _wait(lambda: all(owners()), 60, f"all {sources} sources to be leased", fleet)
            tap = BeatTap(broker.url, names).start()
            time.sleep(warmup)
            fleet.check_alive()
            everyone = [*procs, loadgen, broker.probe(tmp)]
            for p in everyone:
                p.mark()
            before = [p.metrics() for p in procs]
            tap.recording = True
            lags: list[float] = []
            started = time.monotonic()
            while time.monotonic() - started < duration:
                time.sleep(1.0)
                fleet.check_alive()
                lags += _checkpoint_lags(bus, names)
            tap.recording = False
            cpu = {p.name: p.cpu_percent() for p in everyone}
            rss = {p.name: p.rss_mb() for p in everyone}
            after = [p.metrics() for p in procs]
            held = {}
            for o in owners():
                held[o] = held.get(o, 0) + 1
        finally:
            if tap is not None:
                tap.close()
            fleet.stop()
            bus.close()
    dropped = [_sum_metric(a, "beatbus_frames_dropped_total") - _sum_metric(b, "beatbus_frames_dropped_total")
               for a, b in zip(after, before)]
    leases = [int(a.get('beatbus_leases_held{role="beat"}', 0)) for a in after]
    consumed = 'beatbus_events_consumed_total{kind="audio"}'
    frames = [a.get(consumed, 0) - b.get(consumed, 0) for a, b in zip(after, before)]
    audio_s = [f * 441 / 22050 for f in frames]                    # seconds of audio each processor consumed
    cost = [cpu[p.name] / 100 * duration / a * 1000 if a else float("nan") for p, a in zip(procs, audio_s)]
    realtime = [a / (duration * max(1, n)) for a, n in zip(audio_s, leases)]
    defaults = Settings()                # what the daemons run with where the bench sets nothing
    backend = backend or defaults.backend
    level_names = levels_for(backend)
    levels = [0] * len(level_names)      # sources at each quality level (no gauge: adaptation off, level 0)
    for a in after:
        for name, value in a.items():
            if name.startswith("beatbus_quality_level{") and 0 < value < len(levels):
                levels[int(value)] += 1
    levels[0] = sum(leases) - sum(levels[1:])
    capture, delivery = tap.capture, tap.delivery
    proc_cpu = sum(cpu[p.name] for p in procs)                     # % of one core, all processors
    p99 = 1e3 * _pct(capture, 99)
    return {
        "sources": sources, "processors": processors, "backend": backend, "assign": assign,
        "adaptive": defaults.adaptive if adaptive is None else adaptive, "quality_levels": levels,
        "quality_level_names": level_names,
        "duration_s": duration, "broker": broker_name, "cores": os.cpu_count(), "load_average": os.getloadavg()[0],
        "file": file, "process_names": [p.name for p in procs],
        "cpu_percent": cpu, "rss_mb": rss, "leases": leases, "beats": tap.beats,
        "audio_seconds_consumed": audio_s, "cpu_ms_per_audio_second": cost, "realtime": realtime,
        "processor_cpu_percent": proc_cpu, "cpu_percent_per_source": proc_cpu / sources,
        "sources_per_core": 100.0 * sources / proc_cpu if proc_cpu > 0 else float("nan"),
        "beats_per_s": tap.beats / duration, "frames_dropped": dropped,
        "capture_latency_ms": {q: 1e3 * _pct(capture, q) for q in (50, 99)},
        "capture_latency_max_ms": 1e3 * max(capture, default=float("nan")),
        "delivery_latency_ms": {q: 1e3 * _pct(delivery, q) for q in (50, 99)},
        "delivery_latency_max_ms": 1e3 * max(delivery, default=float("nan")),
        "checkpoint_lag_s": {"p50": _pct(lags, 50), "p99": _pct(lags, 99), "max": max(lags, default=float("nan"))},
        "lease_holders": len(held),
        "keeps_up": bool(min(realtime) >= 0.98 and sum(dropped) == 0 and p99 < P99_TARGET_MS),
    }


def _print_run(r: dict) -> None:
    """The tables of one run: per process, then latencies."""
    n, cpu, rss = r["sources"], r["cpu_percent"], r["rss_mb"]
    print(f"\n## {n} real-time sources ({'a looped file' if r['file'] else 'click tracks'}) -> {r['processors']} x "
          f"`beatbus process` ({r['backend']}, {r['assign']}, adaptive {'on' if r['adaptive'] else 'off'}), "
          f"{r['broker']}, {r['duration_s']:.0f} s measured, "
          f"load average {r['load_average']:.1f} on {r['cores']} cores")
    print("\n| process | CPU (% of one core) | RSS (MB) | sources owned | audio consumed (x real time) | "
          "CPU ms per audio second | frames lost (gaps) |")
    print("|---|---|---|---|---|---|---|")
    for i, name in enumerate(r["process_names"]):
        print(f"| {name} | {cpu[name]:.0f} | {rss[name]:.0f} | {r['leases'][i]} | {r['realtime'][i]:.2f} | "
              f"{r['cpu_ms_per_audio_second'][i]:.1f} | {r['frames_dropped'][i]:.0f} |")
    print(f"| loadgen ({n} producers) | {cpu['loadgen']:.0f} | {rss['loadgen']:.0f} | - | - | - | - |")
    print(f"| {r['broker']} | {cpu['broker']:.0f} | {rss['broker']:.0f} | - | - | - | - |")
    cap, dl, cl = r["capture_latency_ms"], r["delivery_latency_ms"], r["checkpoint_lag_s"]
    print("\n| measure | p50 | p99 | max |")
    print("|---|---|---|---|")
    print(f"| capture-to-event latency (ms) | {cap[50]:.0f} | {cap[99]:.0f} | {r['capture_latency_max_ms']:.0f} |")
    print(f"| emitted-to-read latency (ms) | {dl[50]:.1f} | {dl[99]:.1f} | {r['delivery_latency_max_ms']:.1f} |")
    print(f"| checkpoint lag (s) | {cl['p50']:.2f} | {cl['p99']:.2f} | {cl['max']:.2f} |")
    at = ", ".join(f"{n} at {i} ({name})" for i, (n, name) in enumerate(zip(r["quality_levels"], r["quality_level_names"])))
    print(f"\nquality levels at the end (sources): {at}")
    print(f"\n{r['beats']} beats ({r['beats_per_s']:.1f}/s); {r['cpu_percent_per_source']:.2f} % of a core per source: "
          f"{r['sources_per_core']:.0f} sources per core at this cost; "
          f"{'keeps up' if r['keeps_up'] else 'does NOT keep up'} (x real time >= 0.98, no gaps, "
          f"p99 < {P99_TARGET_MS:.0f} ms)", flush=True)


def bench_load(*, sources: int | list[int] = 50, processors: int = 1, duration: float = 60.0, warmup: float = 15.0,
               backend: str | None = None, file: str | None = None, assign: str = "shard",
               cluster: bool = False, json_path: str | None = None, adaptive: str = "default") -> int:
    """Run the load benchmark at each source count (ascending; stops after the first that does not keep
    up: that is where it saturates) and print the tables of each run, then a summary. ``cluster``:
    each count on a single node and then on a local Redis Cluster, side by side. ``adaptive``: the
    processors' adaptive quality ``on``, ``off``, ``both`` (each count twice: on, then off) or
    ``default`` (not passed)."""
    if adaptive not in ("default", "on", "off", "both"):
        raise ValueError(f"adaptive={adaptive!r} must be default, on, off or both")
    modes = {"default": [None], "on": [True], "off": [False], "both": [True, False]}[adaptive]
    counts = sorted({sources} if isinstance(sources, int) else set(sources))
    results = []
    for kind in ("single", "cluster") if cluster else ("single",):
        for n in counts:
            for mode in modes:
                results.append(_load_once(n, processors=processors, duration=duration, warmup=warmup,
                                          backend=backend, file=file, assign=assign, broker_kind=kind,
                                          adaptive=mode))
                _print_run(results[-1])
            if not any(r["keeps_up"] for r in results[-len(modes):]):
                break
    print(f"\n## Summary: {processors} x `beatbus process` ({results[0]['backend']}), started as the CLI starts it, "
          f"default environment\n")
    print("| broker | sources | processor CPU (% of one core) | CPU per source (% of a core) | sources per core | "
          "x real time (worst) | frames lost | capture-to-event p50 (ms) | p99 (ms) | broker CPU (%) | keeps up | "
          f"adaptive | sources per level at the end ({', '.join(results[0]['quality_level_names'])}) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lv = ", ".join(str(n) for n in r["quality_levels"])
        print(f"| {r['broker']} | {r['sources']} | {r['processor_cpu_percent']:.0f} | {r['cpu_percent_per_source']:.2f} | "
              f"{r['sources_per_core']:.0f} | {min(r['realtime']):.2f} | {sum(r['frames_dropped']):.0f} | "
              f"{r['capture_latency_ms'][50]:.0f} | {r['capture_latency_ms'][99]:.0f} | "
              f"{r['cpu_percent']['broker']:.0f} | {'yes' if r['keeps_up'] else 'no'} | "
              f"{'on' if r['adaptive'] else 'off'} | {lv} |")
    for name, on in dict.fromkeys((r["broker"], r["adaptive"]) for r in results):
        runs = [r for r in results if r["broker"] == name and r["adaptive"] == on]
        kept = [r["sources"] for r in runs if r["keeps_up"]]
        failed = [r["sources"] for r in runs if not r["keeps_up"]]
        label = f"{name}, adaptive {'on' if on else 'off'}"
        if failed:
            print(f"\n{label}: saturates between {max(kept) if kept else 0} and {failed[0]} sources")
        else:
            print(f"\n{label}: keeps up at every count measured (up to {runs[-1]['sources']} sources): "
                  "saturation is above that")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                                                 | orjson.OPT_SERIALIZE_NUMPY))
    return 0


# -- soak -----------------------------------------------------------------------------------
def _default_track(tmp: Path) -> str:
    """A 30 s click track written as a WAV (the soak loops a real file through the file producer)."""
    import soundfile as sf

    from beatbus.producers import ClickSource

    x = np.concatenate([c.samples for c in ClickSource(124, realtime=False, duration=30.0)])
    path = tmp / "click-124.wav"
    sf.write(path, x, 22050)
    return str(path)


class _UdpSink:
    """Counts datagrams (the LED consumer's DDP frames) on a loopback port."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.sock.recv(65536)
                self.count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def bench_soak(*, minutes: float = 10.0, file: str | None = None, sample: float = 10.0, warmup: float | None = None,
               backend: str = "dsp", json_path: str | None = None) -> int:
    """Run the soak and print its tables; returns 1 when a daemon's RSS grew past the bound."""
    from beatbus.lab.doubles.error_generator import ReferenceReceiver

    total = minutes * 60.0
    warmup = warmup if warmup is not None else min(60.0, 0.25 * total)
    source = "soak"
    with tempfile.TemporaryDirectory(prefix="beatbus-soak-") as tmp, _broker() as broker, \
            ReferenceReceiver() as receiver:
        tmp, broker_name = Path(tmp), broker.name
        track = file or _default_track(tmp)
        sink = _UdpSink()
        fleet = _Fleet(broker.url, tmp)
        bus = Bus.connect(broker.url, name="bench")
        tap = None
        rows: list[dict] = []
        bar = Progress(f"bench soak: {minutes:g} min", total, "s")
        try:
            src = ["--sources", source]
            daemons = [
                fleet.spawn("processor", ["process", "--backend", backend, *src]),
                fleet.spawn("intensity", ["intensity", "run", *src]),
                fleet.spawn("structure", ["structure", "run", *src]),
                fleet.spawn("trigger", ["consume", "trigger", "--error-generator-url", receiver.url, "--max-age", "2",
                                        *src]),
                fleet.spawn("led", ["consume", "led", "--output", f"ddp://127.0.0.1:{sink.port}", "--no-check",
                                    "--source", source]),
                fleet.spawn("exporter", ["exporter"]),
            ]
            exporter = daemons[-1]
            _wait(lambda: all(p.metrics() for p in daemons if p.name != "led"), 120, "the daemons' /metrics", fleet)
            producer = fleet.spawn("producer", ["produce", "file", track, "--loop"], BEATBUS_SOURCE=source)
            daemons.insert(0, producer)
            tap = BeatTap(broker.url, [source]).start()
            tap.recording = True
            everyone = [*daemons, broker.probe(tmp)]
            for p in everyone:
                p.mark()
            started = time.monotonic()
            bar.set(0)
            while (elapsed := time.monotonic() - started) < total:
                time.sleep(min(sample, max(0.1, total - elapsed)))
                fleet.check_alive()
                bar.clear()          # the sample line below goes to stderr too
                m = exporter.metrics()
                capture, delivery = tap.window()
                row = {"t": round(time.monotonic() - started),
                       "rss": {p.name: round(p.rss_mb(), 1) for p in everyone},
                       "cpu": {p.name: round(p.cpu_percent(), 1) for p in everyone},
                       "ckpt_lag": {r: m.get(f'beatbus_checkpoint_lag_seconds{{role="{r}",source="{source}"}}')
                                    for r in ("beat", "intensity", "structure")},
                       "trigger_lag": m.get(f'beatbus_group_lag_seconds{{group="trigger",kind="beats",'
                                            f'source="{source}"}}'),
                       "capture_p50_ms": 1e3 * _pct(capture, 50), "capture_p99_ms": 1e3 * _pct(capture, 99),
                       "beats": len(capture), "triggers": len(receiver.received()), "led_frames": sink.count}
                for p in everyone:
                    p.mark()
                rows.append(row)
                print(f"t={row['t']:5d}s rss " + " ".join(f"{k}={v:.0f}" for k, v in row["rss"].items())
                      + f"  beat lag {row['ckpt_lag']['beat']}  p50 {row['capture_p50_ms']:.0f} ms",
                      file=sys.stderr, flush=True)
                bar.set(time.monotonic() - started)
        finally:
            bar.close()
            if tap is not None:
                tap.close()
            fleet.stop()
            bus.close()
            sink.close()
    measured = [r for r in rows if r["t"] >= warmup] or rows[-1:]
    names = list(rows[0]["rss"]) if rows else []
    growth, verdicts = {}, {}
    for name in names:
        base, last = measured[0]["rss"][name], measured[-1]["rss"][name]
        peak = max(r["rss"][name] for r in measured)
        bound = rss_growth_bound_mb(base)
        growth[name] = {"baseline_mb": base, "last_mb": last, "peak_mb": peak, "growth_mb": round(last - base, 1),
                        "bound_mb": round(bound, 1)}
        verdicts[name] = name == "broker" or peak - base <= bound
    print(f"soak: {minutes:g} min, full pipeline on a looped file ({Path(track).name}), {broker_name}, "
          f"samples every {sample:g} s, warm-up {warmup:.0f} s excluded")
    print("\n| process | RSS after warm-up (MB) | RSS at end (MB) | peak (MB) | growth (MB) | bound (MB) | "
          "mean CPU (%) | ok |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        g = growth[name]
        cpu = np.mean([r["cpu"][name] for r in measured])
        print(f"| {name} | {g['baseline_mb']:.1f} | {g['last_mb']:.1f} | {g['peak_mb']:.1f} | {g['growth_mb']:+.1f} | "
              f"{g['bound_mb']:.0f}{' (not enforced)' if name == 'broker' else ''} | {cpu:.0f} | "
              f"{'yes' if verdicts[name] else 'NO'} |")
    lag = [r["ckpt_lag"]["beat"] for r in measured if r["ckpt_lag"]["beat"] is not None]
    tlag = [r["trigger_lag"] for r in measured if r["trigger_lag"] is not None]
    p50 = [r["capture_p50_ms"] for r in measured if r["beats"]]
    p99 = [r["capture_p99_ms"] for r in measured if r["beats"]]
    print("\n| measure (per sample window, after warm-up) | median | worst |")
    print("|---|---|---|")
    print(f"| beat checkpoint lag (s) | {_pct(lag, 50):.2f} | {max(lag, default=float('nan')):.2f} |")
    print(f"| trigger group lag (s) | {_pct(tlag, 50):.2f} | {max(tlag, default=float('nan')):.2f} |")
    print(f"| capture-to-event latency p50 (ms) | {_pct(p50, 50):.0f} | {max(p50, default=float('nan')):.0f} |")
    print(f"| capture-to-event latency p99 (ms) | {_pct(p99, 50):.0f} | {max(p99, default=float('nan')):.0f} |")
    last = rows[-1] if rows else {}
    print(f"\nbeats {sum(r['beats'] for r in rows)}, triggers received {last.get('triggers', 0)}, "
          f"LED frames {last.get('led_frames', 0)}; RSS bound per daemon: growth after warm-up <= max(16 MB, 10 %)")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps({"samples": rows, "growth": growth}, option=orjson.OPT_INDENT_2))
    return 0 if all(verdicts.values()) else 1

