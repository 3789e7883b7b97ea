"""API authentication, scopes, rate limits, upload limits, CORS and SSRF, through a real uvicorn server."""
from __future__ import annotations

import logging
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from beatbus.api.app import ApiLimits, create_app
from beatbus.api.auth import KeyStore
from beatbus.api.deps import Guard, require
from beatbus.api.ratelimit import Rate, TokenBuckets, parse_rates
from beatbus.api.server import ApiServer
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.generate.api import build_router
from beatbus.consumers.trigger import load_trigger_config
from beatbus.errors import ConfigError
from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.generate import context, encode, gen_config, offering, tone
from support.procs import free_port

LIMITS = ApiLimits(body_bytes=16 * 1024, upload_bytes=256 * 1024, upload_seconds=20.0)
RATES = parse_rates(["read=1000/1000", "control=1000/1000", "trigger=1/2", "generate=1000/1000"])
ALL = ("read", "control", "trigger", "generate")


@pytest.fixture(scope="module")
def receivers():
    with ReferenceReceiver() as good, ReferenceReceiver() as hostile:
        yield good, hostile


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return KeyStore(tmp_path_factory.mktemp("keys") / "api-keys.json")


@pytest.fixture(scope="module")
def tokens(store):
    """One key per scope, plus one with every scope."""
    out = {scope: store.create([scope], name=f"only-{scope}")[1] for scope in ALL}
    out["all"] = store.create(list(ALL), name="all")[1]
    return out


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    missing = tmp_path_factory.mktemp("no-models")          # the API never loads a model
    return gen_config(tmp_path_factory.mktemp("state"), {k: missing / k for k in ("musicgen", "melody", "clap")},
                      embed_uploads=False, max_upload_bytes=128 * 1024, max_upload_seconds=2.0)


@pytest.fixture(scope="module")
def server(broker, store, tokens, receivers, gen):
    settings = load_settings({"redis_url": broker.url, "metrics_addr": "off", "block_ms": 100}, env={})
    bus = Bus.connect(broker.url, name="security-test")
    trigger = load_trigger_config({"url": receivers[0].url, "max_age": 5.0, "backoff_base": 0.005}, env={})
    router = build_router(bus, gen, read_dependencies=[require("read")], write_dependencies=[require("generate")])
    app = create_app(bus, settings, trigger=trigger, limits=LIMITS, routers=[router],
                     guard=Guard(store=store, buckets=TokenBuckets(RATES)))
    with ApiServer(app, port=free_port()) as srv:
        yield srv
    bus.close()


def client(server, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30, trust_env=False)


def wav(seconds: float) -> bytes:
    return encode(tone(seconds, sr=8000), 8000)


# One request per guarded route class: (scope, method, path, kwargs).
ROUTES = [
    ("read", "GET", "/api/sources", {}),
    ("read", "GET", "/api/rhythm-mode", {}),
    ("read", "GET", "/api/status/g0123456789abcdef", {}),
    ("control", "POST", "/api/sources/default/control", {"json": {"sensitivity": 0.5}}),
    ("trigger", "POST", "/api/stop-rhythm-mode", {}),
    ("generate", "POST", "/api/generate", {"json": {"kind": "lstm", "duration": 10_000}}),
]


def test_health_is_open_and_guarded_routes_need_a_key(server):
    with client(server) as c:
        assert c.get("/health").status_code == 200
        for _scope, method, path, kw in ROUTES:
            r = c.request(method, path, **kw)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer") and "missing API key" in r.json()["detail"]


@pytest.mark.parametrize("bad", ["nonsense", "bb_deadbeef_" + "A" * 43, "Basic dXNlcjpwYXNz"])
def test_bad_keys_are_refused(server, tokens, bad):
    real = tokens["all"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")   # a real id with a wrong secret
    for token in (bad, forged):
        with client(server, token) as c:
            r = c.get("/api/sources")
            assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API key"


def test_each_scope_opens_its_routes_only(server, tokens, bus):
    bus.heartbeat("default")                      # a known source, so control answers 200
    for scope, method, path, kw in ROUTES:
        for key_scope in ALL:
            with client(server, tokens[key_scope]) as c:
                r = c.request(method, path, **kw)
            if key_scope == scope:
                assert r.status_code not in (401, 403, 429), (scope, path, r.status_code, r.text)
            else:
                assert r.status_code == 403, (key_scope, path, r.text)
                assert f"lacks the {scope!r} scope" in r.json()["detail"]


def test_scope_routes_do_their_work(server, tokens, receivers, gen, bus):
    bus.heartbeat("default")
    good, _ = receivers
    good.clear()
    with client(server, tokens["read"]) as c:
        r = c.get("/api/sources")
        assert r.status_code == 200 and "sources" in r.json()
    with client(server, tokens["trigger"]) as c:
        r = c.post("/api/beat-trigger", json={"section": "chorus", "beat_num": 3, "tempo": 120})
        assert r.status_code == 200 and r.json()["outcome"] == "delivered"
    with client(server, tokens["generate"]) as c:
        r = c.post("/api/upload", files={"file": ("take.wav", wav(1.0), "audio/wav")})
        assert r.status_code == 201 and r.json()["audio_id"]
    with client(server, tokens["control"]) as c:
        r = c.post("/api/sources/default/control", json={"sensitivity": 0.7})
        assert r.status_code == 200 and r.json()["event"]["sensitivity"] == 0.7


def test_revoked_key_is_refused_at_once(server, store):
    key, token = store.create(["read"], name="short-lived")
    with client(server, token) as c:
        assert c.get("/api/sources").status_code == 200
        KeyStore(store.path).revoke(key.id)        # another process (the CLI) edits the file
        assert c.get("/api/sources").status_code == 401


def test_websocket_needs_a_key(server, tokens):
    url = server.url.replace("http://", "ws://") + "/ws/default"
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(url, open_timeout=5).close()
    assert exc.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(url, subprotocols=["beatbus.v1", "bearer.bb_deadbeef_" + "x" * 43], open_timeout=5).close()
    assert exc.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(url, subprotocols=["beatbus.v1", f"bearer.{tokens['trigger']}"], open_timeout=5).close()
    assert exc.value.response.status_code == 403
    # a browser offers the key as a subprotocol and gets beatbus.v1 back
    with ws_connect(url, subprotocols=["beatbus.v1", f"bearer.{tokens['read']}"], open_timeout=5) as ws:
        assert ws.subprotocol == "beatbus.v1"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {tokens['read']}"}, open_timeout=5) as ws:
        assert ws.subprotocol is None


def test_rate_limit_429_with_retry_after_then_recovery(server, store):
    _, token = store.create(["trigger", "read"], name="burst")
    _, other = store.create(["trigger"], name="other")
    with client(server, token) as c, client(server, other) as o:
        codes = [c.post("/api/stop-rhythm-mode").status_code for _ in range(3)]     # trigger: burst 2
        assert codes[:2] == [200, 200] and codes[2] == 429
        r = c.post("/api/stop-rhythm-mode")
        assert r.status_code == 429 and "rate limit" in r.json()["detail"]
        retry = int(r.headers["retry-after"])
        assert 1 <= retry <= 2
        assert o.post("/api/stop-rhythm-mode").status_code == 200      # per key
        assert c.get("/api/rhythm-mode").status_code == 200           # per route
        time.sleep(retry + 0.05)
        assert c.post("/api/stop-rhythm-mode").status_code == 200


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    b = TokenBuckets({"trigger": Rate(2.0, 2.0)}, clock=lambda: now[0], max_buckets=2)
    assert [b.take("k", "/r", "trigger") for _ in range(2)] == [0.0, 0.0]
    assert b.take("k", "/r", "trigger") == pytest.approx(0.5)
    now[0] += 0.5
    assert b.take("k", "/r", "trigger") == 0.0
    with pytest.raises(ConfigError, match="SCOPE=PER_SECOND/BURST"):
        parse_rates("trigger=fast")


def test_upload_limits_and_types(server, tokens, gen):
    with client(server, tokens["generate"]) as c:
        big = c.post("/api/upload", files={"file": ("big.wav", b"\0" * (300 * 1024), "audio/wav")})
        assert big.status_code == 413, big.text
        fake = c.post("/api/upload", files={"file": ("song.wav", b"MZ\x90\0 not audio at all" * 50, "audio/wav")})
        assert fake.status_code == 415, fake.text
        one = c.post("/api/upload", files={"file": ("one.wav", encode(tone(1 / 8000, sr=8000), 8000), "audio/wav")})
        assert one.status_code == 422 and "at least" in one.json()["detail"], one.text    # audio, one sample
        long = c.post("/api/upload", files={"file": ("long.wav", wav(3.0), "audio/wav")})    # limit 2 s
        assert long.status_code == 413 and "limit" in long.json()["detail"], long.text
        evil = c.post("/api/upload", files={"file": ("../../../../tmp/pwned.wav", wav(1.0), "audio/wav")})
        assert evil.status_code == 201, evil.text
        audio_id = evil.json()["audio_id"]
        # generation's duration limit is checked before any job is queued (no model runs)
        r = c.post("/api/generate", json={"kind": "musicgen", "prompt": "x", "duration": 10_000})
        assert r.status_code == 422 and "duration" in r.json()["detail"]
    stored = list(gen.state_path.rglob("*"))
    assert all(gen.state_path in p.parents for p in stored)
    assert not any("pwned" in p.name or ".." in p.name for p in stored)
    assert any(audio_id in str(p) for p in stored)
    with client(server, tokens["read"]) as c:
        big = c.post("/api/analyze-song", content=b"\0" * (300 * 1024), headers={"content-type": "audio/wav"})
        assert big.status_code == 413 and "larger than the limit" in big.json()["detail"]     # JSON, like any error
        fake = c.post("/api/analyze-song", content=b"not audio" * 100, headers={"content-type": "audio/wav"})
        assert fake.status_code == 415


def test_requests_cannot_redirect_triggers_or_callbacks(server, tokens, receivers, bus):
    """SSRF: hosts come from configuration only; URL-ish fields in requests are refused or ignored."""
    good, hostile = receivers
    good.clear(), hostile.clear()
    with client(server, tokens["all"]) as c:
        r = c.post("/api/beat-trigger", json={"section": "verse", "beat_num": 1, "tempo": 100, "url": hostile.url})
        assert r.status_code == 422                               # unknown fields are refused
        r = c.post("/api/beat-trigger", json={"section": "verse", "beat_num": 1, "tempo": 100},
                   headers={"X-Forwarded-Host": hostile.url, "Host": f"127.0.0.1:{server.port}"})
        assert r.status_code == 200
        song = {"tempo": 240, "url": hostile.url, "callback": hostile.url, "error_generator_url": hostile.url}
        r = c.post("/api/start-rhythm-mode", json={"song_data": song, "duration": 1.0})
        assert r.status_code in (200, 422), r.text
        bus.heartbeat("default")
        for host_field in ("led_host", "url", "output"):         # LED outputs come from the LED config only
            r = c.post("/api/sources/default/control", json={"sensitivity": 0.5, host_field: hostile.url})
            assert r.status_code == 422, r.text
        for body in ({"kind": "lstm", "callback_url": hostile.url}, {"kind": "lstm", "webhook": hostile.url}):
            r = c.post("/api/generate", json=body)
            assert r.status_code == 422, r.text
        time.sleep(1.5)
        c.post("/api/stop-rhythm-mode")
    assert good.received(), "the configured receiver got the triggers"
    assert not hostile.received(), hostile.received()


def test_cors_off_by_default_and_explicit_when_configured(server, tokens, broker):
    pre = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization"}
    with client(server) as c:
        r = c.options("/api/beat-trigger", headers=pre)
        assert "access-control-allow-origin" not in r.headers
        r = c.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    settings = load_settings({"redis_url": broker.url, "metrics_addr": "off"}, env={})
    bus = Bus.connect(broker.url)
    app = create_app(bus, settings, cors_origins=["http://dash.example"])
    with ApiServer(app, port=free_port()) as srv, httpx.Client(base_url=srv.url, trust_env=False) as c:
        ok = c.options("/api/sources", headers={**pre, "Origin": "http://dash.example"})
        assert ok.headers["access-control-allow-origin"] == "http://dash.example"
        bad = c.options("/api/sources", headers=pre)
        assert bad.headers.get("access-control-allow-origin") != "http://evil.example"
    bus.close()


def test_open_mode_is_loopback_only(broker):
    settings = load_settings({"redis_url": broker.url, "metrics_addr": "off"}, env={})
    bus = Bus.connect(broker.url)
    app = create_app(bus, settings)                               # no keys
    with pytest.raises(ConfigError, match="refusing to serve the API on 0.0.0.0 without API keys"):
        ApiServer(app, host="0.0.0.0", port=free_port())          # refused before any socket is bound
    with ApiServer(app, port=free_port()) as srv, httpx.Client(base_url=srv.url, trust_env=False) as c:
        assert c.get("/api/sources").status_code == 200
        # DNS rebinding: a page on another name that resolves to 127.0.0.1 is refused
        r = c.get("/api/sources", headers={"Host": "attacker.example"})
        assert r.status_code == 401 and "localhost" in r.json()["detail"]
    bus.close()


def test_no_token_in_logs_or_metrics(server, tokens, caplog):
    caplog.set_level(logging.DEBUG)
    with client(server, tokens["all"]) as c:
        c.get("/api/sources"), c.post("/api/stop-rhythm-mode"), c.get("/api/status/nope")
        c.post("/api/upload", files={"file": ("x.wav", b"junk", "audio/wav")})
        metrics = c.get("/metrics").text
    with client(server, tokens["all"][:-2] + "zz") as c:
        c.get("/api/sources")
    text = caplog.text + metrics
    assert "beatbus_api_auth_failures_total" in metrics
    for token in tokens.values():
        secret = token.split("_", 2)[-1]  # bb_<id>_<secret>; the secret itself may hold "_"
        assert token not in text and secret[:16] not in text


def test_a_key_sees_only_its_own_generation_jobs(server, tokens, store, bus, broker, gen):
    """`read` covers downloads of *your own* jobs: another key gets 404, as if the job did not exist."""
    _, other = store.create(["read", "generate"], name="other-user")
    with offering(context(bus, broker, gen), bus, kinds=("lstm",)), client(server, tokens["all"]) as c:
        r = c.post("/api/generate", json={"kind": "lstm", "tempo": 100, "bars": 4})
        assert r.status_code == 202, r.text
        job = r.json()["generation_id"]
        assert c.get(f"/api/status/{job}").status_code == 200
    with client(server, other) as c:
        assert c.get(f"/api/status/{job}").status_code == 404
        assert c.get(f"/api/download/{job}").status_code == 404
    with client(server, tokens["read"]) as c:
        assert c.get(f"/api/status/{job}").status_code == 404
