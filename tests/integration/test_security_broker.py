"""Broker credentials and transport: a real redis-server with ACL users and TLS, started by the test.

Daemons, the pipeline and an rq job run against ``rediss://USER:PASSWORD@...?ssl_ca_certs=CA``;
a wrong password fails with one clear line; the password never shows in logs or /metrics.
"""
from __future__ import annotations

import io
import logging
import shutil
import subprocess
import time

import httpx
import pytest
import redis
from rq import Queue, SimpleWorker

from beatbus import keys
from beatbus.bus import Bus
from beatbus.config import load_settings, redact_url
from beatbus.consumers.generate.jobqueue import rq_connection
from beatbus.consumers.terminal import TerminalConsumer
from beatbus.errors import BrokerError
from beatbus.processors.beat import BeatProcessor
from beatbus.processors.beat.service import BeatService
from beatbus.producers import ClickSource
from beatbus.producers.service import Publisher
from beatbus.runtime import run_services
from beatbus.schemas import BeatEvent, from_fields

from support.procs import beatbus_cmd, free_port, spawn, stop

PASSWORD = "Pw-s3cret-4f9a1c7e"          # distinctive: grep finds any leak
pytestmark = pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("openssl")),
                                reason="needs Debian's redis-server (built with TLS) and openssl")


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=beatbus test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


class SecureRedis:
    """redis-server: the default user off, user ``beatbus`` with a password; plain and TLS ports."""

    def __init__(self, d):
        self.d, self.port, self.tls_port = d, free_port(), free_port()
        make_certs(d)
        (d / "users.acl").write_text(f"user default off\nuser beatbus on >{PASSWORD} ~* &* +@all\n")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--tls-port", str(self.tls_port),
             "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
             "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no", "--aclfile", str(d / "users.acl"),
             "--save", "", "--appendonly", "no", "--dir", str(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                Bus.connect(self.url()).close()
                break
            except BrokerError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server with TLS did not start (built without TLS?)") from None
                time.sleep(0.05)

    def url(self, password: str = PASSWORD, *, tls: bool = True) -> str:
        if tls:
            return f"rediss://beatbus:{password}@127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.d / 'ca.pem'}"
        return f"redis://beatbus:{password}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    srv = SecureRedis(tmp_path_factory.mktemp("secure-redis"))
    yield srv
    srv.stop()


@pytest.fixture
def sbus(secure):
    b = Bus.connect(secure.url(), name="secure-test")
    b.redis.flushall()
    yield b
    b.close()


def test_acl_and_tls_connect_and_fail_clearly(secure, sbus):
    assert sbus.redis.acl_whoami() == "beatbus"
    Bus.connect(secure.url(tls=False)).close()                     # ACL over plain TCP too
    with pytest.raises(BrokerError, match="refused the credentials") as exc:
        Bus.connect(secure.url("wrong-password"))
    assert "wrong-password" not in str(exc.value) and "***" in str(exc.value)
    with pytest.raises(BrokerError, match="certificate verify failed") as exc:   # no CA: the server is not trusted
        Bus.connect(f"rediss://beatbus:{PASSWORD}@127.0.0.1:{secure.tls_port}/0")
    assert PASSWORD not in str(exc.value)
    with pytest.raises(BrokerError) as exc:                         # the default user is off
        Bus.connect(f"redis://127.0.0.1:{secure.port}/0")
    assert "NOAUTH" in str(exc.value) or "Authentication" in str(exc.value) or "credentials" in str(exc.value)
    assert PASSWORD not in redact_url(f"redis://127.0.0.1:{secure.port}/0?password={PASSWORD}")


def test_pipeline_over_acl_and_tls(secure, sbus, caplog):
    """click producer -> beat processor -> terminal consumer, every client on rediss:// with a password."""
    caplog.set_level(logging.DEBUG)
    settings = load_settings({"redis_url": secure.url(), "metrics_addr": "off", "lease_ttl": 1.0, "heartbeat": 0.2,
                              "block_ms": 100, "claim_idle_ms": 200, "log_level": "debug"}, env={})
    buses = [Bus.connect(settings.redis_url, name=n) for n in ("terminal", "processor", "producer")]
    out = io.StringIO()
    terminal = TerminalConsumer(buses[0], settings=settings, sources=["default"], out=out, color=False)
    processor = BeatService(buses[1], settings=settings, make_processor=lambda: BeatProcessor(backend="dsp"),
                            sources=["default"])
    producer = Publisher(buses[2], ClickSource(120, realtime=False, duration=8.0), settings=settings)
    try:
        assert run_services([terminal, processor, producer], until=[terminal], duration=60) == 0
    finally:
        for b in buses:
            b.close()
    beats = [e for _, f in sbus.redis.xrange(keys.stream("default", "beats"))
             if isinstance(e := from_fields(f), BeatEvent)]
    assert len(beats) >= 10 and abs(beats[-1].bpm - 120) < 3
    assert PASSWORD not in caplog.text and PASSWORD not in out.getvalue()


def test_rq_job_over_acl_and_tls(secure, sbus):
    conn = rq_connection(secure.url())
    q = Queue("security-test", connection=conn)
    job = q.enqueue("builtins.sum", [1, 2, 3])
    assert SimpleWorker([q], connection=conn).work(burst=True)
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() == 6
    with pytest.raises(redis.AuthenticationError):
        rq_connection(secure.url("wrong")).ping()


def test_daemon_with_a_wrong_password_fails_in_one_line(secure):
    r = beatbus_cmd("process", "--sources", "default", env={"REDIS_URL": secure.url("wrong-password")}, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("beatbus: error: broker at rediss://beatbus:***@")
    assert "refused the credentials" in lines[0]
    assert "wrong-password" not in r.stderr + r.stdout


def test_daemon_logs_and_metrics_never_show_the_password(secure, sbus):
    port = free_port()
    proc = spawn("process", "--sources", "default", "--log-level", "debug",
                  env={"REDIS_URL": secure.url(), "BEATBUS_METRICS_ADDR": f"127.0.0.1:{port}"})
    metrics = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=2).text
                break
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        rc, out, err = stop(proc)
    assert metrics.startswith("#") and rc == 0, err
    for text in (metrics, out, err):
        assert PASSWORD not in text
