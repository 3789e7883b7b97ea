"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis, every check).

The API as `beatbus api` serves it (with the generation routes) and with API keys, so the
authentication checks apply too. Every check passes: no 5xx, every status code, content type,
header and body as documented, schema-valid requests accepted and invalid ones refused, no
route that ignores authentication. The few answers a schema cannot express (a PNG that is not
audio, ``end < start``, no generation worker running here) are listed in tests/schemathesis.toml.
Bounded: at most 5 examples per operation, a fixed seed, no example database (under a minute).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from beatbus.api.app import ApiLimits, create_app
from beatbus.api.auth import KeyStore
from beatbus.api.deps import Guard, require
from beatbus.api.server import ApiServer
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.trigger import load_trigger_config
from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.generate import gen_config
from support.procs import free_port

pytest.importorskip("schemathesis", reason="schemathesis is not installed (dev extra)")

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_every_schemathesis_check_passes(broker, bus, tmp_path):
    settings = load_settings({"redis_url": broker.url, "metrics_addr": "off", "heartbeat": 60, "block_ms": 100},
                             env={})
    bus.heartbeat("stage")                      # one known, live source so controls can succeed
    store = KeyStore(tmp_path / "api-keys.json")
    _key, token = store.create(["read", "control", "trigger", "generate"], name="fuzz")
    missing = tmp_path / "no-models"            # the API never loads a model
    gen = gen_config(tmp_path / "state", {k: missing / k for k in ("musicgen", "melody", "clap")},
                     embed_uploads=False, max_upload_bytes=128 * 1024, max_upload_seconds=2.0)
    api_bus = Bus.connect(broker.url, name="api-fuzz")
    with ReferenceReceiver() as rx:
        from beatbus.consumers.generate.api import build_router

        router = build_router(api_bus, gen, read_dependencies=[require("read")],
                              write_dependencies=[require("generate")])
        app = create_app(api_bus, settings, trigger=load_trigger_config({"url": rx.url}, env={}),
                         limits=ApiLimits(upload_bytes=256 * 1024, upload_seconds=30.0), routers=[router],
                         guard=Guard(store=store))
        with ApiServer(app, port=free_port()) as srv:
            cmd = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
                   "--config-file", str(CONFIG), "run", f"{srv.url}/openapi.json", "--checks", "all",
                   "-H", f"Authorization: Bearer {token}", "--max-examples", "5", "--seed", "1", "--workers", "2",
                   "--generation-database", "none", "--request-timeout", "30", "--no-color",
                   "--report", "junit", "--report-dir", str(tmp_path)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
            httpx.post(f"{srv.url}/api/stop-rhythm-mode", headers={"Authorization": f"Bearer {token}"},
                       trust_env=False, timeout=30)
    api_bus.close()
    tail = r.stdout[-6000:]
    assert r.returncode == 0 and "Failures:" not in r.stdout, tail     # warnings: the ids no upload made
    assert "Selected: 27/27" in r.stdout, tail              # every documented operation was fuzzed
