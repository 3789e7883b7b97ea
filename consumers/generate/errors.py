"""Errors of the generation stage, under beatbus's one error tree.

::

    BeatbusError
    └── GenerationError            a generation job or request cannot be served
        ├── InvalidRequest         a parameter out of range or inconsistent      (HTTP 422)
        │   ├── UnsupportedAudio   an upload that does not decode as audio       (HTTP 415)
        │   └── TooLarge           an upload over the size or duration limit     (HTTP 413)
        ├── NotFound               an unknown audio or generation id             (HTTP 404)
        ├── ModelUnavailable       weights missing (no hub access) or unloadable (permanent)
        ├── NoWorker               no live worker offers the model a job needs    (HTTP 503)
        ├── StorageFull            no space left for an upload or a result       (HTTP 507)
        └── TransientError         worth retrying (broker blip, CUDA OOM)

Messages are one line and name the cause; the worker stores them in ``job.meta["error"]``
and the API returns them as ``{"detail": ...}``.
"""
from __future__ import annotations

from beatbus.errors import BeatbusError

__all__ = ["GenerationError", "InvalidRequest", "UnsupportedAudio", "TooLarge", "NotFound",
           "ModelUnavailable", "NoWorker", "StorageFull", "TransientError", "http_status"]


class GenerationError(BeatbusError):
    """Root of the generation stage's errors."""


class InvalidRequest(GenerationError, ValueError):
    """A request parameter is out of range, missing or inconsistent."""


class UnsupportedAudio(InvalidRequest):
    """Uploaded bytes do not decode as audio (checked by decoding, never by name)."""


class TooLarge(InvalidRequest):
    """An upload exceeds the byte or duration limit."""


class NotFound(GenerationError, LookupError):
    """No upload or generation with that id."""


class ModelUnavailable(GenerationError):
    """A model cannot be loaded (weights not in a local directory or warm cache)."""


class NoWorker(GenerationError):
    """No live worker advertises the model a job needs: queueing it would only wait or fail."""


class StorageFull(GenerationError, OSError):
    """The state directory's file system is full."""


class TransientError(GenerationError):
    """A failure worth a retry (the job is re-queued by rq's Retry)."""


_STATUS = ((UnsupportedAudio, 415), (TooLarge, 413), (InvalidRequest, 422), (NotFound, 404),
           (StorageFull, 507), (ModelUnavailable, 503), (NoWorker, 503), (TransientError, 503))


def http_status(exc: BaseException) -> int:
    """HTTP status code for an error (500 for anything unexpected)."""
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 500
