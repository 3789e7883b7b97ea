"""``POST /api/analyze-song``: a song plan from metadata (JSON) or from an uploaded audio file.

The route sets no body limit of its own: :func:`api.app.create_app` includes :data:`router` with
``ApiLimits.upload_bytes``; a JSON body is held to ``ApiLimits.body_bytes`` here.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..contract import errors, invalid_json, too_large
from ..deps import require
from ..models import SongMetadata, SongPlan
from ..song_plan import plan_from_audio, plan_from_metadata
from ..state import ERRORS, Api, ApiState

__all__ = ["router", "SCHEMAS"]

router = APIRouter()

_METADATA_SCHEMA = SongMetadata.model_json_schema(ref_template="#/components/schemas/{model}")
SCHEMAS = _METADATA_SCHEMA.pop("$defs", {})      # the app adds them to its document's components
_BODY = {"required": True, "content": {
    "application/json": {"schema": _METADATA_SCHEMA},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "audio/wav": {"schema": {"type": "string", "format": "binary"}},
    "audio/flac": {"schema": {"type": "string", "format": "binary"}},
}}


@router.post("/api/analyze-song", response_model=SongPlan, tags=["rhythm"], dependencies=[require("read")],
             openapi_extra={"requestBody": _BODY}, responses={**ERRORS, **errors(415)})
async def analyze_song(request: Request, api: Api) -> SongPlan:
    """Plan a song: JSON metadata (ours, or the original rhythm service's ``name``, ``artist``,
    ``audio_features``) -> the heuristic; an audio body (``audio/*`` or
    ``application/octet-stream``) -> tempo and meter of the whole file's beats (offline decoder) and
    its sections (the structure analysis of ``beatbus analyze --sections``)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if ctype == "application/json":
        if len(body) > api.limits.body_bytes:
            raise HTTPException(413, too_large(api.limits.body_bytes))
        try:
            meta = SongMetadata.model_validate(json.loads(body or b"null"))
        except json.JSONDecodeError as exc:
            raise HTTPException(422, invalid_json(exc.msg, exc.pos)) from None
        except UnicodeDecodeError as exc:
            raise HTTPException(422, invalid_json("not UTF-8 text", exc.start)) from None
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        return plan_from_metadata(meta, pattern_for=api.book.pattern_for)
    if ctype.startswith("audio/") or ctype == "application/octet-stream":
        return await _analyze_audio(api, body, request.headers.get("x-filename", ""))
    raise HTTPException(415, f"content-type {ctype or '(none)'!r}: send application/json (song metadata) "
                             "or audio/* / application/octet-stream (an audio file)")


def _store_upload(body: bytes) -> tuple[str, float]:
    """Write the upload under a generated name and read its header: (path, seconds)."""
    import soundfile as sf

    fd, path = tempfile.mkstemp(prefix="beatbus-upload-")      # never the client's file name
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    try:
        info = sf.info(path)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types for undecodable input
        os.unlink(path)
        reason = str(exc).replace(f"'{path}'", "the upload")[:120]
        raise HTTPException(415, f"file: not a decodable audio file ({reason})") from None
    if not info.frames or not info.samplerate:
        os.unlink(path)
        raise HTTPException(422, "file: the audio has no samples")
    return path, info.frames / info.samplerate


async def _analyze_audio(api: ApiState, body: bytes, title: str) -> SongPlan:
    if not body:
        raise HTTPException(422, "file: the audio body is empty")
    path, seconds = await run_in_threadpool(_store_upload, body)
    try:
        if seconds > api.limits.upload_seconds:
            raise HTTPException(413, f"file: {seconds:.0f} s of audio is longer than the limit of "
                                     f"{api.limits.upload_seconds:.0f} s")
        async with api.analyses:
            try:
                return await run_in_threadpool(
                    plan_from_audio, path, duration=seconds, backend=api.settings.backend, sr=api.settings.sr,
                    device=api.settings.device, title=title[:200], pattern_for=api.book.pattern_for)
            except ValueError as exc:
                raise HTTPException(422, f"file: {exc}") from None
            except RuntimeError as exc:    # libsndfile read errors past the header
                raise HTTPException(415, f"file: audio could not be decoded ({str(exc)[:120]})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
