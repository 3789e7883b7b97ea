"""Render the systemd unit templates and plan an install: units, environment files, scrape targets.

Every daemon has one unit template in ``deploy/systemd``; per-source and per-instance
daemons are templates (``beatbus-producer@.service`` ...) whose instance gets its own
environment file (``<config>/producer@stage.env``) with its command-line arguments and its
metrics port. Placeholders in the templates:

``@BEATBUS@``     the ``beatbus`` executable of the installing virtual environment
``@ENV_FILE@``    the shared environment file (``REDIS_URL`` and other secrets; mode 0600)
``@CONFIG_DIR@``  where the per-instance environment files live
``@IDENTITY@``    ``DynamicUser=yes`` + ``User=beatbus`` (default) or a dedicated ``User=``/``Group=``

Paths inside the units are the target system's; ``prefix`` only stages the files (like
``make DESTDIR=``), so a test or a package build can install into a scratch directory.

Metrics ports (``BEATBUS_METRICS_ADDR`` in each environment file, collected in the
Prometheus file_sd targets file ``<config>/prometheus-targets.json``; the same ones a daemon
started by hand takes by default, :data:`beatbus.metrics.METRICS_PORTS`):

=============  =========  ===============================
daemon         port       instance
=============  =========  ===============================
exporter       9465       (one per deployment)
trigger        9466
generate       9467
api            8000       its HTTP port serves /metrics
processor@N    9600 + N   N = 1, 2, ...
intensity@N    9620 + N
structure@N    9640 + N
harmony@N      9800 + N
worker@N       9660 + N
led@NAME       9680 + i   i = 1.. in the order given
clock@SRC      9820 + i   i = 1.. in the order given
producer@SRC   9700 + i   i = 1.. in the order given
=============  =========  ===============================
"""
from __future__ import annotations

import os
import pwd
import re
import shlex
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import orjson

from beatbus import keys
from beatbus.errors import ConfigError
from beatbus.metrics import METRICS_PORTS

from . import SYSTEMD_DIR

__all__ = ["Daemon", "DAEMONS", "Instance", "PlannedFile", "InstallPlan", "plan_instances", "plan_install",
           "write_plan", "render_unit", "identity_block", "beatbus_executable", "env_template",
           "read_env_file", "DEFAULT_UNIT_DIR", "DEFAULT_CONFIG_DIR", "TARGETS_FILE", "MAX_PER_KIND"]

DEFAULT_UNIT_DIR = "/etc/systemd/system"
DEFAULT_CONFIG_DIR = "/etc/beatbus"
TARGETS_FILE = "prometheus-targets.json"
MAX_PER_KIND = 19            # port blocks are 20 wide
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


@dataclass(frozen=True)
class Daemon:
    """One kind of daemon: its unit template, the variable carrying its arguments, its metrics port."""

    name: str
    template: str
    args_env: str
    port: int
    templated: bool

    def unit(self, instance: str | None = None) -> str:
        return self.template.replace("@.", f"@{instance}.") if self.templated else self.template

    def env_name(self, instance: str | None = None) -> str:
        return f"{self.name}@{instance}.env" if self.templated else f"{self.name}.env"


DAEMONS: dict[str, Daemon] = {d.name: d for d in (
    Daemon("producer", "beatbus-producer@.service", "BEATBUS_PRODUCE_ARGS", METRICS_PORTS["producer"], True),
    Daemon("processor", "beatbus-processor@.service", "BEATBUS_PROCESS_ARGS", METRICS_PORTS["processor"], True),
    Daemon("intensity", "beatbus-intensity@.service", "BEATBUS_INTENSITY_ARGS", METRICS_PORTS["intensity"], True),
    Daemon("structure", "beatbus-structure@.service", "BEATBUS_STRUCTURE_ARGS", METRICS_PORTS["structure"], True),
    Daemon("harmony", "beatbus-harmony@.service", "BEATBUS_HARMONY_ARGS", METRICS_PORTS["harmony"], True),
    Daemon("worker", "beatbus-worker@.service", "BEATBUS_WORKER_ARGS", METRICS_PORTS["worker"], True),
    Daemon("led", "beatbus-led@.service", "BEATBUS_LED_ARGS", METRICS_PORTS["led"], True),
    Daemon("clock", "beatbus-clock@.service", "BEATBUS_CLOCK_ARGS", METRICS_PORTS["clock"], True),
    Daemon("trigger", "beatbus-trigger.service", "BEATBUS_TRIGGER_ARGS", METRICS_PORTS["trigger"], False),
    Daemon("generate", "beatbus-generate.service", "BEATBUS_GENERATE_ARGS", METRICS_PORTS["generate"], False),
    Daemon("api", "beatbus-api.service", "BEATBUS_API_ARGS", 8000, False),
    Daemon("exporter", "beatbus-exporter.service", "BEATBUS_EXPORTER_ARGS", METRICS_PORTS["exporter"], False),
)}


@dataclass(frozen=True)
class Instance:
    """A unit to run: a daemon, its instance name (templated daemons) and its arguments."""

    daemon: Daemon
    name: str | None
    args: str = ""
    port: int = 0

    @property
    def unit(self) -> str:
        return self.daemon.unit(self.name)

    @property
    def env_name(self) -> str:
        return self.daemon.env_name(self.name)

    def metrics_target(self, host: str) -> str:
        """``HOST:PORT`` Prometheus scrapes (a wildcard bind is scraped by this host's name)."""
        return f"{socket.getfqdn() if host in ('0.0.0.0', '::') else host}:{self.port}"


@dataclass(frozen=True)
class PlannedFile:
    """A file to write: its path on the target system, content, mode, and whether an existing one is kept."""

    path: PurePosixPath
    content: str
    mode: int
    keep_existing: bool = False


@dataclass
class InstallPlan:
    files: list[PlannedFile] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def enable_command(self) -> str:
        units = " ".join(shlex.quote(i.unit) for i in self.instances)
        return f"systemctl daemon-reload && systemctl enable --now beatbus.target {units}".rstrip()


# -- rendering ----------------------------------------------------------------------------
def beatbus_executable() -> Path:
    """The ``beatbus`` script of the running virtual environment (what ExecStart runs)."""
    path = Path(sys.prefix) / "bin" / "beatbus"
    if not path.exists():
        raise ConfigError(f"no beatbus executable at {path}: run this from the installed virtual environment "
                          f"(.venv/bin/beatbus deploy install) or pass --exec PATH")
    return path


def identity_block(user: str | None) -> str:
    """``DynamicUser=yes`` under the shared name ``beatbus``, or a dedicated existing user."""
    if not user:
        return "DynamicUser=yes\nUser=beatbus\nGroup=beatbus"
    name, _, group = user.partition(":")
    for part in (name, group):
        if part and not part.replace("-", "a").replace("_", "a").isalnum():
            raise ConfigError(f"--user {user!r} must be NAME or NAME:GROUP (letters, digits, - and _)")
    return f"User={name}\nGroup={group or name}"


def render_unit(template: str, *, beatbus: str, env_file: str, config_dir: str, user: str | None) -> str:
    """Fill a unit template's placeholders."""
    text = (template.replace("@BEATBUS@", beatbus).replace("@ENV_FILE@", env_file)
            .replace("@CONFIG_DIR@", config_dir).replace("@IDENTITY@", identity_block(user)))
    leftover = _PLACEHOLDER.search(text)
    if leftover:
        raise ConfigError(f"unit template has an unknown placeholder {leftover.group()}")
    return text


def env_template(*, redis_url: str | None, error_generator_url: str | None, rq_url: str | None = None) -> str:
    """The shared environment file: broker credentials and settings every daemon reads."""
    lines = ["# beatbus: environment of every beatbus unit (mode 0600: it may hold broker credentials).",
             "# Settings: REDIS_URL, BEATBUS_ERROR_GENERATOR_URL and BEATBUS_<KEY> (see `beatbus run --help`).",
             "# Kept as is when `beatbus deploy install` runs again (unless --force)."]
    lines.append(f"REDIS_URL={redis_url}" if redis_url else "REDIS_URL=redis://127.0.0.1:6379/0")
    lines.append("# with a password: REDIS_URL=redis://:PASSWORD@HOST:6379/0 (or rediss:// for TLS)")
    lines.append(f"BEATBUS_RQ_URL={rq_url}" if rq_url else
                 "# BEATBUS_RQ_URL=redis://127.0.0.1:6379/1   (generation jobs: rq needs a plain Redis, so set it "
                 "when REDIS_URL is a redis+cluster:// URL)")
    lines.append(f"BEATBUS_ERROR_GENERATOR_URL={error_generator_url}" if error_generator_url
                 else "# BEATBUS_ERROR_GENERATOR_URL=http://127.0.0.1:9090")
    lines += ["BEATBUS_LOG_FORMAT=json", "# BEATBUS_BACKEND=dsp", "# BEATBUS_LEASE_TTL=5",
              "# BEATBUS_THREADS=1   (compute threads per daemon; the units set 1, 0: one per core)",
              "# BEATBUS_CONFIG=/etc/beatbus/beatbus.toml", ""]
    return "\n".join(lines)


def _instance_env(inst: Instance, metrics_host: str) -> str:
    lines = [f"# {inst.unit}: written by `beatbus deploy install` (re-running it rewrites this file)."]
    if inst.daemon.name != "api":
        lines.append(f"BEATBUS_METRICS_ADDR={metrics_host}:{inst.port}")
    if inst.args:
        lines.append(f"{inst.daemon.args_env}={inst.args}")
    return "\n".join(lines) + "\n"


def _split_named(spec: str, what: str) -> tuple[str, str]:
    name, sep, args = spec.partition("=")
    if not sep or not args.strip():
        example = {"producer": "'stage=mic --mic-device 2'", "clock": "'stage=--osc 10.0.0.7:9000'"}
        raise ConfigError(f"--{what} {spec!r} must be NAME=ARGS, e.g. --{what} "
                          + example.get(what, "'strip=--output ddp://10.0.0.20'"))
    keys.check_name(name, f"--{what} name")
    return name, " ".join(args.split())


def plan_instances(*, producers=(), processors: int = 1, intensity: int = 0, structure: int = 0, workers: int = 0,
                   leds=(), trigger: bool = False, generate: bool = False, api: bool = False,
                   exporter: bool = True, api_args: str = "--host 127.0.0.1 --port 8000",
                   harmony: int = 0, clocks=()) -> list[Instance]:
    """The instances to configure (each gets an environment file and a scrape target)."""
    out: list[Instance] = []
    for kind, n in (("processor", processors), ("intensity", intensity), ("structure", structure),
                    ("harmony", harmony), ("worker", workers)):
        if not 0 <= n <= MAX_PER_KIND:
            raise ConfigError(f"--{kind}{'s' if kind in ('processor', 'worker') else ''} {n} must be 0-{MAX_PER_KIND}")
        d = DAEMONS[kind]
        out += [Instance(d, str(i), port=d.port + i) for i in range(1, n + 1)]
    for kind, specs in (("producer", producers), ("led", leds), ("clock", clocks)):
        d = DAEMONS[kind]
        limit = 99 if kind == "producer" else MAX_PER_KIND
        if len(specs) > limit:
            raise ConfigError(f"at most {limit} --{kind} instances per host")
        seen: set[str] = set()
        for i, spec in enumerate(specs, start=1):
            name, args = _split_named(spec, kind)
            if name in seen:
                raise ConfigError(f"--{kind} {name!r} is given twice")
            seen.add(name)
            out.append(Instance(d, name, args, d.port + i))
    for kind, wanted in (("trigger", trigger), ("generate", generate), ("exporter", exporter)):
        if wanted:
            out.append(Instance(DAEMONS[kind], None, port=DAEMONS[kind].port))
    if api:
        port = _api_port(api_args)
        out.append(Instance(DAEMONS["api"], None, api_args, port))
    return out


def _api_port(args: str) -> int:
    words = shlex.split(args)
    for i, w in enumerate(words):
        if w == "--port" and i + 1 < len(words) and words[i + 1].isdigit():
            return int(words[i + 1])
        if w.startswith("--port=") and w[7:].isdigit():
            return int(w[7:])
    return DAEMONS["api"].port


def plan_install(*, beatbus: str | os.PathLike, unit_dir: str = DEFAULT_UNIT_DIR,
                 config_dir: str = DEFAULT_CONFIG_DIR, env_file: str | None = None, user: str | None = None,
                 metrics_host: str = "127.0.0.1", redis_url: str | None = None, rq_url: str | None = None,
                 error_generator_url: str | None = None, instances: list[Instance] | None = None,
                 templates: Path = SYSTEMD_DIR) -> InstallPlan:
    """Every file an install writes, with target-system paths (nothing is written here).

    Raises
    ------
    ConfigError
        A relative path, a bad ``--user``, a template with an unknown placeholder, or a cluster
        ``redis_url`` with generation units (worker, generate) but no plain ``rq_url``.
    """
    planned = list(plan_instances() if instances is None else instances)
    rq_users = sorted({i.daemon.name for i in planned if i.daemon.name in ("worker", "generate")})
    if redis_url and "+cluster://" in redis_url and rq_users and not rq_url:
        raise ConfigError(f"--redis-url is a Redis Cluster and {', '.join(rq_users)} units use rq, which needs a "
                          "plain Redis: add --rq-url redis://HOST:6379/1")
    if rq_url and "+cluster://" in rq_url:
        raise ConfigError("--rq-url must be a plain Redis (redis://, rediss://, unix://): rq cannot use a cluster")
    paths = {"unit dir": unit_dir, "config dir": config_dir, "env file": env_file, "beatbus executable": str(beatbus)}
    for what, p in paths.items():
        if p is not None and not PurePosixPath(p).is_absolute():
            raise ConfigError(f"{what} {p!r} must be an absolute path")
    env_path = PurePosixPath(env_file or f"{config_dir}/beatbus.env")
    plan = InstallPlan(instances=planned)
    for tpl in sorted(templates.glob("beatbus*")):
        if tpl.suffix not in (".service", ".target"):
            continue
        text = render_unit(tpl.read_text(), beatbus=str(beatbus), env_file=str(env_path),
                           config_dir=config_dir, user=user)
        plan.files.append(PlannedFile(PurePosixPath(unit_dir) / tpl.name, text, 0o644))
    plan.files.append(PlannedFile(env_path, env_template(redis_url=redis_url, rq_url=rq_url,
                                                         error_generator_url=error_generator_url),
                                  0o600, keep_existing=True))
    for inst in plan.instances:
        plan.files.append(PlannedFile(PurePosixPath(config_dir) / inst.env_name, _instance_env(inst, metrics_host),
                                      0o600))
    targets = [{"targets": [inst.metrics_target(metrics_host)],
                "labels": {"daemon": inst.daemon.name, "unit": inst.unit.removesuffix(".service")}}
               for inst in plan.instances]
    plan.files.append(PlannedFile(PurePosixPath(config_dir) / TARGETS_FILE,
                                  orjson.dumps(targets, option=orjson.OPT_INDENT_2).decode() + "\n", 0o644))
    if user and "DynamicUser" not in identity_block(user):
        name = user.partition(":")[0]
        try:
            pwd.getpwnam(name)
        except KeyError:
            plan.warnings.append(f"user {name!r} does not exist here: useradd --system --no-create-home "
                                 f"--groups audio {name}")
    return plan


# -- writing --------------------------------------------------------------------------------
def _staged(prefix: Path, path: PurePosixPath) -> Path:
    return prefix / str(path).lstrip("/")


def write_plan(plan: InstallPlan, *, prefix: str | os.PathLike = "/", force: bool = False) -> list[tuple[Path, str]]:
    """Write the planned files under ``prefix``; returns ``(path, "written"|"kept")`` per file.

    Files are written atomically with their final mode set before any byte lands, so the
    environment file is never readable by others, not even for a moment.
    """
    root = Path(prefix)
    done: list[tuple[Path, str]] = []
    for f in plan.files:
        path = _staged(root, f.path)
        if f.keep_existing and path.exists() and not force:
            done.append((path, "kept"))
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                os.fchmod(fd, f.mode)
                with os.fdopen(fd, "w") as out:
                    out.write(f.content)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        done.append((path, "written"))
    return done


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """``KEY=VALUE`` lines of a systemd environment file (comments and blanks skipped, quotes removed)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out

