"""Generation jobs on a plain Redis (``BEATBUS_RQ_URL``) while the bus is a real Redis Cluster.

rq cannot run on a cluster (MULTI/EXEC over keys of several slots), so its queue and jobs go to
``rq_url``: the real worker, ``generate submit``/``status``, the API and the exporter, as
processes. Without ``rq_url`` a cluster broker is refused in one line (the API still starts,
its generation routes answer 503; the exporter serves the streams and leaves rq out).
"""
from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from support.cluster import RedisClusterNodes
from support.paths import ROOT
from support.procs import RedisServer, beatbus_cmd, cli_env, eventually, free_port, spawn, stop

QUEUE = "rq-url-q"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("rq")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rq_conn(plain):
    conn = redis.Redis.from_url(plain.url)
    conn.flushdb()
    yield conn
    conn.close()


def env_for(cluster, tmp_path, rq_url: str | None = None, **extra) -> dict:
    env = {"REDIS_URL": cluster.url, "BEATBUS_STATE_DIR": str(tmp_path / "state"), "BEATBUS_GENERATE_QUEUE": QUEUE,
           "BEATBUS_METRICS_ADDR": "off", "BEATBUS_GENERATE_TORCH_THREADS": "1", **extra}
    if rq_url:
        env["BEATBUS_RQ_URL"] = rq_url
    return env


def rq_keys_on_cluster(cluster) -> list[bytes]:
    found = []
    for port in cluster.master_ports():
        with redis.Redis(port=port) as node:
            found += list(node.scan_iter(match="rq:*"))
    return found


def one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def metrics(port: int, proc: subprocess.Popen, until: str = "beatbus_streams_up") -> dict:
    """A scrape once ``until`` is in it (/metrics is served before the collectors are registered)."""
    def scrape():
        assert proc.poll() is None, proc.stderr.read()
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=2).text
        except httpx.TransportError:
            return None
        return text if until in text else None

    text = eventually(scrape, 60, f"{until} on the exporter's /metrics")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def wait_http(port: int, proc: subprocess.Popen) -> None:
    def up():
        assert proc.poll() is None, proc.stderr.read()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2)
        except httpx.TransportError:
            return None

    eventually(up, 60, "the API's /health")


def test_jobs_go_to_rq_url_while_the_bus_is_a_cluster(cluster, plain, rq_conn, tmp_path):
    env = env_for(cluster, tmp_path, plain.url, BEATBUS_LOG_LEVEL="warning")
    log_path = tmp_path / "worker.log"
    api_port = free_port()
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "worker", "--preload", "lstm"],
                                  env=cli_env(env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        api = spawn("api", "--port", str(api_port), env=env)
        try:
            # the worker registers on the plain server (rq's own view of it)
            eventually(lambda: Worker.all(connection=rq_conn, queue=Queue(QUEUE, connection=rq_conn)), 120,
                       lambda: f"a worker on the plain rq server; log: {log_path.read_text()[-2000:]}")
            r = beatbus_cmd("generate", "submit", "--kind", "lstm", "--bars", "4", "--tempo", "120", env=env,
                            timeout=120)
            assert r.returncode == 0, r.stderr
            gid = orjson.loads(r.stdout)["generation_id"]
            queue = Queue(QUEUE, connection=rq_conn, serializer=JSONSerializer)
            assert queue.fetch_job(gid) is not None                     # enqueued on the plain server
            eventually(lambda: Job.fetch(gid, connection=rq_conn, serializer=JSONSerializer).get_status() == "finished",
                       120, lambda: f"job {gid} finished; log: {log_path.read_text()[-2000:]}")
            r = beatbus_cmd("generate", "status", gid, env=env, timeout=60)
            assert r.returncode == 0 and orjson.loads(r.stdout)["status"] == "finished", r.stderr

            wait_http(api_port, api)
            base = f"http://127.0.0.1:{api_port}"
            resp = httpx.post(f"{base}/api/generate", json={"kind": "lstm", "bars": 4, "tempo": 100},
                              trust_env=False, timeout=30)
            assert resp.status_code == 202, resp.text
            api_gid = resp.json()["generation_id"]
            assert queue.fetch_job(api_gid) is not None

            def api_finished():
                st = httpx.get(f"{base}/api/status/{api_gid}", trust_env=False, timeout=10)
                assert st.status_code == 200, st.text
                return st.json()["status"] == "finished"

            eventually(api_finished, 120, f"API job {api_gid} finished")
            assert rq_keys_on_cluster(cluster) == []                      # nothing of rq on the cluster
        finally:
            rc_api, _, api_err = stop(api)
            worker.terminate()
            rc_worker = worker.wait(60)
    assert rc_api == 0 and "Traceback" not in api_err, api_err
    assert rc_worker == 0 and "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


def test_a_cluster_broker_without_rq_url_is_refused_in_one_line(cluster, tmp_path):
    env = env_for(cluster, tmp_path)
    for args in (("generate", "submit", "--kind", "lstm", "--bars", "4"), ("generate", "status", "g123"),
                 ("worker", "--preload", "lstm")):
        line = one_line_error(beatbus_cmd(*args, env=env, timeout=120))
        assert line == ("beatbus: error: REDIS_URL is a Redis Cluster; rq needs a plain Redis: set BEATBUS_RQ_URL "
                        "(or rq_url / --rq-url)"), (args, line)
    assert rq_keys_on_cluster(cluster) == []


def test_a_cluster_rq_url_is_refused_in_one_line(cluster, tmp_path):
    env = env_for(cluster, tmp_path)
    line = one_line_error(beatbus_cmd("generate", "submit", "--kind", "lstm", "--bars", "4", "--rq-url",
                                      cluster.url, env=env, timeout=120))
    assert line.startswith("beatbus: error: rq_url redis+cluster://") and "rq needs a plain Redis" in line, line


def test_exporter_reports_rq_from_rq_url(cluster, plain, rq_conn, tmp_path):
    port = free_port()
    Queue("gen-q", connection=rq_conn, serializer=JSONSerializer).enqueue("builtins.len", "x")
    proc = spawn("exporter", "--queue", "gen-q", env=env_for(cluster, tmp_path, plain.url,
                                                             BEATBUS_METRICS_ADDR=f"127.0.0.1:{port}"))
    try:
        values = metrics(port, proc, until="beatbus_rq_up")
    finally:
        rc, _, err = stop(proc)
    assert values[("beatbus_rq_up", ())] == 1
    assert values[("beatbus_rq_jobs", (("queue", "gen-q"), ("state", "queued")))] == 1
    assert ("beatbus_streams_up", ()) in values
    assert rc == 0 and "Traceback" not in err, err


def test_exporter_without_rq_url_serves_the_streams_and_says_why_once(cluster, tmp_path):
    port = free_port()
    proc = spawn("exporter", "--queue", "gen-q", env=env_for(cluster, tmp_path, BEATBUS_METRICS_ADDR=f"127.0.0.1:{port}"))
    try:
        metrics(port, proc)
        values = metrics(port, proc)                                   # a second scrape says nothing more
    finally:
        rc, _, err = stop(proc)
    assert ("beatbus_streams_up", ()) in values
    assert not any(name.startswith("beatbus_rq_") for name, _ in values)
    assert err.count("rq metrics left out") == 1 and "BEATBUS_RQ_URL" in err, err
    assert rc == 0 and "Traceback" not in err, err


def test_api_without_rq_url_starts_and_answers_503_on_generation(cluster, tmp_path):
    port = free_port()
    proc = spawn("api", "--port", str(port), env=env_for(cluster, tmp_path))
    try:
        wait_http(port, proc)
        base = f"http://127.0.0.1:{port}"
        gen = httpx.post(f"{base}/api/generate", json={"kind": "lstm", "bars": 4}, trust_env=False, timeout=30)
        st = httpx.get(f"{base}/api/status/g123", trust_env=False, timeout=30)
    finally:
        rc, _, err = stop(proc)
    for resp in (gen, st):
        assert resp.status_code == 503, resp.text
        assert resp.json()["detail"] == ("REDIS_URL is a Redis Cluster; rq needs a plain Redis: set BEATBUS_RQ_URL "
                                         "(or rq_url / --rq-url)")
    assert rc == 0 and "Traceback" not in err, err
