"""Per-frame cost of the beat-activation backends: ``beatbus bench backends``.

Only the activation step is timed - one 272-value feature frame per stream in, ``[beat, downbeat,
non-beat]`` out, with the stream's recurrent state carried - because the features (and the tracker
after it) are the same for every backend. The features are precomputed from a real recording
(``gtzan_rock_00000.flac`` in ``../shared/data/beats``; random ``|N(0, 1)|`` frames when it is
absent - the table says which); stream ``j`` reads them from its own offset.

Rows (``--backend``; CUDA rows only with ``torch.cuda.is_available()``, else "not measured"):

* ``beatnet`` / ``small``, ``processor``: the step the beat processor runs
  (``type(act).infer_many``, what :class:`~processors.beat.BeatBatch` calls once per frame for
  all its streams): torch tensor ops (``StreamBDA``) for beatnet and numpy (``NumpySmall``) for
  small on the CPU, the ``nn.Module`` on CUDA;
* ``beatnet`` / ``small``, ``nn.Module``: one ``net.step`` call of the torch module per frame
  (BeatNet's own online loop does this), CPU;
* ``qkeras``: the QKeras model of :mod:`hls.model` (quantized ``small``), one ``tf.function`` call
  of its layers per frame with the GRU state carried (the Keras frame model resets the state);
* ``csim``: the compiled hls4ml C simulation the ``hls`` backend calls (host standardisation and
  softmax included); one library copy holds one stream's state, so it is not batched;
* ``fpga``: latency cycles x clock period of the kernel - from the C-synthesis report when one
  exists, else a labelled estimate from the reuse factors in ``hls/config.yaml``
  (:func:`fpga_estimate`). Kernel only: no host <-> board transfer. Its GRU state is static, so one
  kernel instance serves one stream (the 1/II frame rate is given as a bound).

``single`` rows advance one stream per call, ``batched`` rows ``--streams`` streams per call.
Latency is the wall time of one call (what each stream in it waits); throughput counts
stream-frames per second, and real-time streams = frames/s / 50 (one frame per 20 ms). Speed-ups
are the anchor's p50 over the row's p50, both measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["BACKENDS", "run_bench", "fpga_estimate", "fpga_row", "format_table", "add_arguments", "main"]

BACKENDS = ("beatnet", "small", "qkeras", "csim", "fpga")
FPS = 50  # feature frames per second (20 ms hop)
DEFAULT_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "data" / "beats" / "gtzan_rock_00000.flac"
NO_CUDA = "not measured (no CUDA device)"
ESTIMATE = "estimate (no synthesis report)"
ANCHOR = ("beatnet", "processor", "cpu", 1)  # BeatNet's network on the CPU, one stream
SAME_NET = ("small", "processor", "cpu", 1)  # the float twin of the network on the FPGA
STRIDE = 37  # frames between the start offsets of two streams


# -- inputs and timing ----------------------------------------------------------------
def load_features(audio: Path | None, n_min: int) -> tuple[np.ndarray, str]:
    """Feature frames ``[shape=(n, 272)]`` of ``audio`` (random ``|N(0, 1)|`` without it) and a note."""
    if audio is not None and Path(audio).is_file():
        from beatbus.audio import load_audio
        from beatbus.processors.beat.features import beatnet_features

        feats = beatnet_features(load_audio(audio))
        return feats, f"272-d BeatNet features of {Path(audio).name} ({feats.shape[0]} frames)"
    feats = np.abs(np.random.default_rng(0).standard_normal((max(n_min, 500), 272))).astype(np.float32)
    return feats, "random |N(0,1)| feature frames (no audio file)"


def _batches(feats: np.ndarray, streams: int) -> Callable[[int], np.ndarray]:
    """``i -> [shape=(streams, 272)]``: frame ``i`` of each stream, stream ``j`` starting ``j * STRIDE`` later."""
    offsets = np.arange(streams) * STRIDE
    return lambda i: feats[(i + offsets) % feats.shape[0]]


def time_calls(step: Callable[[np.ndarray], object], frames: Callable[[int], np.ndarray], n: int, warmup: int,
               sync: Callable[[], None] | None = None) -> np.ndarray:
    """Wall time in ns of ``n`` calls ``step(frames(i))`` after ``warmup`` untimed ones.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each call and inside the timed span after
    it, so asynchronous devices are timed until their result exists.
    """
    sync = sync or (lambda: None)
    for i in range(warmup):
        step(frames(i))
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        x = frames(warmup + i)  # input slicing is the caller's work, not the backend's
        sync()
        t0 = time.perf_counter_ns()
        step(x)
        sync()
        out[i] = time.perf_counter_ns() - t0
    return out


def _stats(ns: np.ndarray, streams: int) -> dict:
    p50, p99 = np.percentile(ns, [50, 99]) / 1e3
    fps = streams * ns.size / (ns.sum() / 1e9)
    return {"p50_us": float(p50), "p99_us": float(p99), "per_stream_us": float(p50 / streams),
            "frames_per_s": float(fps), "rt_streams": float(fps / FPS)}


def _row(backend: str, runtime: str, device: str, streams: int, status: str = "measured", **values) -> dict:
    row = {"backend": backend, "runtime": runtime, "device": device, "streams": streams, "status": status,
           "p50_us": None, "p99_us": None, "per_stream_us": None, "frames_per_s": None, "rt_streams": None}
    row.update(values)
    return row


def limit_threads(pin: bool, tensorflow: bool) -> str:
    """One CPU (when ``pin``) and one thread for BLAS, torch and (when ``tensorflow``) TensorFlow;
    returns a note."""
    from beatbus.lab.bench.beats import _pin_one_core

    if pin:
        notes = [_pin_one_core(), "torch 1 thread"]  # it limits BLAS and torch to one thread too
    else:
        notes = ["not pinned"]
        try:
            import torch
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
            torch.set_num_threads(1)
            notes.append("BLAS and torch 1 thread")
        except ImportError:
            notes.append("threads not limited (threadpoolctl or torch missing)")
    if tensorflow:
        from beatbus.hls.compat import import_qkeras

        import_qkeras()  # DependencyError (one line) without the hls extra; quiets TF's banner
        import tensorflow as tf

        try:  # only possible before TensorFlow starts its thread pools
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            notes.append("TF 1 intra-op / 1 inter-op thread")
        except RuntimeError:
            notes.append("TF threads not limited (TF already started)")
    return ", ".join(notes)


# -- steps per backend ----------------------------------------------------------------
def _require_torch(backend: str) -> None:
    from beatbus.errors import require

    require("torch", f"bench backend {backend!r}")


def _activations(backend: str, device: str, streams: int) -> list:
    """``streams`` streaming activations of a torch backend on ``device`` (one shared network)."""
    if backend == "beatnet":
        from beatbus.processors.beat.bda import BeatNetActivation

        return [BeatNetActivation(device=device) for _ in range(streams)]
    from beatbus.processors.beat.small import SmallActivation

    return [SmallActivation(device=device) for _ in range(streams)]


def processor_step(backend: str, device: str, streams: int) -> Callable[[np.ndarray], object]:
    """The processor's batched activation step: ``feats [shape=(streams, 272)] -> probs``."""
    acts = _activations(backend, device, streams)
    infer = type(acts[0]).infer_many
    return lambda x: infer(acts, list(x[:, None, :]))  # one frame per stream: the live case


def module_step(backend: str, streams: int) -> Callable[[np.ndarray], object]:
    """One ``nn.Module`` call per frame on the CPU, the stacked state carried between calls."""
    if backend == "beatnet":
        from beatbus.processors.beat.bda import shared_net

        net = shared_net(1, "cpu")
    else:
        from beatbus.processors.beat.small import shared_small

        net = shared_small(None, "cpu")
    state = [net.initial_state(streams)]

    def step(x: np.ndarray) -> np.ndarray:
        probs, state[0] = net.step(x, state[0])
        return probs

    return step


def qkeras_step(weights: Path | None = None) -> Callable[[np.ndarray], object]:
    """One ``tf.function`` call of the QKeras layers per frame, the GRU state carried.

    The state is re-created for each batch size; the function is traced once per shape.
    """
    from beatbus.hls.compat import import_qkeras

    import_qkeras()  # DependencyError (one line) without the hls extra
    import tensorflow as tf

    from beatbus.hls.model import DEFAULT_WEIGHTS, load_qmodel

    with warnings.catch_warnings():  # keras warns about serialising qkeras quantizers: noise here
        warnings.simplefilter("ignore", UserWarning)
        model, mean, std = load_qmodel(weights or DEFAULT_WEIGHTS)
    proj, relu, gru, out = (model.get_layer(n) for n in ("proj", "proj_relu", "gru", "out"))
    mean, std = tf.constant(mean), tf.constant(std)

    @tf.function(reduce_retracing=True)
    def frame(x, h):
        y, new = gru.cell(relu(proj((x - mean) / std)), [h])
        return tf.nn.softmax(out(y)), new[0]

    state = {}

    def step(x: np.ndarray) -> np.ndarray:
        h = state.get(x.shape[0])
        if h is None:
            h = tf.zeros((x.shape[0], gru.units))
        probs, state[x.shape[0]] = frame(tf.constant(x), h)
        return probs.numpy()

    return step


def csim_step(project: Path | None = None) -> Callable[[np.ndarray], object]:
    """The ``hls`` backend's per-frame call of the C-simulation library (compiled once if missing)."""
    from beatbus.errors import require

    require("hls4ml", "bench backend 'csim'")
    from beatbus.hls.backend import CsimStep, ensure_library
    from beatbus.hls.model import DEFAULT_WEIGHTS
    from beatbus.hls.project import DEFAULT_PROJECT

    meta = json.loads(Path(str(DEFAULT_WEIGHTS) + ".json").read_text())
    net = CsimStep(ensure_library(project or DEFAULT_PROJECT), meta["mean"], meta["std"])
    state = [net.initial_state()]

    def step(x: np.ndarray) -> np.ndarray:
        probs, state[0] = net(x, state[0])
        return probs

    return step


# -- FPGA -----------------------------------------------------------------------------
def _dense_cycles(n_in: int, reuse: int) -> int:
    # a latency-strategy product issues its multiplies over `reuse` cycles, then an adder tree of
    # depth ceil(log2 n_in), plus one multiplier and one output register stage
    return reuse + math.ceil(math.log2(n_in)) + 2


def fpga_estimate(config: dict, *, dim_in: int = 272, proj: int = 32, hidden: int = 32) -> dict:
    """Rough latency / II of the one-frame kernel from its hls4ml reuse factors (no synthesis).

    Model (a lower-bound sketch, not a tool result): each dense product takes reuse factor +
    adder-tree depth + 2 cycles; ReLU 1; the GRU's input and recurrent products run in parallel,
    then 8 cycles of gates (sigmoid and tanh table lookups 2 each, reset multiply-add 2, blend 2).
    The II is the largest reuse factor, or the GRU recurrence when that is longer (the next frame
    needs the new state).

    Parameters
    ----------
    config : dict
        :func:`hls.project.load_config` of ``hls/config.yaml``.

    Returns
    -------
    dict
        ``latency_cycles``, ``ii_cycles``, ``clock_ns``, ``layers`` (cycles per layer).
    """
    hls = config["hls_config"]
    default = int(hls.get("Model", {}).get("ReuseFactor", 1))
    layer = hls.get("LayerName", {})

    def rf(name: str, key: str = "ReuseFactor") -> int:
        return int(layer.get(name, {}).get(key, default))

    gru_products = max(_dense_cycles(proj, rf("gru")), _dense_cycles(hidden, rf("gru", "RecurrentReuseFactor")))
    layers = {"proj": _dense_cycles(dim_in, rf("proj")), "proj_relu": 1, "gru": gru_products + 8,
              "out": _dense_cycles(hidden, rf("out"))}
    recurrence = _dense_cycles(hidden, rf("gru", "RecurrentReuseFactor")) + 8
    reuse = max(rf("proj"), rf("gru"), rf("gru", "RecurrentReuseFactor"), rf("out"))
    return {"latency_cycles": sum(layers.values()), "ii_cycles": max(reuse, recurrence),
            "clock_ns": float(config["clock_period"]), "layers": layers}


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def fpga_row(project: Path | None = None, config: Path | None = None) -> dict:
    """The FPGA kernel row: synthesis-report latency and II when a report exists, else :func:`fpga_estimate`."""
    from beatbus.hls.model import DEFAULT_WEIGHTS
    from beatbus.hls.project import DEFAULT_CONFIG, DEFAULT_PROJECT, load_config, read_reports

    cfg = load_config(config or DEFAULT_CONFIG)
    rep = read_reports(project or DEFAULT_PROJECT)
    best = worst = ii = None
    if rep is not None:
        best, worst = _int(rep.get("latency_best")), _int(rep.get("latency_worst"))
        ii = _int(rep.get("interval_max")) or _int(rep.get("interval_min"))
    clock = float(cfg["clock_period"])
    if worst is not None and ii is not None:
        status, note = "synthesis report", rep["report"]
        best = best if best is not None else worst
    else:
        meta = json.loads(Path(str(DEFAULT_WEIGHTS) + ".json").read_text())
        est = fpga_estimate(cfg, proj=int(meta["proj"]), hidden=int(meta["hidden"]))
        best = worst = est["latency_cycles"]
        ii, status = est["ii_cycles"], ESTIMATE
        note = "cycles per layer " + ", ".join(f"{k} {v}" for k, v in est["layers"].items())
    fps = 1e9 / (ii * clock)
    return _row("fpga", f"kernel, {clock:g} ns clock", cfg["part"], 1, status,
                p50_us=best * clock / 1e3, p99_us=worst * clock / 1e3, per_stream_us=best * clock / 1e3,
                frames_per_s=fps, rt_streams=1.0, rt_streams_bound=fps / FPS, latency_cycles=[best, worst],
                ii_cycles=ii, note=f"{note}; kernel only (no host transfer); its GRU state is static, so one "
                                   f"kernel instance serves one stream; frames/s is the 1/II bound")


# -- the benchmark --------------------------------------------------------------------
def _plan(backends: Sequence[str], devices: Sequence[str], streams: int) -> list[tuple[str, str, str, int]]:
    """``(backend, runtime, device, streams)`` of every row to produce, in table order."""
    counts = (1, streams) if streams > 1 else (1,)
    plan = []
    for b in ("beatnet", "small"):
        if b in backends:
            plan += [(b, "processor", d, n) for d in devices for n in counts]
            if "cpu" in devices:
                plan += [(b, "nn.Module", "cpu", n) for n in counts]
    if "qkeras" in backends:
        plan += [("qkeras", "tf.function", "cpu", n) for n in counts]
    if "csim" in backends:
        plan.append(("csim", "C simulation", "cpu", 1))
    return plan


def _make_step(backend: str, runtime: str, device: str, n: int, hls_project: Path | None):
    if backend == "qkeras":
        return qkeras_step()
    if backend == "csim":
        return csim_step(hls_project)
    _require_torch(backend)
    return module_step(backend, n) if runtime == "nn.Module" else processor_step(backend, device, n)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _key(row: dict) -> tuple:
    return row["backend"], row["runtime"], row["device"], row["streams"]


def _add_ratios(rows: list[dict]) -> dict:
    """Speed-ups (anchor p50 / row p50) against :data:`ANCHOR` and :data:`SAME_NET`; returns the anchors used."""
    keyed = {_key(r): r for r in rows}
    refs = {"x_vs_beatnet_cpu": ANCHOR, "x_vs_small_cpu": SAME_NET}
    for r in rows:
        for name, key in refs.items():
            ref = keyed.get(key)
            ok = ref is not None and ref["p50_us"] and r["p50_us"]
            r[name] = float(ref["p50_us"] / r["p50_us"]) if ok else None
    return {name: " / ".join(map(str, key)) for name, key in refs.items() if key in keyed}


def run_bench(backends: Sequence[str] = BACKENDS, *, frames: int = 5000, warmup: int = 500, streams: int = 20,
              devices: Sequence[str] = ("cpu", "cuda"), audio: Path | None = DEFAULT_AUDIO,
              hls_project: Path | None = None, hls_config: Path | None = None, pin: bool = True,
              log: Callable[[str], None] | None = None) -> dict:
    """Measure (or, for the FPGA, estimate) per-frame latency and throughput of each backend.

    Parameters
    ----------
    backends : sequence of str
        Subset of :data:`BACKENDS`.
    frames : int
        Timed calls per row (after ``warmup`` untimed ones).
    streams : int
        Streams per call in the ``batched`` rows (1: single-stream rows only).
    devices : sequence of {"cpu", "cuda"}
        Devices of the ``beatnet`` / ``small`` processor rows; CUDA rows without a CUDA device
        are returned as "not measured".
    audio : Path or None
        Recording whose features are fed (random frames when None or missing).
    hls_project, hls_config : Path or None
        hls4ml project (C-simulation library, synthesis report) and YAML; None = the defaults.
    pin : bool
        Pin this process to one CPU (for the rest of its life); threads are limited to one anyway.
    log : callable or None
        Progress lines (one per row).

    Returns
    -------
    dict
        ``{"rows": [...], "anchors": {...}, "note": str, "settings": {...}}``; each row has
        ``backend, runtime, device, streams, status, p50_us, p99_us, per_stream_us, frames_per_s,
        rt_streams, x_vs_beatnet_cpu, x_vs_small_cpu`` (None where not measured).
    """
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}: choose from {BACKENDS}")
    threads = limit_threads(pin, "qkeras" in backends)
    feats, source = load_features(audio, frames + warmup)
    cuda = _cuda_available()
    rows = []
    for backend, runtime, device, n in _plan(backends, devices, streams):
        if device == "cuda" and not cuda:
            rows.append(_row(backend, runtime, device, n, NO_CUDA))
            continue
        step = _make_step(backend, runtime, device, n, hls_project)
        sync = None
        if device == "cuda":
            import torch

            sync = torch.cuda.synchronize
        ns = time_calls(step, _batches(feats, n), frames, warmup, sync)
        rows.append(_row(backend, runtime, device, n, **_stats(ns, n)))
        if log:
            log(f"{backend} {runtime} {device} x{n}: p50 {rows[-1]['p50_us']:.1f} us")
    if "fpga" in backends:
        rows.append(fpga_row(hls_project, hls_config))
    anchors = _add_ratios(rows)
    note = f"{frames} timed frames after {warmup} warm-up per row; {threads}; features: {source}"
    return {"rows": rows, "anchors": anchors, "note": note,
            "settings": {"frames": frames, "warmup": warmup, "streams": streams, "devices": list(devices)}}


# -- output ---------------------------------------------------------------------------
def _num(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt if v >= 10 else ".3g")  # sub-10 values keep 3 digits


def _streams(row: dict) -> str:
    if row.get("rt_streams_bound") is not None:  # the FPGA kernel: one stream, whatever its II allows
        return f"1 per kernel (1/II bound {row['rt_streams_bound']:.0f})"
    return _num(row["rt_streams"], ".0f")


def _speedup(v: float | None, anchor: bool = False) -> str:
    if anchor:
        return "anchor"
    return "-" if v is None else (f"{v:.0f}x" if v >= 10 else f"{v:.2g}x")


def format_table(result: dict) -> str:
    """Markdown table of :func:`run_bench` rows, the anchors and a claim check."""
    lines = [
        "| backend | runtime | device | streams/call | p50 us/call | p99 us/call | us/frame/stream | frames/s "
        "| real-time streams | speed-up vs beatnet CPU 1-stream | vs small CPU 1-stream | source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['backend']} | {r['runtime']} | {r['device']} | {r['streams']} | {_num(r['p50_us'])} "
            f"| {_num(r['p99_us'])} | {_num(r['per_stream_us'], '.2f')} | {_num(r['frames_per_s'], '.0f')} "
            f"| {_streams(r)} | {_speedup(r.get('x_vs_beatnet_cpu'), _key(r) == ANCHOR)} "
            f"| {_speedup(r.get('x_vs_small_cpu'), _key(r) == SAME_NET)} | {r['status']} |"
        )
    lines += ["", f"_{result['note']}_"]
    for r in result["rows"]:
        if r.get("note"):
            lines.append(f"_{r['backend']}: {r['note']}_")
    fpga = next((r for r in result["rows"] if r["backend"] == "fpga"), None)
    if fpga is not None and fpga.get("x_vs_beatnet_cpu"):
        lines.append(f"_claim check ('FPGA 1000-5000x faster than CPU'): FPGA kernel ({fpga['status']}) vs BeatNet "
                     f"on this CPU {_speedup(fpga['x_vs_beatnet_cpu'])}, vs the same small network on this CPU "
                     f"{_speedup(fpga.get('x_vs_small_cpu'))}; every row is far inside the 20 ms frame period_")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``[--frames N] [--warmup N] [--streams N] [--backend NAME ...] [--device D ...] [--audio FILE]
    [--hls-project DIR] [--hls-config YAML] [--json FILE]``."""
    parser.add_argument("--frames", type=int, default=5000, help="timed frames per row (default 5000: 100 s of audio)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed frames first (default 500)")
    parser.add_argument("--streams", type=int, default=20, help="streams per call in the batched rows (default 20)")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="backend (repeatable; default all)")
    parser.add_argument("--device", action="append", choices=("cpu", "cuda"),
                        help="device of the beatnet / small rows (repeatable; default both)")
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO,
                        help=f"recording for the features (default {DEFAULT_AUDIO.name})")
    parser.add_argument("--hls-project", type=Path, default=None, help="hls4ml project (default: the hls backend's)")
    parser.add_argument("--hls-config", type=Path, default=None, help="hls4ml YAML (default hls/config.yaml)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments, print the table (and write the JSON); returns 0."""
    import sys

    from beatbus.errors import ConfigError

    if args.frames < 1 or args.warmup < 0 or args.streams < 1:
        raise ConfigError("--frames and --streams must be >= 1 and --warmup >= 0")
    result = run_bench(args.backend or BACKENDS, frames=args.frames, warmup=args.warmup, streams=args.streams,
                       devices=args.device or ("cpu", "cuda"), audio=args.audio, hls_project=args.hls_project,
                       hls_config=args.hls_config, pin=not args.no_pin,
                       log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m beatbus.lab.bench.backends ...`` (the same as ``beatbus bench backends``)."""
    parser = argparse.ArgumentParser(prog="beatbus bench backends", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
