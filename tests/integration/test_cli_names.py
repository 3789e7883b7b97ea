"""One name per concept across CLI, TOML, environment: the new names work through the real CLI, and each old
spelling still works but says the new name (once), so existing scripts and unit files do not break."""
from __future__ import annotations

import time

import httpx
import pytest

from support.procs import beatbus_cmd, free_port, spawn, stop

NEW_URL = "--error-generator-url"


def _deprecation(stderr: str, old: str, new: str) -> None:
    lines = [ln for ln in stderr.splitlines() if "deprecated" in ln]
    assert lines == [f"beatbus: warning: {old} is deprecated; use {new}"], stderr
    assert "Traceback" not in stderr


@pytest.fixture
def receiver():
    """`beatbus dev error-generator`: the reference receiver, as a user starts it."""
    port = free_port()
    proc = spawn("dev", "error-generator", "--port", str(port))
    line = proc.stdout.readline()
    assert line.startswith(f"BEATBUS_ERROR_GENERATOR_URL=http://127.0.0.1:{port}"), line
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def _received(url: str) -> int:
    return len(httpx.get(f"{url}/received", trust_env=False).json())


@pytest.mark.parametrize("flag", [NEW_URL, "--trigger"])
def test_run_fires_triggers_at_the_error_generator_url(receiver, flag):
    before = _received(receiver)
    r = beatbus_cmd("run", "--click", "120", "--duration", "4", "--backend", "dsp", flag, receiver, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _received(receiver) - before >= 3, r.stderr           # beats -> POST /api/rhythm-trigger
    if flag == NEW_URL:
        assert "deprecated" not in r.stderr
    else:
        _deprecation(r.stderr, "--trigger", NEW_URL)


@pytest.mark.parametrize("flag", [NEW_URL, "--trigger-url"])
def test_api_takes_the_error_generator_url(broker, tmp_path, flag):
    port = free_port()
    proc = spawn("api", "--port", str(port), flag, "http://127.0.0.1:9",
                  env={"REDIS_URL": broker.url, "BEATBUS_STATE_DIR": str(tmp_path), "BEATBUS_LOG_LEVEL": "warning"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        rc, _out, err = stop(proc)
    assert rc == 0, err
    assert "triggers -> http://127.0.0.1:9" in err
    if flag == NEW_URL:
        assert "deprecated" not in err
    else:
        _deprecation(err, "--trigger-url", NEW_URL)


@pytest.mark.parametrize("args, env, old", [
    ([NEW_URL, "ftp://new"], {}, None),
    (["--url", "ftp://new"], {}, "--url"),
    ([], {"BEATBUS_ERROR_GENERATOR_URL": "ftp://new"}, None),
    ([], {"ERROR_GENERATOR_URL": "ftp://new"}, "ERROR_GENERATOR_URL"),
    ([], {"BEATBUS_TRIGGER_URL": "ftp://new"}, "BEATBUS_TRIGGER_URL"),
])
def test_consume_trigger_reads_the_url_under_its_one_name(args, env, old):
    # an ftp:// URL is refused before any broker is needed: the message shows which value was read
    r = beatbus_cmd("consume", "trigger", *args, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("beatbus: error: error generator URL 'ftp://new' must be an "
                                                 "http:// or https:// URL with a host")
    if old is None:
        assert "deprecated" not in r.stderr
    else:
        _deprecation(r.stderr, old, NEW_URL if old == "--url" else "BEATBUS_ERROR_GENERATOR_URL")


@pytest.mark.parametrize("key, old", [("error_generator_url", False), ("url", True)])
def test_the_trigger_table_key(tmp_path, key, old):
    cfg = tmp_path / "beatbus.toml"
    cfg.write_text(f'[trigger]\n{key} = "ftp://toml"\n')
    r = beatbus_cmd("consume", "trigger", "--config", str(cfg), timeout=60)
    assert r.returncode == 2 and "error generator URL 'ftp://toml' must be" in r.stderr, r.stderr
    if old:
        _deprecation(r.stderr, "[trigger] url", "[trigger] error_generator_url")
    # the environment and the flag still win over the file
    r = beatbus_cmd("consume", "trigger", "--config", str(cfg), env={"BEATBUS_ERROR_GENERATOR_URL": "ftp://env"})
    assert "'ftp://env' must be" in r.stderr, r.stderr


@pytest.mark.parametrize("flag", ["--mic-device", "--device"])
def test_produce_mic_names_the_input_device_like_run(flag):
    r = beatbus_cmd("produce", "mic", flag, "99", timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("beatbus: error: audio device 99 does not exist"), r.stderr
    if flag == "--device":
        _deprecation(r.stderr, "--device", "--mic-device")
    else:
        assert "deprecated" not in r.stderr


@pytest.mark.parametrize("flag", ["--output-latency-ms", "--latency-ms"])
def test_consume_led_output_latency_has_the_url_keys_name(flag):
    r = beatbus_cmd("consume", "led", "--output", "terminal://", flag, "5000", timeout=60)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("beatbus: error: ") and "output_latency_ms" in last, r.stderr
    if flag == "--latency-ms":
        _deprecation(r.stderr, "--latency-ms", "--output-latency-ms")


@pytest.mark.parametrize("command, new, old", [
    (["run"], NEW_URL, "--trigger"),
    (["api"], NEW_URL, "--trigger-url"),
    (["consume", "trigger"], NEW_URL, "--url"),
    (["produce", "mic"], "--mic-device", "--device"),
    (["consume", "led"], "--output-latency-ms", "--latency-ms"),
])
def test_help_shows_only_the_new_name(command, new, old):
    out = beatbus_cmd(*command, "--help", timeout=60).stdout
    assert new in out and f"{old} " not in out and f"{old}\n" not in out, out


def test_deploy_writes_the_new_environment_variable(tmp_path):
    r = beatbus_cmd("deploy", "install", "--prefix", str(tmp_path), "--dry-run", NEW_URL, "http://10.0.0.9:9090",
                    "--producer", "stage=mic --mic-device 2", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "\nBEATBUS_ERROR_GENERATOR_URL=http://10.0.0.9:9090\n" in r.stdout
    assert "\nERROR_GENERATOR_URL" not in r.stdout and "BEATBUS_PRODUCE_ARGS=mic --mic-device 2" in r.stdout
