"""``beatbus bench generate``: what generation costs on this machine.

1. Queue overhead: a real ``beatbus worker`` process on an embedded broker runs no-op jobs;
   enqueue -> result latency (rq round trip, heartbeat thread included) and enqueue ->
   start wait. Then tiny MusicGen (5 s) and LSTM (8 bars) jobs end to end: wall time minus
   the model's own compute is the job overhead (load-once models, result files, metadata).
2. MusicGen decoder steps/s and real-time factor in-process: the tiny test model, and with
   ``--small`` the full musicgen-small architecture with random weights (weights do not
   change the cost of a step; the output is noise).
3. LSTM composer tokens/s (the shipped checkpoint).
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

__all__ = ["bench_generate", "noop"]


def noop() -> dict:
    """An rq job that does nothing (measures the queue round trip)."""
    return {"ok": True}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _table(title: str, header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([title, line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _queue_bench(tmp: Path, url: str, jobs: int, tiny_mg: Path) -> dict:
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    from beatbus.consumers.generate.config import load_generate_config
    from beatbus.consumers.generate.jobqueue import GenerationQueue, rq_connection
    from beatbus.consumers.generate.spec import build_job, parse_params

    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_")}
    env.update({"REDIS_URL": url, "BEATBUS_STATE_DIR": str(tmp / "state"), "BEATBUS_MUSICGEN_MODEL": str(tiny_mg),
                "BEATBUS_GENERATE_TORCH_THREADS": "1", "BEATBUS_METRICS_ADDR": "off", "BEATBUS_LOG_LEVEL": "warning"})
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "worker", "--preload", "musicgen", "lstm",
                             "--no-scheduler"], env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    conn = rq_connection(url)
    cfg = load_generate_config({}, env=env)
    q = Queue(cfg.queue, connection=conn, serializer=JSONSerializer)
    try:
        deadline = time.monotonic() + 120
        while not Worker.all(queue=q):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
        time.sleep(0.5)
        rt, wait, enq = [], [], []
        for _ in range(jobs):
            t0 = time.perf_counter()
            job = q.enqueue("beatbus.lab.bench.generate.noop", result_ttl=60)
            t1 = time.perf_counter()
            job.latest_result(timeout=30)
            t2 = time.perf_counter()
            job.refresh()
            enq.append(t1 - t0)
            rt.append(t2 - t0)
            wait.append((job.started_at - job.enqueued_at).total_seconds())
        gq = GenerationQueue(conn, cfg)
        e2e = []
        for params in ({"prompt": "lofi", "duration": 5, "seed": 1}, {"kind": "lstm", "tempo": 100, "bars": 8,
                                                                       "seed": 1}) * 2:        # the 2nd run is warm
            spec = build_job(parse_params(params))
            t0 = time.perf_counter()
            gq.submit(spec)
            st = gq.wait(spec.id, timeout=120, poll=0.02)
            total = time.perf_counter() - t0
            meta = st.get("result", {}).get("metadata", {}) if st["status"] == "finished" else {}
            e2e.append({"kind": params.get("kind", "musicgen"), "status": st["status"], "total_s": round(total, 3),
                        "compute_s": meta.get("seconds"),
                        "overhead_s": round(total - meta["seconds"], 3) if meta.get("seconds") else None})
        e2e = e2e[2:]
        return {"noop_jobs": jobs, "enqueue_ms_p50": round(1e3 * statistics.median(enq), 2),
                "roundtrip_ms_p50": round(1e3 * statistics.median(rt), 2),
                "roundtrip_ms_p95": round(1e3 * _pct(rt, 0.95), 2), "roundtrip_ms_max": round(1e3 * max(rt), 2),
                "wait_ms_p50": round(1e3 * statistics.median(wait), 2), "jobs": e2e}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _musicgen_speed(model, name: str, seconds: float, threads: int | None) -> dict:
    import torch

    from beatbus.consumers.generate.backends.musicgen import MusicGen

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        mg = model if isinstance(model, MusicGen) else MusicGen.load(str(model))
        mg.generate("warm up", duration=0.5, seed=0)
        audio, info = mg.generate("energetic chorus, 120 bpm", duration=seconds, seed=1)
        params = sum(p.numel() for p in mg.model.parameters())
        return {"model": name, "parameters_M": round(params / 1e6, 2), "threads": torch.get_num_threads(),
                "audio_s": seconds, "steps": info["steps"], "wall_s": info["seconds"],
                "steps_per_s": info["steps_per_second"], "rtf": info["rtf"]}
    finally:
        torch.set_num_threads(before)


def bench_generate(*, jobs: int = 30, small: bool = False, seconds: float = 2.0, json_path: str | None = None) -> int:
    """Run the benchmarks and print tables (see the module docstring)."""
    from beatbus.broker import EmbeddedBroker
    from beatbus.consumers.generate.backends.lstm import Composer
    from beatbus.consumers.generate.backends.musicgen import MusicGen
    from beatbus.lab.doubles.tiny_models import build_tiny_musicgen, musicgen_small_config, tiny_t5_tokenizer

    results: dict = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bb-bench-gen-") as tmpdir, EmbeddedBroker() as broker:
        tmp = Path(tmpdir)
        tiny = build_tiny_musicgen(tmp / "tiny-musicgen")
        results["queue"] = _queue_bench(tmp, broker.url, jobs, tiny)

        speed = [_musicgen_speed(tiny, "tiny (0.2 M)", max(seconds, 5.0), 1),
                 _musicgen_speed(tiny, "tiny (0.2 M)", max(seconds, 5.0), None)]
        if small:
            import torch
            from transformers import MusicgenForConditionalGeneration

            torch.manual_seed(0)
            model = MusicgenForConditionalGeneration(musicgen_small_config()).eval()
            mg = MusicGen(model, tiny_t5_tokenizer(), name="musicgen-small arch (random)", melody=False)
            mg.generate("warm up", duration=0.1, seed=0)
            # may be shorter than the API's 5 s minimum: the per-step cost is what is measured
            audio, info = mg.generate("energetic chorus, 120 bpm", duration=seconds, seed=1)
            speed.append({"model": "musicgen-small arch (random weights)",
                          "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                          "threads": torch.get_num_threads(), "audio_s": seconds, "steps": info["steps"],
                          "wall_s": info["seconds"], "steps_per_s": info["steps_per_second"], "rtf": info["rtf"]})
        results["musicgen"] = speed

        import torch

        composer = Composer.load()
        default_threads = torch.get_num_threads()
        results["lstm"] = []
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            rates = [composer.sample(512, seed=i)[1]["tokens_per_second"] for i in range(3)]
            results["lstm"].append({"threads": threads, "tokens": 512, "tokens_per_s_median": statistics.median(rates),
                                    "parameters": composer.meta.get("parameters")})
        torch.set_num_threads(default_threads)

    q = results["queue"]
    print(_table("rq queue round trip (no-op jobs, real `beatbus worker` process, embedded broker)",
                 ["jobs", "enqueue ms p50", "round trip ms p50", "p95", "max", "enqueue->start ms p50"],
                 [[q["noop_jobs"], q["enqueue_ms_p50"], q["roundtrip_ms_p50"], q["roundtrip_ms_p95"],
                   q["roundtrip_ms_max"], q["wait_ms_p50"]]]))
    print()
    print(_table("end-to-end jobs (enqueue -> finished, warm worker, tiny MusicGen / shipped LSTM)",
                 ["kind", "status", "total s", "model s", "overhead s"],
                 [[j["kind"], j["status"], j["total_s"], j["compute_s"], j["overhead_s"]] for j in q["jobs"]]))
    print()
    print(_table("MusicGen decoding on CPU (batch 1, CFG doubles it to 2)",
                 ["model", "params M", "threads", "audio s", "steps", "wall s", "steps/s", "RTF"],
                 [[r["model"], r["parameters_M"], r["threads"], r["audio_s"], r["steps"], r["wall_s"],
                   r["steps_per_s"], r["rtf"]] for r in results["musicgen"]]))
    print()
    print(_table("LSTM composer sampling (CPU, shipped checkpoint)", ["params", "threads", "tokens",
                                                                      "tokens/s (median of 3)"],
                 [[r["parameters"], r["threads"], r["tokens"], r["tokens_per_s_median"]] for r in results["lstm"]]))
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0
