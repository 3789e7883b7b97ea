"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): no 5xx, ever.

Bounded: at most 30 examples per operation, a fixed seed, no example database. The checks
are "no server error" plus the schema's promises about status codes, content types and
response bodies; semantic rejections the schema cannot express (a PNG that is not audio,
``end < start``) are allowed.
"""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from api.app import ApiLimits, create_app
from api.server import ApiServer
from beatbus.bus import Bus
from beatbus.config import load_settings
from consumers.trigger import load_trigger_config
from consumers.trigger.receiver import ReferenceReceiver

from conftest import free_port

pytest.importorskip("schemathesis", reason="schemathesis is not installed (dev extra)")

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_fuzzing_the_openapi_schema_finds_no_server_error(broker, bus, tmp_path):
    settings = load_settings({"redis_url": broker.url, "metrics_addr": "off", "heartbeat": 60, "block_ms": 100},
                             env={})
    bus.heartbeat("stage")                      # one known, live source so controls can succeed
    api_bus = Bus.connect(broker.url, name="api-fuzz")
    with ReferenceReceiver() as rx:
        app = create_app(api_bus, settings, trigger=load_trigger_config({"url": rx.url}, env={}),
                         limits=ApiLimits(upload_bytes=256 * 1024, upload_seconds=30.0))
        with ApiServer(app, port=free_port()) as srv:
            cmd = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()", "run",
                   f"{srv.url}/openapi.json", "--checks", CHECKS, "--max-examples", "30", "--seed", "1",
                   "--generation-database", "none", "--request-timeout", "30", "--no-color",
                   "--report", "junit", "--report-dir", str(tmp_path)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
            httpx.post(f"{srv.url}/api/stop-rhythm-mode", trust_env=False, timeout=30)
    api_bus.close()
    tail = r.stdout[-4000:]
    assert r.returncode == 0, tail
    assert "No issues found" in r.stdout, tail
    assert "10 selected / 10 total" in r.stdout             # every documented operation was fuzzed
