"""Files of the generation stage under one state directory, named by generated ids only.

::

    <state_dir>/generate/uploads/<audio_id>/audio.flac      decoded upload or captured stream audio (mono)
                                            meta.json       sr, duration, origin, display name, sha256
                                            embedding.npy   CLAP embedding (float32, L2-normalised)
    <state_dir>/generate/results/<generation_id>/audio.wav  or music.mid
                                                meta.json   parameters, timings, loudness ...

No path is ever built from user input: ids are generated (:func:`~.spec.new_id`) and
checked against ``^[A-Za-z0-9_-]{1,64}$`` on every lookup; a client's file name is kept
only as display text in ``meta.json``. Writes are atomic (temp file + rename); a full
disk raises :class:`~.errors.StorageFull` and leaves no partial file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import soundfile as sf

from beatbus.audio import read_audio

from .errors import InvalidRequest, NotFound, StorageFull
from .spec import ID_RE, new_id

__all__ = ["Store", "display_name"]

_FULL = (errno.ENOSPC, errno.EDQUOT)
RESULT_FILES = ("audio.wav", "music.mid")


def display_name(name: str | None, limit: int = 100) -> str:
    """A client's file name reduced to safe display text (no separators, no control characters)."""
    if not name:
        return ""
    name = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in "/\0")
    return name.strip(" .")[:limit]


class Store:
    """Uploads and results under ``<root>/generate``.

    Parameters
    ----------
    root : path
        The state directory (created with mode 0700 if missing).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root) / "generate"
        self.uploads = self.root / "uploads"
        self.results = self.root / "results"
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for d in (self.uploads, self.results):
                d.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            self._raise_os(exc, f"cannot create {self.root}")

    # -- ids and paths ------------------------------------------------------------
    @staticmethod
    def check_id(item_id: str, what: str = "id") -> str:
        if not isinstance(item_id, str) or not ID_RE.match(item_id):
            raise InvalidRequest(f"{what} {str(item_id)[:80]!r} is not a valid id")
        return item_id

    def upload_dir(self, audio_id: str) -> Path:
        return self.uploads / self.check_id(audio_id, "audio id")

    def result_dir(self, generation_id: str) -> Path:
        return self.results / self.check_id(generation_id, "generation id")

    # -- writing ------------------------------------------------------------------
    @staticmethod
    def _raise_os(exc: OSError, what: str):
        if exc.errno in _FULL:
            raise StorageFull(f"no space left on device: {what}") from None
        raise exc

    def write_file(self, path: Path, data: bytes) -> Path:
        """Atomically write ``data`` to ``path`` (its directory must exist)."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._raise_os(exc, f"writing {path.name} under {self.root}")
        return path

    def _new_dir(self, parent: Path, prefix: str) -> tuple[str, Path]:
        item_id = new_id(prefix)
        path = parent / item_id
        try:
            path.mkdir(mode=0o700)
        except OSError as exc:
            self._raise_os(exc, f"creating {path}")
        return item_id, path

    # -- uploads ------------------------------------------------------------------
    def save_upload(self, x: np.ndarray, sr: int, *, origin: str, name: str | None = None,
                    raw: bytes | None = None) -> str:
        """Store decoded mono audio as FLAC; returns the new audio id."""
        audio_id, d = self._new_dir(self.uploads, "a")
        try:
            buf = io.BytesIO()
            sf.write(buf, np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), sr, format="FLAC", subtype="PCM_24")
            self.write_file(d / "audio.flac", buf.getvalue())
            meta = {"audio_id": audio_id, "sr": int(sr), "duration": round(len(x) / sr, 4), "channels": 1,
                    "origin": origin, "name": display_name(name), "created_at": time.time(),
                    "sha256": hashlib.sha256(raw).hexdigest() if raw is not None else None}
            self.write_file(d / "meta.json", orjson.dumps(meta))
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return audio_id

    def upload_meta(self, audio_id: str) -> dict:
        path = self.upload_dir(audio_id) / "meta.json"
        try:
            return orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"no uploaded audio with id {audio_id}") from None

    def load_upload(self, audio_id: str) -> tuple[np.ndarray, int]:
        """Float32 mono samples and sample rate of an upload."""
        path = self.upload_dir(audio_id) / "audio.flac"
        if not path.exists():
            raise NotFound(f"no uploaded audio with id {audio_id}")
        return read_audio(path)

    def save_embedding(self, audio_id: str, vector: np.ndarray, *, model: str) -> None:
        d = self.upload_dir(audio_id)
        if not d.exists():
            raise NotFound(f"no uploaded audio with id {audio_id}")
        buf = io.BytesIO()
        np.save(buf, np.asarray(vector, dtype=np.float32))
        self.write_file(d / "embedding.npy", buf.getvalue())
        meta = self.upload_meta(audio_id)
        meta["embedding"] = {"model": model, "dim": int(np.asarray(vector).shape[-1]), "at": time.time()}
        self.write_file(d / "meta.json", orjson.dumps(meta))

    def load_embedding(self, audio_id: str) -> np.ndarray | None:
        """The stored embedding, None if not computed yet; NotFound for an unknown id."""
        d = self.upload_dir(audio_id)
        if not d.exists():
            raise NotFound(f"no uploaded audio with id {audio_id}")
        try:
            return np.load(d / "embedding.npy", allow_pickle=False)
        except FileNotFoundError:
            return None

    def iter_embeddings(self) -> Iterator[tuple[str, Path]]:
        """(audio id, embedding path) of every upload that has one."""
        with os.scandir(self.uploads) as it:
            for entry in it:
                p = Path(entry.path) / "embedding.npy"
                if ID_RE.match(entry.name) and p.exists():
                    yield entry.name, p

    # -- results ------------------------------------------------------------------
    def save_result(self, generation_id: str, files: dict[str, bytes], meta: dict[str, Any]) -> Path:
        """Write a job's output files and ``meta.json``; returns the result directory."""
        d = self.result_dir(generation_id)
        try:
            d.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            self._raise_os(exc, f"creating {d}")
        try:
            for name, data in files.items():
                if name not in RESULT_FILES:
                    raise ValueError(f"unexpected result file {name}")
                self.write_file(d / name, data)
            self.write_file(d / "meta.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return d

    def result_file(self, generation_id: str) -> Path:
        d = self.result_dir(generation_id)
        for name in RESULT_FILES:
            if (d / name).exists():
                return d / name
        raise NotFound(f"generation {generation_id} has no result file")

    def result_meta(self, generation_id: str) -> dict:
        try:
            return orjson.loads((self.result_dir(generation_id) / "meta.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"generation {generation_id} has no result") from None

    # -- housekeeping -------------------------------------------------------------
    def prune(self, *, results_older_than: float, uploads_older_than: float | None = None) -> int:
        """Delete results (and optionally uploads) whose directory is older than the given seconds."""
        now, removed = time.time(), 0
        for parent, age in ((self.results, results_older_than), (self.uploads, uploads_older_than)):
            if age is None:
                continue
            with os.scandir(parent) as it:
                for entry in it:
                    if ID_RE.match(entry.name) and now - entry.stat().st_mtime > age:
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed += 1
        return removed

