"""``beatbus structure run|analyze``: the structure daemon, offline sections.

``beatbus analyze PATH --sections`` is the core CLI's spelling of ``structure analyze`` (it calls
:func:`.offline.analyze_sections`). ``structure eval`` (also ``beatbus eval sections DIR``) is in
:mod:`beatbus.lab.cli`.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["register", "cmd_run", "cmd_analyze"]


def cmd_run(args: argparse.Namespace) -> int:
    from beatbus.commands import cli_settings, connect
    from beatbus.runtime import run_services

    from .service import StructureService

    settings = cli_settings(args)
    with connect(settings, embedded_ok=False) as bus:
        svc = StructureService(bus, settings=settings, sources=args.sources or None)
        return run_services([svc], metrics_addr=settings.metrics_addr)


def cmd_analyze(args: argparse.Namespace) -> int:
    import numpy as np
    import orjson

    from beatbus.config import load_settings
    from beatbus.errors import ConfigError
    from beatbus.log import setup_logging

    from .offline import analyze_structure

    setup_logging("warning")
    settings = load_settings(vars(args))    # --backend / --device > BEATBUS_* > TOML
    beats = None
    if args.beats:
        try:
            beats = np.loadtxt(args.beats, ndmin=2)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--beats {args.beats}: cannot read beat times ({exc})") from None
    st = analyze_structure(args.path, beats, backend=settings.backend, device=settings.device)
    secs = [{k: s[k] for k in ("start", "end", "label", "confidence")} for s in st.sections]
    if args.json:
        sys.stdout.write(orjson.dumps({"duration": round(st.duration, 3), "sections": secs}).decode() + "\n")
        return 0
    for s in st.sections:
        print(f"{s['start']:8.2f}  {s['end']:8.2f}  {s['label']:8s} group {s['group']:2d}  conf {s['confidence']:.2f}")
    return 0


def register(commands: dict) -> None:
    """Add ``beatbus structure ...`` to the top-level commands."""
    from beatbus.commands import add_adaptive_options, add_common_options, subcommands
    from beatbus.processors.beat.cli import add_backend_options

    sub = subcommands(commands, "structure", "song sections: intro/verse/chorus/bridge/outro")
    r = sub.add_parser("run", help="structure daemon: bb:{src}:audio (+beats) -> bb:{src}:sections "
                                   "(owns sources by lease)")
    r.add_argument("--sources", nargs="*", help="sources to own (default: every live source)")
    add_adaptive_options(r)
    add_common_options(r)
    r.set_defaults(func=cmd_run)
    a = sub.add_parser("analyze", help="sections of a file, offline")
    a.add_argument("path")
    a.add_argument("--beats", help="beat times file (time[<TAB>beat_in_bar] per line); "
                                   "default: the offline beat decoder's beats and bars (--backend)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    add_backend_options(a)
    a.set_defaults(func=cmd_analyze)
