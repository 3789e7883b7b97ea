"""API keys: bearer tokens with scopes, kept hashed in a keys file (or the environment).

A key looks like ``bb_<id>_<secret>``: ``id`` (8 hex) names the key in lists, logs and rate
limits; ``secret`` is 32 random bytes (urlsafe base64). Only ``sha256(secret)`` is stored: the
secret has 256 bits of entropy, so a slow hash adds nothing but latency. Checks compare the
digests with :func:`hmac.compare_digest` (constant time).

Where keys live
    ``BEATBUS_API_KEYS_FILE``, else ``api-keys.json`` in the state directory
    (:func:`beatbus.config.state_dir`); the file is written atomically with mode 0600.
    ``BEATBUS_API_KEYS`` adds keys from the environment (read-only, never revoked by the
    CLI): whitespace-separated ``NAME:SCOPE[,SCOPE...]:SHA256HEX`` entries, where
    ``SHA256HEX`` is the digest ``beatbus api keys create --env`` prints; the token itself is
    ``bb_<NAME>_<secret>``.

The server re-reads the file when it changes, so ``keys create``/``revoke`` take effect
without a restart.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from beatbus.config import state_dir
from beatbus.errors import ConfigError

__all__ = ["SCOPES", "KEY_ID", "ApiKey", "KeyStore", "keys_file", "new_token", "hash_secret", "parse_token", "check_scopes"]

SCOPES = ("read", "control", "trigger", "generate")
KEY_ID = r"[A-Za-z0-9]{1,32}"     # a key's id: inside tokens and BEATBUS_API_KEYS entries
_TOKEN = re.compile(rf"^bb_({KEY_ID})_([A-Za-z0-9_-]{{20,128}})$")
_ENV_ENTRY = re.compile(rf"^({KEY_ID}):([a-z,]+):([0-9a-f]{{64}})$")


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: no secret, only its digest."""

    id: str
    scopes: tuple[str, ...]
    digest: str = field(repr=False)
    name: str = ""
    created: float = 0.0
    origin: str = "file"          # file | env

    def public(self) -> dict:
        """What ``keys list`` shows: everything except the digest."""
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes), "origin": self.origin,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)) if self.created else ""}


def keys_file(env: dict[str, str] | None = None) -> Path:
    """``BEATBUS_API_KEYS_FILE``, else ``<state dir>/api-keys.json``."""
    env = dict(os.environ) if env is None else env
    if env.get("BEATBUS_API_KEYS_FILE"):
        return Path(env["BEATBUS_API_KEYS_FILE"])
    return state_dir(env) / "api-keys.json"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(key_id: str | None = None) -> tuple[str, str, str]:
    """A fresh key: (id, token, digest of its secret)."""
    key_id = key_id or secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return key_id, f"bb_{key_id}_{secret}", hash_secret(secret)


def parse_token(token: str) -> tuple[str, str] | None:
    """``bb_<id>_<secret>`` -> (id, secret), or None when it is not shaped like a key."""
    m = _TOKEN.match(token.strip())
    return (m.group(1), m.group(2)) if m else None


def check_scopes(scopes) -> tuple[str, ...]:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"scope {', '.join(bad) or '(none)'}: each scope must be one of {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(scopes))


class KeyStore:
    """The keys of a file plus ``BEATBUS_API_KEYS``; reloads the file when it changes.

    Parameters
    ----------
    path : Path
        The keys file (need not exist: no keys).
    env_keys : str
        ``BEATBUS_API_KEYS``'s value.
    """

    def __init__(self, path: Path, env_keys: str = ""):
        self.path = Path(path)
        self._env = self._parse_env(env_keys)
        self._file: dict[str, ApiKey] = {}
        self._stamp: tuple | None = None
        self._lock = threading.Lock()
        self._load()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> KeyStore:
        env = dict(os.environ) if env is None else env
        return cls(keys_file(env), env.get("BEATBUS_API_KEYS", ""))

    # -- reading ------------------------------------------------------------------------
    @staticmethod
    def _parse_env(value: str) -> dict[str, ApiKey]:
        out = {}
        for entry in value.split():
            m = _ENV_ENTRY.match(entry)
            if not m:
                # Never echo the entry: it may hold a pasted token.
                raise ConfigError("BEATBUS_API_KEYS: each entry must be NAME:SCOPE[,SCOPE...]:SHA256HEX "
                                  "(see `beatbus api keys create --env`)")
            out[m.group(1)] = ApiKey(id=m.group(1), scopes=check_scopes(m.group(2).split(",")),
                                     digest=m.group(3), name=m.group(1), origin="env")
        return out

    def _file_stamp(self):
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        keys: dict[str, ApiKey] = {}
        if stamp is not None:
            try:
                doc = orjson.loads(self.path.read_bytes())
                for k in doc.get("keys", []):
                    keys[k["id"]] = ApiKey(id=k["id"], scopes=check_scopes(k["scopes"]), digest=k["sha256"],
                                           name=k.get("name", ""), created=k.get("created", 0.0))
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise ConfigError(f"API keys file {self.path} is unreadable: {type(exc).__name__}") from None
        self._file, self._stamp = keys, stamp

    def refresh(self) -> None:
        """Pick up changes of the file (cheap: one stat)."""
        with self._lock:
            self._load()

    def keys(self) -> list[ApiKey]:
        self.refresh()
        return [*self._file.values(), *self._env.values()]

    def __bool__(self) -> bool:
        return bool(self.keys())

    def authenticate(self, token: str) -> ApiKey | None:
        """The key a presented token belongs to, or None."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        self.refresh()
        key = self._file.get(parsed[0]) or self._env.get(parsed[0])
        if key is None:
            # Spend the same work as a real comparison, so timing does not tell ids apart.
            hmac.compare_digest(hash_secret(parsed[1]), "0" * 64)
            return None
        return key if hmac.compare_digest(hash_secret(parsed[1]), key.digest) else None

    # -- writing (the CLI) -----------------------------------------------------------------
    def _write(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {"keys": [{"id": k.id, "name": k.name, "scopes": list(k.scopes), "sha256": k.digest,
                         "created": k.created} for k in keys.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".api-keys-")   # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._stamp = None
        self._load()

    def create(self, scopes, name: str = "") -> tuple[ApiKey, str]:
        """Add a key: (the stored key, the token to hand out once)."""
        scopes = check_scopes(scopes)
        with self._lock:
            self._stamp = None
            self._load()
            key_id, token, digest = new_token()
            while key_id in self._file or key_id in self._env:
                key_id, token, digest = new_token()
            key = ApiKey(id=key_id, scopes=scopes, digest=digest, name=name[:64], created=round(time.time(), 3))
            self._write({**self._file, key_id: key})
        return key, token

    def revoke(self, key_id: str) -> ApiKey:
        with self._lock:
            self._stamp = None
            self._load()
            if key_id not in self._file:
                where = " (it comes from BEATBUS_API_KEYS: remove it there)" if key_id in self._env else ""
                raise ConfigError(f"no API key with id {key_id!r} in {self.path}{where}")
            keys = dict(self._file)
            key = keys.pop(key_id)
            self._write(keys)
        return key

