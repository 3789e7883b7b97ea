"""`beatbus deploy install|verify`: units for every daemon, env files, systemd-analyze verify/security."""
from __future__ import annotations

import json
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest

from beatbus.cli import build_parser
from beatbus.config import load_settings
from beatbus.deploy import SYSTEMD_DIR
from beatbus.deploy.units import DAEMONS, plan_install, plan_instances, read_env_file, render_unit
from beatbus.deploy.verify import check_units, expand_exec, format_report

from support.procs import beatbus_cmd

BEATBUS = str(Path(sys.prefix) / "bin" / "beatbus")
needs_systemd_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                           reason="systemd-analyze missing (install.sh installs the systemd package)")
INSTALL = ["--producer", "stage=mic --mic-device 2", "--producer", "bar=file /srv/music/set.flac --loop",
           "--processors", "2", "--intensity", "1", "--structure", "1", "--harmony", "1", "--workers", "1",
           "--led", "strip=--output ddp://10.0.0.20 --source stage", "--clock", "stage=--osc 10.0.0.7:9000",
           "--trigger", "--generate", "--api"]


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


@pytest.fixture(scope="module")
def staged_reachable(tmp_path_factory):
    """The same install with ExecStart in a venv every user can reach (outside /tmp, on the system's python):
    this checkout's own venv may resolve into /root/.pyenv, which a DynamicUser cannot enter."""
    from test_ops_verify_chain import SYSTEM_PYTHON, make_venv, outside_private_dirs

    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3 to build a reachable venv from")
    folder = outside_private_dirs()
    script = make_venv(folder / "venv", python=SYSTEM_PYTHON)
    root = tmp_path_factory.mktemp("root-reachable")
    r = beatbus_cmd("deploy", "install", "--prefix", str(root), "--exec", str(script),
                    "--redis-url", "redis://:s3cret@10.0.0.5:6379/0", *INSTALL, timeout=60)
    assert r.returncode == 0, r.stderr
    yield root
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A full install staged under a scratch prefix, through the real CLI."""
    root = tmp_path_factory.mktemp("root")
    r = beatbus_cmd("deploy", "install", "--prefix", str(root), "--redis-url", "redis://:s3cret@10.0.0.5:6379/0",
                    "--error-generator-url", "http://10.0.0.9:9090", *INSTALL, timeout=60)
    assert r.returncode == 0, r.stderr
    return root


def test_install_writes_a_unit_per_daemon_pointing_at_this_venv(staged):
    units = staged / "etc/systemd/system"
    assert {p.name for p in units.iterdir()} == {d.template for d in DAEMONS.values()} | {"beatbus.target"}
    assert Path(BEATBUS).exists()
    for d in DAEMONS.values():
        cfg = unit_settings((units / d.template).read_text())
        assert cfg["ExecStart"][0].split()[0] == BEATBUS, d.name
        assert cfg["Type"] == ["notify"] and cfg["Restart"] == ["on-failure"]
        assert "/etc/beatbus/beatbus.env" in cfg["EnvironmentFile"]
        assert cfg["DynamicUser"] == ["yes"] and cfg["User"] == ["beatbus"]       # one uid shares the state dir
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("StateDirectory", "beatbus"),
                           ("KillMode", "mixed"), ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6")):
            assert cfg[key] == [value], (d.name, key)
        assert "TimeoutStopSec" in cfg and "WantedBy" in cfg and cfg["PartOf"] == ["beatbus.target"]
        # every daemon pings the watchdog except the API (its server sends READY=1 only)
        assert "WatchdogSec" in cfg, d.name          # every daemon pings while its loop ticks
    producer = unit_settings((units / "beatbus-producer@.service").read_text())
    assert producer["SupplementaryGroups"] == ["audio"] and producer["DeviceAllow"] == ["char-alsa rw"]
    assert producer["Environment"][0] == "BEATBUS_SOURCE=%i"
    clock = unit_settings((units / "beatbus-clock@.service").read_text())     # MIDI: the ALSA sequencer
    assert clock["SupplementaryGroups"] == ["audio"] and clock["DeviceAllow"] == ["char-alsa rw"]
    assert clock["Environment"][0] == "BEATBUS_SOURCE=%i"
    worker = unit_settings((units / "beatbus-worker@.service").read_text())
    assert worker["TimeoutStopSec"] == ["15min"]         # rq's warm shutdown lets the running job finish


def test_env_files_are_private_and_targets_list_every_instance(staged):
    conf = staged / "etc/beatbus"
    env = conf / "beatbus.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    text = env.read_text()
    assert "REDIS_URL=redis://:s3cret@10.0.0.5:6379/0" in text and "\nBEATBUS_ERROR_GENERATOR_URL=http://10.0.0.9:9090\n" in text
    for p in conf.glob("*.env"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert (conf / "producer@stage.env").read_text().splitlines()[1:] == [
        "BEATBUS_METRICS_ADDR=127.0.0.1:9701", "BEATBUS_PRODUCE_ARGS=mic --mic-device 2"]
    targets = json.loads((conf / "prometheus-targets.json").read_text())
    by_unit = {t["labels"]["unit"]: t["targets"][0] for t in targets}
    assert by_unit == {"beatbus-processor@1": "127.0.0.1:9601", "beatbus-processor@2": "127.0.0.1:9602",
                       "beatbus-intensity@1": "127.0.0.1:9621", "beatbus-structure@1": "127.0.0.1:9641",
                       "beatbus-harmony@1": "127.0.0.1:9801",
                       "beatbus-worker@1": "127.0.0.1:9661", "beatbus-producer@stage": "127.0.0.1:9701",
                       "beatbus-producer@bar": "127.0.0.1:9702", "beatbus-led@strip": "127.0.0.1:9681",
                       "beatbus-clock@stage": "127.0.0.1:9821",
                       "beatbus-trigger": "127.0.0.1:9466", "beatbus-generate": "127.0.0.1:9467",
                       "beatbus-exporter": "127.0.0.1:9465", "beatbus-api": "127.0.0.1:8000"}
    assert len(set(by_unit.values())) == len(by_unit)                      # no two daemons share a port


def test_reinstall_keeps_the_edited_env_file_unless_forced(tmp_path):
    args = ("deploy", "install", "--prefix", str(tmp_path), "--processors", "1")
    assert beatbus_cmd(*args).returncode == 0
    env = tmp_path / "etc/beatbus/beatbus.env"
    env.write_text("REDIS_URL=redis://:edited@127.0.0.1/0\n")
    r = beatbus_cmd(*args)
    assert r.returncode == 0 and f"kept    {env}" in r.stdout and "edited" in env.read_text()
    assert beatbus_cmd(*args, "--force").returncode == 0 and "edited" not in env.read_text()
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_dry_run_writes_nothing_and_hides_the_password(tmp_path):
    r = beatbus_cmd("deploy", "install", "--prefix", str(tmp_path), "--dry-run", "--redis-url",
                    "redis://:s3cret@127.0.0.1/0", "--user", "beatbus")
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []
    assert "s3cret" not in r.stdout and "REDIS_URL=redis://:***@127.0.0.1/0" in r.stdout
    assert "User=beatbus\nGroup=beatbus" in r.stdout and "\nDynamicUser=" not in r.stdout
    assert "systemctl daemon-reload && systemctl enable --now beatbus.target" in r.stdout


def test_a_cluster_deployment_writes_the_cluster_url_and_the_plain_rq_url(tmp_path):
    r = beatbus_cmd("deploy", "install", "--prefix", str(tmp_path), "--processors", "2", "--workers", "1",
                    "--redis-url", "redis+cluster://10.0.0.5:7000", "--rq-url", "redis://10.0.0.9:6379/1")
    assert r.returncode == 0, r.stderr
    env = read_env_file(tmp_path / "etc/beatbus/beatbus.env")
    assert env["REDIS_URL"] == "redis+cluster://10.0.0.5:7000" and env["BEATBUS_RQ_URL"] == "redis://10.0.0.9:6379/1"
    # and the settings every daemon loads from that file accept both
    settings = load_settings({}, env=env)
    assert (settings.redis_url, settings.rq_url) == (env["REDIS_URL"], env["BEATBUS_RQ_URL"])


def test_a_dedicated_user_replaces_the_dynamic_one():
    plan = plan_install(beatbus=BEATBUS, user="svc-beat:audio", instances=[])
    text = next(f.content for f in plan.files if f.path.name == "beatbus-processor@.service")
    cfg = unit_settings(text)
    assert cfg["User"] == ["svc-beat"] and cfg["Group"] == ["audio"] and "DynamicUser" not in cfg


@needs_systemd_analyze
def test_systemd_analyze_verify_and_security_pass_on_every_unit(staged_reachable, capsys):
    staged = staged_reachable
    results = check_units(staged / "etc/systemd/system", config_dir=staged / "etc/beatbus", prefix=staged)
    with capsys.disabled():
        print("\n" + format_report(results))
    assert all(r.ok for r in results), [(r.unit, r.problems) for r in results if not r.ok]
    services = [r for r in results if r.unit.endswith(".service")]
    assert len(services) == 14                        # every configured instance, and the unconfigured ones
    assert all(r.exposure is not None and r.exposure <= 2.5 for r in services), \
        {r.unit: r.exposure for r in services}
    commands = {r.unit: r.command for r in services}
    assert commands["beatbus-producer@bar.service"] == "beatbus produce file /srv/music/set.flac --loop"
    assert commands["beatbus-led@strip.service"] == "beatbus consume led --name strip --output ddp://10.0.0.20 --source stage"
    assert commands["beatbus-clock@stage.service"] == "beatbus clock run --osc 10.0.0.7:9000"
    # the CLI says the same and exits 0
    r = beatbus_cmd("deploy", "verify", "--prefix", str(staged), "--threshold", "2.5", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| beatbus-processor@2.service | ok |" in r.stdout


@needs_systemd_analyze
def test_verify_catches_a_broken_unit_and_a_mistyped_argument(tmp_path):
    r = beatbus_cmd("deploy", "install", "--prefix", str(tmp_path), "--producer", "stage=mic --devcie 2")
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "etc/systemd/system/beatbus-exporter.service"
    unit.write_text(unit.read_text().replace(BEATBUS, "/nonexistent/beatbus"))
    r = beatbus_cmd("deploy", "verify", "--prefix", str(tmp_path), timeout=120)
    assert r.returncode == 1
    assert "beatbus: beatbus-exporter.service: Command /nonexistent/beatbus is not executable" in r.stderr
    assert "beatbus: beatbus-producer@stage.service: beatbus: error: unrecognized arguments: --devcie 2" in r.stderr
    assert re.search(r"\| beatbus-producer@stage.service \| ok \| [0-9.]+ OK \| `ERROR beatbus: error: unrecognized",
                     r.stdout), r.stdout


@pytest.mark.parametrize("args, needle", [
    (["deploy", "install", "--producer", "stage"], "must be NAME=ARGS"),
    (["deploy", "install", "--producer", "a b=mic"], "name 'a b' is invalid: use 1-64 of"),
    (["deploy", "install", "--processors", "40"], "--processors 40 must be 0-19"),
    (["deploy", "install", "--producer", "x=mic", "--producer", "x=click"], "'x' is given twice"),
    (["deploy", "install", "--user", "bad user!"], "--user 'bad user!' must be NAME"),
    (["deploy", "install", "--redis-url", "redis+cluster://10.0.0.5:7000", "--workers", "1"],
     "--redis-url is a Redis Cluster and worker units use rq, which needs a plain Redis: add --rq-url"),
    (["deploy", "install", "--rq-url", "redis+cluster://10.0.0.5:7000"], "--rq-url must be a plain Redis"),
    (["deploy", "verify", "--prefix", "/nonexistent-root"], "no beatbus units in /nonexistent-root"),
])
def test_user_errors_are_one_line(tmp_path, args, needle):
    if args[:2] == ["deploy", "install"]:
        args = [*args, "--prefix", str(tmp_path)]
    r = beatbus_cmd(*args)
    assert r.returncode == 2, r.stdout
    assert r.stderr.strip().startswith("beatbus: error: ") and needle in r.stderr and "Traceback" not in r.stderr


def test_exec_lines_expand_like_systemd_and_every_command_parses():
    env = {"BEATBUS_PRODUCE_ARGS": "file /srv/a.flac --loop", "BEATBUS_SOURCE": "stage"}
    assert expand_exec("/v/bin/beatbus produce $BEATBUS_PRODUCE_ARGS", env) == \
        ["/v/bin/beatbus", "produce", "file", "/srv/a.flac", "--loop"]
    assert expand_exec("/v/bin/beatbus x ${BEATBUS_PRODUCE_ARGS}", env)[2] == "file /srv/a.flac --loop"
    parser = build_parser()
    for d in DAEMONS.values():          # the bare command of every unit is a valid beatbus command
        text = render_unit((SYSTEMD_DIR / d.template).read_text(), beatbus=BEATBUS, env_file="/e",
                           config_dir="/c", user=None)
        argv = expand_exec(unit_settings(text)["ExecStart"][0], {"BEATBUS_PRODUCE_ARGS": "click",
                                                                "BEATBUS_LED_ARGS": "--output terminal://"},
                           instance="1")
        parser.parse_args(argv[1:])
    assert [i.port for i in plan_instances(processors=3, exporter=False)] == [9601, 9602, 9603]
