"""Can the service user reach what a unit runs? The ExecStart chain as systemd's sandbox sees it.

``systemd-analyze verify`` only checks that ``ExecStart`` exists and is executable *for root,
on the host*. A unit can pass it and still never start:

- ``PrivateTmp=yes`` (implied by ``DynamicUser=yes``) gives the service an empty ``/tmp`` and
  ``/var/tmp``: a binary, interpreter or virtual environment there is gone;
- ``ProtectHome=yes|tmpfs`` hides ``/home``, ``/root`` and ``/run/user``;
- a ``DynamicUser`` (or an unprivileged ``User=``) needs search (x) permission on every directory
  of every path: a virtual environment whose ``bin/python`` is a symlink into ``/root/.pyenv``
  (``/root`` is 0700) fails with ``Permission denied`` at exec time.

:func:`chain_problems` walks the chain the kernel walks: the ExecStart path (every symlink
resolved, component by component), its ``#!`` interpreter, a virtual environment's base Python
(``pyvenv.cfg`` ``home``) and the directories its ``.pth`` files add (an editable install's
source tree), checking each directory and file as the service user.
"""
from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["Identity", "Sandbox", "chain_problems", "unit_sandbox"]

_TRUE = {"yes", "true", "on", "1"}
_PRIVATE_TMP = ("/tmp", "/var/tmp")
_HOMES = ("/home", "/root", "/run/user")
_MAX_LINKS = 40                                # the kernel's ELOOP limit


@dataclass(frozen=True)
class Identity:
    """Who the service runs as: root (no permission checks), a known uid/gids, or 'others' only."""

    name: str
    uid: int | None = None                     # None: a dynamic user, matches no owner or group
    gids: frozenset[int] = frozenset()

    @property
    def root(self) -> bool:
        return self.uid == 0

    def can(self, st: os.stat_result, want: int) -> bool:
        """``want`` is a mask of 4 (r), 2 (w), 1 (x) checked against the right permission triplet."""
        if self.root:
            return True
        mode = st.st_mode
        if self.uid is not None and st.st_uid == self.uid:
            bits = (mode >> 6) & 7
        elif st.st_gid in self.gids:
            bits = (mode >> 3) & 7
        else:
            bits = mode & 7
        return bits & want == want


@dataclass
class Sandbox:
    """The parts of a unit that decide what its process can see."""

    identity: Identity
    hidden: dict[str, str] = field(default_factory=dict)   # path prefix the namespace hides -> why


def _identity(settings: dict[str, str], supplementary: list[str]) -> Identity:
    user = settings.get("User", "")
    if settings.get("DynamicUser", "").lower() in _TRUE:
        return Identity(f"the dynamic user {user or '(unnamed)'}")
    if not user or user in ("root", "0"):
        return Identity("root", 0)
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:              # not on this machine (yet): judge by what everyone may do
        return Identity(f"user {user} (unknown here)")
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    for name in [settings.get("Group", ""), *supplementary]:
        try:
            gids.add(grp.getgrnam(name).gr_gid if not name.isdigit() else int(name))
        except KeyError:
            pass
    return Identity(f"user {pw.pw_name}", pw.pw_uid, frozenset(gids))


def unit_sandbox(text: str) -> Sandbox:
    """The identity and hidden paths of a unit file's ``[Service]`` section (the last setting wins)."""
    settings: dict[str, str] = {}
    supplementary: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        settings[key] = value
        if key == "SupplementaryGroups":
            supplementary += value.split()
    dynamic = settings.get("DynamicUser", "").lower() in _TRUE
    hidden: dict[str, str] = {}
    if settings.get("PrivateTmp", "").lower() in _TRUE or dynamic:
        why = "PrivateTmp=yes" if settings.get("PrivateTmp", "").lower() in _TRUE else "DynamicUser=yes (implies PrivateTmp)"
        hidden.update({p: f"{why} gives the service its own empty {p}" for p in _PRIVATE_TMP})
    if settings.get("ProtectHome", "").lower() in (_TRUE | {"tmpfs"}):
        hidden.update({p: f"ProtectHome={settings['ProtectHome']} hides {p}" for p in _HOMES})
    return Sandbox(_identity(settings, supplementary), hidden)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


class _Walk:
    """Resolve a path the way the kernel does, recording each directory searched and symlink followed."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.problems: list[str] = []
        self._blocked: set[str] = set()        # each blocking place is reported once
        self._via = ""                          # the last symlink followed, for the message

    def _block(self, where: str, message: str) -> bool:
        if where not in self._blocked:
            self._blocked.add(where)
            self.problems.append(message + (f" (via the symlink {self._via})" if self._via else ""))
        return True

    def _hidden(self, real: str, what: str) -> bool:
        for prefix, why in self.sandbox.hidden.items():
            if _under(real, prefix):
                return self._block(prefix, f"{what}: {real} is hidden from the service: {why}")
        return False

    def _denied(self, where: str, st: os.stat_result, want: int, what: str, verb: str) -> bool:
        if self.sandbox.identity.can(st, want):
            return False
        return self._block(where, f"{what}: {self.sandbox.identity.name} cannot {verb} {where} "
                                  f"(mode {stat.S_IMODE(st.st_mode):04o} {_owner(st)})")

    def resolve(self, path: str, what: str, *, want: int) -> str | None:
        """The real path of ``path`` if the service user can reach it with ``want`` on the last part."""
        todo = list(PurePosixPath(path).parts[1:])
        current = "/"
        links = 0
        self._via = ""
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                current = str(PurePosixPath(current).parent)
                continue
            try:
                dir_st = os.stat(current)
            except OSError:
                return None
            if self._hidden(current, what) or self._denied(current, dir_st, 1, what, "enter"):
                return None
            candidate = os.path.join(current, name)
            try:
                st = os.lstat(candidate)
            except OSError:
                return None                   # missing: `systemd-analyze verify` reports it
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    self.problems.append(f"{what}: too many symlinks in {path}")
                    return None
                target = os.readlink(candidate)
                self._via = f"{candidate} -> {target}"
                todo = list(PurePosixPath(target).parts[1:] if target.startswith("/")
                            else PurePosixPath(target).parts) + todo
                if target.startswith("/"):
                    current = "/"
                continue
            current = candidate
        if self._hidden(current, what):
            return None
        try:
            st = os.stat(current)
        except OSError:
            return None
        verb = {1: "execute", 4: "read", 5: "read and execute"}.get(want, "use")
        if stat.S_ISDIR(st.st_mode):
            if self._denied(current, st, 5 if want & 4 else 1, what, "enter"):
                return None
        elif self._denied(current, st, want, what, verb):
            return None
        return current


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def _shebang(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.readline(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].decode(errors="replace").split()
    return words[0] if words else None


def _venv_of(interpreter: str) -> Path | None:
    """The virtual environment ``interpreter`` (as written, before symlinks) belongs to."""
    cfg = Path(interpreter).parent.parent / "pyvenv.cfg"
    return cfg.parent if cfg.is_file() else None


def _pyvenv_home(venv: Path) -> str | None:
    for line in (venv / "pyvenv.cfg").read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return value.strip()
    return None


def _pth_dirs(venv: Path) -> list[str]:
    """Absolute directories that ``.pth`` files in the venv put on ``sys.path`` (editable installs)."""
    out: list[str] = []
    for pth in sorted(venv.glob("lib/python*/site-packages/*.pth")):
        for line in pth.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("/") and Path(line).is_dir():
                out.append(line)
    return out


def chain_problems(exec_path: str, unit_text: str) -> list[str]:
    """Why the service user of ``unit_text`` could not start ``exec_path`` (empty: it can).

    Follows the ExecStart binary, its ``#!`` interpreter, a virtual environment's base Python
    (``pyvenv.cfg`` ``home``) and ``.pth`` source directories, with every symlink resolved.
    """
    sandbox = unit_sandbox(unit_text)
    walk = _Walk(sandbox)
    if not exec_path.startswith("/"):
        return []
    real = walk.resolve(exec_path, f"ExecStart {exec_path}", want=5 if _shebang(exec_path) else 1)
    if real is None:
        return walk.problems
    interpreter = _shebang(real)
    if interpreter and interpreter.startswith("/"):
        walk.resolve(interpreter, f"interpreter {interpreter} (#! of {exec_path})", want=1)
        venv = _venv_of(interpreter)
        if venv is not None:        # a venv made with --copies still needs its base Python's stdlib
            home = _pyvenv_home(venv)
            if home:
                walk.resolve(home, f"base Python {home} (pyvenv.cfg home of {venv})", want=1)
            for src in _pth_dirs(venv):
                walk.resolve(src, f"source {src} (a .pth file of {venv})", want=5)
    return walk.problems
