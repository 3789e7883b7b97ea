"""Check installed units: ``systemd-analyze verify``, ``systemd-analyze security`` and each command line.

Templates cannot be verified on their own, so every template is checked through its
configured instances (the ``<name>@<instance>.env`` files of the config directory) or, with
none, through a stand-in instance named ``check``: a symlink ``beatbus-processor@1.service ->
beatbus-processor@.service`` in a scratch directory, next to copies of the other units so
``PartOf=beatbus.target`` resolves.

``systemd-analyze verify`` needs the ``ExecStart`` binary to exist: run it on the machine
(or in the virtual environment) the units point at. It checks that binary as root on the host,
so each service is also checked as its own user inside its sandbox (:mod:`deploy.reach`): the
whole ``ExecStart`` chain (symlinks, ``#!`` interpreter, the virtual environment's base Python
and source tree) must be searchable by that user and outside what ``PrivateTmp=`` /
``ProtectHome=`` hide.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from beatbus.errors import ConfigError

from .reach import chain_problems
from .units import DAEMONS, read_env_file

__all__ = ["UnitCheck", "systemd_analyze", "check_units", "expand_exec", "format_report"]

_EXPOSURE = re.compile(r"Overall exposure level for (\S+):\s*([0-9.]+)\s+(\S+)")


@dataclass
class UnitCheck:
    """The result for one unit file (a template is checked as one of its instances)."""

    unit: str
    verify: list[str]              # systemd-analyze verify's complaints (empty: clean)
    exposure: float | None         # systemd-analyze security: 0 (best) .. 10
    verdict: str                   # OK | MEDIUM | EXPOSED | UNSAFE | "" for targets
    command: str = ""              # the expanded ExecStart (services with an instance env file)
    command_error: str = ""        # argparse's complaint about it, if any
    reach: list[str] = field(default_factory=list)   # why the service user could not start ExecStart

    @property
    def ok(self) -> bool:
        return not self.verify and not self.command_error and not self.reach

    @property
    def problems(self) -> list[str]:
        return [*self.verify, *([self.command_error] if self.command_error else []), *self.reach]


def systemd_analyze() -> str:
    """Path of ``systemd-analyze`` or ConfigError saying which package provides it."""
    path = shutil.which("systemd-analyze")
    if not path:
        raise ConfigError("systemd-analyze not found: install the 'systemd' package (apt install systemd)")
    return path


def _run(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{' '.join(args[:3])} did not finish within {timeout:.0f} s") from None


def _instances(unit_dir: Path, config_dir: Path | None) -> dict[str, list[str]]:
    """Template file name -> instance names configured in ``config_dir`` (or ``["check"]``)."""
    out: dict[str, list[str]] = {}
    for tpl in sorted(unit_dir.glob("beatbus-*@.service")):
        daemon = tpl.name.removeprefix("beatbus-").split("@", 1)[0]
        names = []
        if config_dir is not None and config_dir.is_dir():
            names = sorted(p.name[len(daemon) + 1:-4] for p in config_dir.glob(f"{daemon}@*.env"))
        out[tpl.name] = names or ["check"]
    return out


def _exec_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            return line.split("=", 1)[1].strip()
    return ""


def _exec_binary(exec_line: str) -> str:
    """The program ExecStart runs: its first word without systemd's ``-@:+!`` prefixes."""
    words = shlex.split(exec_line) if exec_line else []
    return words[0].lstrip("-@:+!") if words else ""


def expand_exec(exec_line: str, env: dict[str, str], *, instance: str = "") -> list[str]:
    """ExecStart as systemd runs it: ``%i``/``%H`` specifiers, ``$VAR`` split into words, ``${VAR}`` kept whole."""
    line = exec_line.replace("%i", instance).replace("%H", socket.gethostname()).replace("%%", "%")
    argv: list[str] = []
    for word in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def _unit_env(text: str, *, prefix: Path, instance: str) -> dict[str, str]:
    """Environment= and EnvironmentFile= of a unit, read the way systemd merges them (files win)."""
    env: dict[str, str] = {}
    files: list[str] = []
    for line in text.splitlines():
        if line.startswith("Environment="):
            for word in shlex.split(line.split("=", 1)[1]):
                k, _, v = word.partition("=")
                env[k] = v.replace("%i", instance)
        elif line.startswith("EnvironmentFile="):
            files.append(line.split("=", 1)[1].strip().replace("%i", instance))
    for f in files:
        path = prefix / f.lstrip("-").lstrip("/")
        if path.exists():
            env.update(read_env_file(path))
    return env


def _check_command(argv: list[str]) -> str:
    """argparse's complaint about a beatbus command line, or ''.

    Asked of the real parser in a child process: the CLI is the composition root, not a library.
    """
    parse = "import sys\nfrom beatbus.cli import build_parser\nbuild_parser().parse_args(sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", parse, *argv[1:]], capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return ""
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit {r.returncode}"


def check_units(unit_dir: str | os.PathLike, *, config_dir: str | os.PathLike | None = None,
                prefix: str | os.PathLike = "/") -> list[UnitCheck]:
    """Verify, score and command-check every ``beatbus*`` unit in ``unit_dir``.

    Parameters
    ----------
    unit_dir : path
        Where the units are (staged under ``prefix`` or live, e.g. ``/etc/systemd/system``).
    config_dir : path, optional
        The per-instance environment files (``processor@1.env`` ...): their instances are
        checked and their command lines parsed.
    prefix : path
        Staging root: environment files named inside the units are read under it.
    """
    tool = systemd_analyze()
    unit_dir, prefix = Path(unit_dir), Path(prefix)
    units = sorted(p for p in unit_dir.glob("beatbus*") if p.suffix in (".service", ".target"))
    if not units:
        raise ConfigError(f"no beatbus units in {unit_dir}: run `beatbus deploy install` first")
    instances = _instances(unit_dir, Path(config_dir) if config_dir else None)
    results: list[UnitCheck] = []
    with tempfile.TemporaryDirectory(prefix="beatbus-verify-") as tmp:
        scratch = Path(tmp)
        for u in units:
            shutil.copyfile(u, scratch / u.name)
        checks: list[tuple[Path, str]] = []
        for u in units:
            if u.name in instances:
                for name in instances[u.name]:
                    link = scratch / u.name.replace("@.", f"@{name}.")
                    link.symlink_to(u.name)
                    checks.append((link, name))
            else:
                checks.append((scratch / u.name, ""))
        for path, instance in checks:
            r = _run([tool, "verify", "--man=no", str(path)])
            complaints = [ln.replace(str(scratch) + "/", "").removeprefix(f"{path.name}: ")
                          for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
            if r.returncode != 0 and not complaints:
                complaints = [f"systemd-analyze verify exited {r.returncode}"]
            exposure, verdict = None, ""
            if path.suffix == ".service":
                s = _run([tool, "security", "--offline=true", "--no-pager", str(path)])
                m = _EXPOSURE.search(s.stdout)
                if m:
                    exposure, verdict = float(m.group(2)), m.group(3)
                else:
                    complaints.append(f"systemd-analyze security gave no score: {(s.stderr or s.stdout)[-200:]}")
            check = UnitCheck(path.name, complaints, exposure, verdict)
            text = path.read_text()
            if path.suffix == ".service":
                check.reach = chain_problems(_exec_binary(_exec_line(text)), text)
            daemon = path.name.removeprefix("beatbus-").split("@", 1)[0].removesuffix(".service")
            if path.suffix == ".service" and daemon in DAEMONS and instance != "check":
                argv = expand_exec(_exec_line(text), _unit_env(text, prefix=prefix, instance=instance),
                                   instance=instance)
                check.command = shlex.join(["beatbus", *argv[1:]])
                check.command_error = _check_command(argv)
            results.append(check)
    return results


def format_report(results: list[UnitCheck]) -> str:
    """A Markdown table: unit, verify, exposure, command, whether the service user can start it."""
    rows = ["| unit | systemd-analyze verify | exposure (0 best .. 10) | command | as the service user |",
            "|---|---|---|---|---|"]
    for r in results:
        verify = "ok" if not r.verify else "; ".join(r.verify)[:160]
        exposure = f"{r.exposure:.1f} {r.verdict}" if r.exposure is not None else "-"
        command = r.command_error and f"ERROR {r.command_error}" or r.command or "-"
        reach = ("ERROR " + "; ".join(r.reach))[:200] if r.reach else ("ok" if r.unit.endswith(".service") else "-")
        rows.append(f"| {r.unit} | {verify} | {exposure} | `{command}` | {reach} |")
    return "\n".join(rows)
