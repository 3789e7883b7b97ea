"""Commands of the generation stage.

- ``beatbus worker``: the rq worker (models loaded once, ``--device cpu|cuda[:N]``).
- ``beatbus consume generate``: stream events -> jobs, per the configured policy.
- ``beatbus generate musicgen|lstm``: one piece, queued and waited for, or ``--local``.
- ``beatbus generate submit|status``: queue a job from parameters / read a job's status.
- ``beatbus generate train-lstm`` (also ``beatbus train lstm``): train the LSTM composer.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import orjson

from beatbus.commands import add_common_options, cli_settings, connect, subcommands
from beatbus.errors import ConfigError

from .config import DESCRIPTIONS

__all__ = ["register"]


def _gen_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (flags > BEATBUS_GENERATE_<KEY> env (the models: BEATBUS_MUSICGEN_MODEL, "
                               "BEATBUS_MUSICGEN_MELODY_MODEL, BEATBUS_CLAP_MODEL; BEATBUS_STATE_DIR) > [generate] in TOML)")
    g.add_argument("--state-dir", dest="state_dir", help=DESCRIPTIONS["state_dir"])
    g.add_argument("--queue", help=DESCRIPTIONS["queue"])
    g.add_argument("--musicgen-model", dest="musicgen_model", help=DESCRIPTIONS["musicgen_model"])
    g.add_argument("--musicgen-melody-model", dest="musicgen_melody_model", help=DESCRIPTIONS["musicgen_melody_model"])
    g.add_argument("--clap-model", dest="clap_model", help=DESCRIPTIONS["clap_model"])
    g.add_argument("--lstm-checkpoint", dest="lstm_checkpoint", help=DESCRIPTIONS["lstm_checkpoint"])
    g.add_argument("--torch-threads", dest="torch_threads", type=int, help=DESCRIPTIONS["torch_threads"])
    g.add_argument("--device", help="torch device: cpu, cuda or cuda:N (one worker per GPU)")


def _configs(args: argparse.Namespace):
    from .config import load_generate_config

    flags = dict(vars(args))
    device = flags.pop("device", None)
    if device and not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"--device {device!r} must be cpu, cuda or cuda:N")
    # Settings.device accepts cpu|cuda; the index (cuda:N) goes to the worker context.
    settings = cli_settings(argparse.Namespace(**{**flags, "device": device.split(":")[0] if device else None}))
    config = load_generate_config(flags, config_file=getattr(args, "config", None))
    return settings, config, device


def _context(args: argparse.Namespace, bus=None):
    from .jobs import WorkerContext
    from .storage import Store

    settings, config, device = _configs(args)
    return WorkerContext(settings=settings, config=config, store=Store(config.state_path), bus=bus,
                         device=device or settings.device)


# -- commands -------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    from .jobqueue import rq_redis
    from .worker import PRELOADS, run_worker

    bad = [p for p in args.preload or () if p not in PRELOADS]
    if bad:
        raise ConfigError(f"--preload {bad[0]!r} is not one of {', '.join(PRELOADS)}")
    settings, config, _ = _configs(args)
    if not settings.redis_url:
        raise ConfigError("no broker: set REDIS_URL (or --redis-url); `beatbus broker` starts one")
    with connect(settings, embedded_ok=False) as bus:      # the bus: leases, stream audio
        rq = rq_redis(settings, bus, own=True)              # the jobs: rq_url, else the broker
        ctx = _context(args, bus)
        print(f"beatbus: worker on rq queue {config.queue} ({ctx.device}), state in {config.state_path}",
              file=sys.stderr)
        return run_worker(ctx, burst=args.burst, preload=args.preload, with_scheduler=not args.no_scheduler,
                          max_jobs=args.max_jobs, name=args.name, connection=rq)


def cmd_consume_generate(args: argparse.Namespace) -> int:
    from beatbus.runtime import run_services

    from .service import GenerationService

    settings, config, _ = _configs(args)
    with connect(settings, embedded_ok=False) as bus:
        svc = GenerationService(bus, settings=settings, config=config, sources=args.sources or None)
        print(f"beatbus: generation policy {config.policy} -> rq queue {config.queue}", file=sys.stderr)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def _params(args: argparse.Namespace, kind: str) -> dict:
    keys = ("prompt", "duration", "temperature", "top_k", "top_p", "cfg_coef", "tempo", "section", "intensity", "key",
            "meter", "bars", "seed", "melody", "render_audio", "source")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) not in (None, False)}
    out["kind"] = kind
    return out


_SUFFIXES = {"musicgen": (".wav",), "lstm": (".mid", ".midi")}


def _check_out(out: str | None, kind: str) -> None:
    """Refuse an --out whose extension is not what the piece is (before any work is done)."""
    if out is None or Path(out).suffix.lower() in _SUFFIXES[kind]:
        return
    if kind == "lstm":
        raise ConfigError(f"--out {out}: an LSTM piece is MIDI, so the name must end in .mid "
                          "(--render-audio writes its audio beside it, as NAME.wav)")
    raise ConfigError(f"--out {out}: MusicGen writes WAV audio, so the name must end in .wav")


def _out_paths(out: str | None, kind: str, files, job_id: str) -> dict[str, Path]:
    """Result file -> where it goes: --out (or ID.wav / ID.mid) for the piece, rendered audio beside a MIDI."""
    main = Path(out or f"{job_id}{_SUFFIXES[kind][0]}")
    if kind == "musicgen":
        return {"audio.wav": main}
    return {"music.mid": main, **({"audio.wav": main.with_suffix(".wav")} if "audio.wav" in files else {})}


def _written(paths: dict[str, Path]) -> dict[str, str]:
    """The JSON fields naming what was written: ``out`` (the piece) and ``audio`` (a MIDI's rendering)."""
    main = paths.get("music.mid") or paths["audio.wav"]
    return {"out": str(main), **({"audio": str(paths["audio.wav"])} if "music.mid" in paths and "audio.wav" in paths
                                 else {})}


def _run_piece(args: argparse.Namespace, kind: str) -> int:
    from .spec import build_job, parse_params

    params = parse_params(_params(args, kind))
    _check_out(args.out, kind)
    seed_tokens = None
    if getattr(args, "seed_midi", None):
        from .backends.lstm import midi_seed_tokens

        seed_tokens = midi_seed_tokens(args.seed_midi)
    if getattr(args, "model", None):
        args.musicgen_melody_model = args.musicgen_model = args.model
    audio_id = None
    if args.local:
        if params.source:
            raise ConfigError("--source reads the live stream from the broker: drop --local to use it")
        from .jobs import generate_local
        from .worker import set_torch_threads

        ctx = _context(args)
        set_torch_threads(ctx.config.torch_threads)
        if getattr(args, "audio", None):
            audio_id = _store_file(ctx.store, args.audio, ctx.config)
        spec = build_job(params, audio_id=audio_id, reason="cli", seed_tokens=seed_tokens,
                         base_prompt="" if params.prompt else ctx.config.prompt)
        files, meta = generate_local(spec, ctx)
        paths = _out_paths(args.out, kind, files, spec.id)
        for name, path in paths.items():
            path.write_bytes(files[name])
        print(orjson.dumps({**_written(paths), "prompt": spec.request.prompt, "duration": spec.request.duration,
                            **{k: meta[k] for k in ("rtf", "steps", "notes", "tokens_per_second") if k in meta}}
                           ).decode())
        return 0
    settings, config, _ = _configs(args)
    with connect(settings, embedded_ok=False) as bus:
        from .jobqueue import GenerationQueue, rq_redis
        from .storage import Store

        rq = rq_redis(settings, bus)
        store = Store(config.state_path)
        if getattr(args, "audio", None):
            audio_id = _store_file(store, args.audio, config)
        from .conditioning import snapshot

        cond = snapshot(bus, params.source) if params.source else None
        spec = build_job(params, conditioning=cond, audio_id=audio_id, reason="cli", seed_tokens=seed_tokens,
                         base_prompt="" if params.prompt else config.prompt)
        from .offers import job_kind, require_worker

        queue = GenerationQueue(rq, config, store=store)
        require_worker(rq, config.queue, job_kind(kind, melody=params.melody))
        job = queue.submit(spec)
        print(f"beatbus: queued {spec.id} (timeout {job.timeout} s); waiting for a worker ...", file=sys.stderr)
        st = queue.wait(spec.id, timeout=args.wait)
        if st["status"] != "finished":
            raise ConfigError(f"generation {spec.id} {st['status']}"
                              + (f": {st['error']}" if st.get("error") else f" after {args.wait:g} s"))
        made = {p.name for p in store.result_dir(spec.id).iterdir()}
        paths = _out_paths(args.out, kind, made, spec.id)
        for name, path in paths.items():
            shutil.copyfile(store.result_dir(spec.id) / name, path)
        print(orjson.dumps({**_written(paths), "id": spec.id}).decode())
        return 0


def _store_file(store, path: str, config) -> str:
    from .audio import decode_audio

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    x, sr = decode_audio(data, max_seconds=config.max_upload_seconds, min_seconds=config.min_upload_seconds)
    return store.save_upload(x, sr, origin="cli", name=Path(path).name, raw=data)


def cmd_generate_musicgen(args: argparse.Namespace) -> int:
    return _run_piece(args, "musicgen")


def cmd_generate_lstm(args: argparse.Namespace) -> int:
    return _run_piece(args, "lstm")


def cmd_generate_submit(args: argparse.Namespace) -> int:
    from .jobqueue import GenerationQueue, rq_redis
    from .spec import build_job, parse_params

    settings, config, _ = _configs(args)
    params = parse_params(orjson.loads(args.params) if args.params else _params(args, args.kind))
    with connect(settings, embedded_ok=False) as bus:
        rq = rq_redis(settings, bus)
        from .conditioning import snapshot

        cond = snapshot(bus, params.source) if params.source else None
        spec = build_job(params, conditioning=cond, reason="cli", base_prompt="" if params.prompt else config.prompt)
        from .offers import job_kind, require_worker

        require_worker(rq, config.queue, job_kind(params.kind, melody=params.melody))
        job = GenerationQueue(rq, config).submit(spec)
        print(orjson.dumps({"generation_id": spec.id, "timeout": job.timeout, "prompt": spec.request.prompt}).decode())
    return 0


def cmd_generate_status(args: argparse.Namespace) -> int:
    from .jobqueue import GenerationQueue, rq_redis
    from .storage import Store

    settings, config, _ = _configs(args)
    with connect(settings, embedded_ok=False) as bus:
        st = GenerationQueue(rq_redis(settings, bus), config, store=Store(config.state_path)).status(
            Store.check_id(args.id))
    print(orjson.dumps(st, option=orjson.OPT_INDENT_2, default=str).decode())
    return 0 if st["status"] != "failed" else 1


def cmd_train_lstm(args: argparse.Namespace) -> int:
    from beatbus.log import setup_logging

    from .backends.lstm import ComposerConfig, train
    from .backends.lstm_tokens import load_corpus
    from .worker import set_torch_threads

    setup_logging("info")
    set_torch_threads(args.torch_threads or 0)
    source = args.midi_dir or args.corpus
    if not source:
        raise ConfigError("give a MIDI directory or --corpus bach")
    pieces = load_corpus(source, limit=args.limit)
    print(f"beatbus: {len(pieces)} pieces, {sum(map(len, pieces))} tokens from {source}", file=sys.stderr)
    cfg = ComposerConfig(embed=args.embed, hidden=args.hidden, layers=args.layers, heads=args.heads,
                         dropout=args.dropout, seq_len=args.seq_len)
    composer = train(pieces, epochs=args.epochs, config=cfg, min_count=args.min_count, batch_size=args.batch_size,
                     lr=args.lr, seed=args.seed, device=args.device or "cpu",
                     log_every=lambda row: print(orjson.dumps(row).decode(), file=sys.stderr))
    composer.meta["corpus"] = "bach" if source == "bach" else Path(source).name
    path = composer.save(args.out)
    print(orjson.dumps({"checkpoint": str(path), **{k: v for k, v in composer.meta.items() if k != "history"},
                        "last": composer.meta["history"][-1]}).decode())
    return 0


# -- registration ---------------------------------------------------------------------
def _piece_options(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--prompt", help="text prompt (conditioning words are appended)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", dest="top_k", type=int)
    p.add_argument("--top-p", dest="top_p", type=float)
    p.add_argument("--tempo", type=float, help="BPM")
    p.add_argument("--key", help="e.g. 'A minor'")
    p.add_argument("--meter", type=int, help="beats per bar")
    p.add_argument("--seed", type=int, help="random seed (reproducible output)")
    p.add_argument("--out", help="output file: NAME.wav for musicgen, NAME.mid for lstm (default: the job id)")
    p.add_argument("--local", action="store_true", help="run in this process instead of queueing for a worker")
    p.add_argument("--wait", type=float, default=3600.0, help="seconds to wait for a queued job")
    if kind == "musicgen":
        p.add_argument("--model", help="MusicGen model directory (sets --musicgen-model)")
        p.add_argument("--duration", type=float, help="seconds of audio, 5-120")
        p.add_argument("--cfg-coef", dest="cfg_coef", type=float, help="classifier-free guidance, 1-10")
        p.add_argument("--section", choices=["intro", "verse", "chorus", "bridge", "outro"])
        p.add_argument("--intensity", type=float, help="0-1")
        p.add_argument("--audio", help="audio file to continue (or to follow with --melody)")
        p.add_argument("--melody", action="store_true", help="follow --audio's melody (MusicGen-Melody)")
    else:
        p.add_argument("--bars", type=int, help="bars to compose")
        p.add_argument("--seed-midi", dest="seed_midi", help="MIDI file whose ending seeds the composer")
        p.add_argument("--render-audio", dest="render_audio", action="store_true",
                       help="also render the MIDI with FluidSynth, to NAME.wav beside --out NAME.mid")
    add_common_options(p, rq=True)
    _gen_options(p)


def register(commands: dict) -> None:
    top = commands["top"]
    w = top.add_parser("worker", help="rq generation worker (MusicGen, LSTM, CLAP); models stay loaded")
    w.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    w.add_argument("--preload", nargs="*", metavar="MODEL",
                   help="models to load (downloading if need be) before taking jobs: musicgen musicgen-melody "
                        "clap lstm; default: lstm, and musicgen when its weights are on this machine")
    w.add_argument("--max-jobs", dest="max_jobs", type=int, help="exit after this many jobs")
    w.add_argument("--name", help="worker name (default: random)")
    w.add_argument("--no-scheduler", dest="no_scheduler", action="store_true",
                   help="do not run rq's scheduler (delayed retries then wait for another worker's)")
    add_common_options(w, rq=True)
    _gen_options(w)
    w.set_defaults(func=cmd_worker)

    c = subcommands(commands, "consume", "consumer daemons").add_parser(
        "generate", help="queue generation jobs from the live stream (daemon)")
    c.add_argument("--sources", nargs="*", help="sources to serve (default: every live source)")
    c.add_argument("--policy", choices=["section", "bars", "api"], help=DESCRIPTIONS["policy"])
    c.add_argument("--every-bars", dest="every_bars", type=int, help=DESCRIPTIONS["every_bars"])
    c.add_argument("--section-labels", dest="section_labels", help="comma-separated, e.g. chorus,bridge")
    c.add_argument("--kind", choices=["musicgen", "lstm"], help=DESCRIPTIONS["kind"])
    c.add_argument("--duration", type=float, help=DESCRIPTIONS["duration"])
    c.add_argument("--capture-seconds", dest="capture_seconds", type=float, help=DESCRIPTIONS["capture_seconds"])
    c.add_argument("--melody", action="store_true", default=None, help=DESCRIPTIONS["melody"])
    c.add_argument("--prompt", help=DESCRIPTIONS["prompt"])
    add_common_options(c, rq=True)
    _gen_options(c)
    c.set_defaults(func=cmd_consume_generate)

    gen = subcommands(commands, "generate", "generate music: MusicGen audio, LSTM MIDI; jobs and training")
    gm = gen.add_parser("musicgen", help="one MusicGen piece: queued for a worker, or --local")
    _piece_options(gm, "musicgen")
    gm.set_defaults(func=cmd_generate_musicgen)
    gl = gen.add_parser("lstm", help="one LSTM composition (MIDI): queued for a worker, or --local")
    _piece_options(gl, "lstm")
    gl.set_defaults(func=cmd_generate_lstm)

    gs = gen.add_parser("submit", help="queue a job and print its id (JSON params or flags)")
    gs.add_argument("--kind", choices=["musicgen", "lstm"], default="musicgen")
    gs.add_argument("--params", help='JSON object, e.g. \'{"prompt": "lofi", "duration": 8}\'')
    gs.add_argument("--prompt")
    gs.add_argument("--duration", type=float)
    gs.add_argument("--tempo", type=float)
    gs.add_argument("--bars", type=int)
    add_common_options(gs, rq=True)
    _gen_options(gs)
    gs.set_defaults(func=cmd_generate_submit)

    st = gen.add_parser("status", help="status, progress and result of a job (JSON)")
    st.add_argument("id")
    add_common_options(st, rq=True)
    _gen_options(st)
    st.set_defaults(func=cmd_generate_status)

    def train_options(t: argparse.ArgumentParser) -> None:
        t.add_argument("midi_dir", nargs="?", help="folder of MIDI files (recursive)")
        t.add_argument("--corpus", choices=["bach"], help="music21's Bach chorales instead of a folder")
        t.add_argument("--limit", type=int, help="use at most this many pieces")
        t.add_argument("--epochs", type=int, default=20)
        t.add_argument("--seed", type=int, default=0, help="makes training reproducible")
        t.add_argument("--embed", type=int, default=64)
        t.add_argument("--hidden", type=int, default=128)
        t.add_argument("--layers", type=int, default=1)
        t.add_argument("--heads", type=int, default=4)
        t.add_argument("--dropout", type=float, default=0.2)
        t.add_argument("--seq-len", dest="seq_len", type=int, default=64)
        t.add_argument("--min-count", dest="min_count", type=int, default=2, help="vocabulary frequency threshold")
        t.add_argument("--batch-size", dest="batch_size", type=int, default=32)
        t.add_argument("--lr", type=float, default=3e-3)
        t.add_argument("--device", help="cpu or cuda")
        t.add_argument("--torch-threads", dest="torch_threads", type=int)
        t.add_argument("--out", default="lstm_composer.pt", help="checkpoint path")
        t.set_defaults(func=cmd_train_lstm)

    train_options(gen.add_parser("train-lstm", help="train the LSTM composer on MIDI or the Bach chorales"))
    train_options(subcommands(commands, "train", "train models").add_parser(
        "lstm", help="train the LSTM composer (same as `beatbus generate train-lstm`)"))
