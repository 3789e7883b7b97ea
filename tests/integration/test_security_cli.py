"""``beatbus api keys create|list|revoke`` and ``beatbus api`` with keys, as a user runs them."""
from __future__ import annotations

import stat
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from support.procs import beatbus_cmd, free_port, spawn, stop


def test_keys_round_trip(tmp_path):
    env = {"BEATBUS_API_KEYS_FILE": str(tmp_path / "state" / "api-keys.json")}
    r = beatbus_cmd("api", "keys", "create", "--scope", "read", "--scope", "trigger,control", "--name", "stage-pc",
                    env=env)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("bb_") and " " not in token and len(token) > 40
    _, key_id, secret = token.split("_", 2)  # bb_<id>_<secret>; the url-safe secret may contain "_" itself
    path = tmp_path / "state" / "api-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret not in path.read_text()           # only the digest is stored
    listed = beatbus_cmd("api", "keys", "list", env=env)
    assert listed.returncode == 0 and key_id in listed.stdout and "stage-pc" in listed.stdout
    assert "read,trigger,control" in listed.stdout and token not in listed.stdout
    assert secret[:10] not in listed.stdout + listed.stderr + r.stderr
    bad = beatbus_cmd("api", "keys", "create", "--scope", "admin", env=env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("beatbus: error: scope admin")
    assert beatbus_cmd("api", "keys", "revoke", key_id, env=env).returncode == 0
    assert key_id not in beatbus_cmd("api", "keys", "list", env=env).stdout
    again = beatbus_cmd("api", "keys", "revoke", key_id, env=env)
    assert again.returncode == 2 and f"no API key with id {key_id!r}" in again.stderr


def test_non_loopback_bind_without_keys_is_refused(tmp_path):
    r = beatbus_cmd("api", "--host", "0.0.0.0", "--port", str(free_port()),
                    env={"BEATBUS_API_KEYS_FILE": str(tmp_path / "none.json")}, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("beatbus: error: refusing to serve the API on 0.0.0.0 without API keys")
    r = beatbus_cmd("api", "--rate", "trigger=fast", env={"BEATBUS_API_KEYS_FILE": str(tmp_path / "none.json")})
    assert r.returncode == 2 and "SCOPE=PER_SECOND/BURST" in r.stderr.strip().splitlines()[-1]
    (tmp_path / "bb.toml").write_text('[api]\nrates = {generate = "0/1"}\n')       # the [api] table is checked
    r = beatbus_cmd("api", "--config", str(tmp_path / "bb.toml"))
    assert r.returncode == 2 and "rate 'generate=0/1'" in r.stderr.strip().splitlines()[-1]


def test_api_with_file_and_env_keys(broker, tmp_path):
    keys_file = str(tmp_path / "api-keys.json")
    file_token = beatbus_cmd("api", "keys", "create", "--scope", "read", env={"BEATBUS_API_KEYS_FILE": keys_file}
                             ).stdout.strip().splitlines()[-1]
    made = beatbus_cmd("api", "keys", "create", "--env", "--scope", "read", "--name", "ci")
    env_token = made.stdout.strip().splitlines()[-1]
    entry = made.stderr.strip().splitlines()[-1].split(": ", 1)[1]
    assert entry.startswith("ci:read:") and env_token not in made.stderr
    port = free_port()
    proc = spawn("api", "--port", str(port), "--no-generate", "--rate", "read=1000/1000",
                  env={"REDIS_URL": broker.url, "BEATBUS_API_KEYS_FILE": keys_file, "BEATBUS_API_KEYS": entry})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(f"{url}/health", trust_env=False, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{url}/api/sources", trust_env=False).status_code == 401
        for token in (file_token, env_token):
            r = httpx.get(f"{url}/api/sources", headers={"Authorization": f"Bearer {token}"}, trust_env=False)
            assert r.status_code == 200, r.text
        # a key in a query string is refused, and uvicorn's handshake line must not log it either
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(f"ws://127.0.0.1:{port}/ws/alpha?key={file_token}", open_timeout=5).close()
        assert refused.value.response.status_code == 401
    finally:
        rc, out, err = stop(proc)
    assert rc == 0 and f"API keys required (1 in {keys_file}, 1 from BEATBUS_API_KEYS)" in err, err
    assert "/ws/alpha?..." in err            # the refusal is logged, without its query
    assert file_token not in err + out and env_token not in err + out
