"""`beatbus deploy verify` checks the ExecStart chain as the service user sees it, inside its sandbox.

systemd-analyze verify looks at the binary as root on the host, so it approved units that can
never start: an ExecStart under /tmp with PrivateTmp=yes, or a virtual environment whose python
is a symlink into a 0700 directory (/root/.pyenv...) for a DynamicUser.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from beatbus.deploy.reach import chain_problems, unit_sandbox

from support.paths import ROOT
from support.procs import beatbus_cmd

needs_systemd_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                           reason="systemd-analyze missing (install.sh installs the systemd package)")
SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists()), None)
needs_system_python = pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python3 to build a venv from")
HIDDEN = ("/tmp", "/var/tmp", "/home", "/root", "/run/user")


def _everyone_can_enter(path: Path) -> bool:
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


def outside_private_dirs() -> Path:
    """A scratch folder no sandbox hides and every user can enter (not /tmp: PrivateTmp hides it)."""
    for base in (ROOT / "build", Path("/var/lib"), Path("/srv"), Path("/opt")):
        real = base.resolve()
        if any(str(real) == h or str(real).startswith(h + "/") for h in HIDDEN):
            continue
        try:
            base.mkdir(exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="beatbus-verify-", dir=base))
        except OSError:
            continue
        folder.chmod(0o755)
        if _everyone_can_enter(folder):
            return folder
        shutil.rmtree(folder)
    pytest.skip("no folder outside /tmp and /root that everyone can enter")


def make_venv(where: Path, *, python: str) -> Path:
    """A real virtual environment (``python -m venv``) with a ``beatbus`` entry script; returns the script."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    site = next(where.glob("lib/python*/site-packages"))
    # this checkout's packages, so the script is a working beatbus when the Python versions match
    ours = next(Path(sys.prefix).glob("lib/python*/site-packages"))
    (site / "beatbus-checkout.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    script = where / "bin" / "beatbus"
    script.write_text(f"#!{where}/bin/python\nimport sys\nfrom beatbus.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


@pytest.fixture(scope="module")
def scratch():
    folder = outside_private_dirs()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reachable_beatbus(scratch) -> Path:
    """A venv outside /tmp on the system's python: every link of its chain is open to everyone."""
    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3")
    return make_venv(scratch / "good", python=SYSTEM_PYTHON)


@pytest.fixture(scope="module")
def locked_beatbus(scratch) -> tuple[Path, Path]:
    """A venv outside /tmp whose python is a symlink into a 0700 folder, as a pyenv Python under /root."""
    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3")
    private = scratch / "private"
    (private / "bin").mkdir(parents=True)
    (private / "bin" / "python3").symlink_to(os.path.realpath(SYSTEM_PYTHON))
    private.chmod(0o700)
    script = make_venv(scratch / "locked", python=SYSTEM_PYTHON)
    for link in (script.parent / "python3", *script.parent.glob("python3.*")):
        if link.is_symlink():
            link.unlink()
            link.symlink_to(private / "bin" / "python3")
    cfg = script.parent.parent / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("home = /usr/bin", f"home = {private / 'bin'}"))
    return script, private


def _install_and_verify(prefix: Path, exec_path: Path) -> subprocess.CompletedProcess:
    r = beatbus_cmd("deploy", "install", "--prefix", str(prefix), "--exec", str(exec_path), "--processors", "1",
                    timeout=60)
    assert r.returncode == 0, r.stderr
    return beatbus_cmd("deploy", "verify", "--prefix", str(prefix), timeout=180)


@needs_systemd_analyze
@needs_system_python
def test_verify_refuses_an_exec_start_that_private_tmp_hides(tmp_path, reachable_beatbus):
    """A working venv copied under /tmp: systemd-analyze verify is happy (root sees the file), the unit is not."""
    assert str(tmp_path).startswith("/tmp/")
    script = make_venv(tmp_path / "venv", python=SYSTEM_PYTHON)
    r = _install_and_verify(tmp_path / "root", script)
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("beatbus: beatbus-processor@1.service: "))
    assert f"ExecStart {script}: /tmp is hidden from the service: PrivateTmp=yes" in line, r.stderr
    assert "| beatbus-processor@1.service | ok |" in r.stdout          # systemd-analyze verify itself passed
    assert "ERROR ExecStart" in r.stdout


@needs_systemd_analyze
@needs_system_python
def test_verify_refuses_an_interpreter_the_dynamic_user_cannot_reach(tmp_path, locked_beatbus):
    script, private = locked_beatbus
    r = _install_and_verify(tmp_path / "root", script)
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("beatbus: beatbus-processor@1.service: "))
    assert f"interpreter {script.parent}/python (#! of {script}): the dynamic user beatbus cannot enter " \
           f"{private} (mode 0700 root:root) (via the symlink {script.parent}/python3" in line, r.stderr
    # with --user root nothing blocks the way (root passes every mode bit)
    r = beatbus_cmd("deploy", "install", "--prefix", str(tmp_path / "asroot"), "--exec", str(script),
                    "--user", "root", timeout=60)
    assert r.returncode == 0 and "cannot enter" not in r.stderr, r.stderr
    r = beatbus_cmd("deploy", "verify", "--prefix", str(tmp_path / "asroot"), timeout=180)
    assert "cannot enter" not in r.stdout + r.stderr, r.stdout + r.stderr


@needs_system_python
def test_install_warns_when_the_units_could_never_start(tmp_path, locked_beatbus):
    script, private = locked_beatbus
    r = beatbus_cmd("deploy", "install", "--prefix", str(tmp_path), "--exec", str(script), "--dry-run", timeout=60)
    assert r.returncode == 0
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("beatbus: warning: ")]
    assert len(warning) == 1 and f"cannot enter {private}" in warning[0] and "--user NAME" in warning[0], r.stderr


@needs_systemd_analyze
def test_verify_follows_this_checkouts_own_venv(tmp_path):
    """The venv the tests run in: its python may resolve into /root/.pyenv (0700), as on the dev machine."""
    blocked = next((p for p in Path(os.path.realpath(sys.executable)).parents
                    if not os.stat(p).st_mode & stat.S_IXOTH), None)
    r = beatbus_cmd("deploy", "install", "--prefix", str(tmp_path), "--processors", "1", timeout=60)
    assert r.returncode == 0, r.stderr
    r = beatbus_cmd("deploy", "verify", "--prefix", str(tmp_path), timeout=180)
    hidden = any(str(Path(sys.prefix).resolve()).startswith(h + "/") for h in ("/tmp", "/var/tmp"))
    if blocked is None and not hidden:
        assert "cannot enter" not in r.stderr and "hidden from the service" not in r.stderr, r.stderr
        return
    assert r.returncode == 1
    if blocked is not None:
        assert f"the dynamic user beatbus cannot enter {blocked}" in r.stderr, r.stderr


UNIT = """[Service]
ExecStart={exec} process
{identity}
PrivateTmp={private_tmp}
ProtectHome={protect_home}
"""


def _unit(exec_path: str = "/x", identity: str = "DynamicUser=yes\nUser=beatbus", private_tmp: str = "yes",
          protect_home: str = "read-only") -> str:
    return UNIT.format(exec=exec_path, identity=identity, private_tmp=private_tmp, protect_home=protect_home)


def test_sandbox_of_a_unit():
    sb = unit_sandbox(_unit())
    assert set(sb.hidden) == {"/tmp", "/var/tmp"} and sb.identity.uid is None
    # DynamicUser implies PrivateTmp even when the unit says no
    assert "/tmp" in unit_sandbox(_unit(private_tmp="no")).hidden
    assert unit_sandbox(_unit(identity="User=root", private_tmp="no")).hidden == {}
    assert unit_sandbox(_unit(identity="User=root")).identity.root
    assert {"/home", "/root", "/run/user"} <= set(unit_sandbox(_unit(protect_home="yes")).hidden)
    nobody = unit_sandbox(_unit(identity="User=nobody")).identity
    assert nobody.uid == 65534 or nobody.uid is None


def test_chain_as_each_user(scratch, tmp_path):
    """The same binary under a 0700 folder: fine for root, refused for nobody and for a dynamic user."""
    locked = scratch / "each-user" / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0o700)
    link = locked.parent / "tool"
    link.symlink_to(locked / "tool")
    (locked / "tool").write_text("#!/bin/sh\n")
    (locked / "tool").chmod(0o755)
    for identity, expect in (("User=root", 0), ("User=nobody", 1), ("DynamicUser=yes", 1)):
        problems = chain_problems(str(link), _unit(identity=identity, private_tmp="no"))
        assert len(problems) == expect, (identity, problems)
        if expect:
            assert f"cannot enter {locked} (mode 0700" in problems[0] and f"via the symlink {link}" in problems[0]
    # under /tmp with PrivateTmp: hidden, whoever the user
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o755)
    problems = chain_problems(str(tmp_path / "tool"), _unit(identity="User=root", private_tmp="yes"))
    assert problems == [f"ExecStart {tmp_path / 'tool'}: /tmp is hidden from the service: PrivateTmp=yes gives "
                        f"the service its own empty /tmp"]
