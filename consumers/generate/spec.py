"""What a caller may ask for (:class:`GenerateParams`) and what goes on the queue (:class:`GenerationJob`).

Every range is checked here, before a job is queued and before any model runs: the API,
the CLI and the stream policy all build jobs through :func:`build_job`.

``GenerationJob`` wraps the wire-level :class:`schemas.GenerationRequest` with the fields
the schema lacks (conditioning audio, melody, meter, bars, seed, why it was queued).
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Literal

import msgspec

from beatbus.schemas import GenerationRequest
from beatbus.schemas.events import SectionLabel, Source

from .conditioning import Conditioning, build_prompt
from .errors import InvalidRequest

__all__ = ["GenerateParams", "GenerationJob", "build_job", "parse_params", "new_id", "ID_RE", "KEY_RE",
           "LSTM_DEFAULT_TEMPO"]

M = msgspec.Meta
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KEY_RE = r"^[A-G][#b]? (major|minor)$"
LSTM_DEFAULT_TEMPO = 100.0
Id = Annotated[str, M(pattern=ID_RE.pattern)]


class GenerateParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Parameters of one generation request (ranges from the MusicGen seed).

    ``duration`` defaults to 10 s (MusicGen); an LSTM request may give ``bars`` instead.
    ``source`` asks for conditioning from that live source (tempo, section, intensity, key,
    and its latest audio when ``melody`` is set).
    """
    kind: Literal["musicgen", "lstm"] = "musicgen"
    prompt: Annotated[str, M(max_length=500)] = ""
    duration: Annotated[float, M(ge=5.0, le=120.0)] | None = None
    temperature: Annotated[float, M(ge=0.1, le=2.0)] = 1.0
    top_k: Annotated[int, M(ge=0, le=500)] = 250
    top_p: Annotated[float, M(ge=0.0, le=1.0)] = 0.0
    cfg_coef: Annotated[float, M(ge=1.0, le=10.0)] = 3.0
    tempo: Annotated[float, M(ge=20.0, le=300.0)] | None = None
    section: SectionLabel | None = None
    intensity: Annotated[float, M(ge=0.0, le=1.0)] | None = None
    key: Annotated[str, M(pattern=KEY_RE)] | None = None
    meter: Annotated[int, M(ge=1, le=12)] | None = None
    bars: Annotated[int, M(ge=1, le=256)] | None = None
    seed: Annotated[int, M(ge=0, le=2**31 - 1)] | None = None
    melody: bool = False
    render_audio: bool = False
    source: Source | None = None


class GenerationJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One queued job: the wire request plus what the request schema has no field for."""
    request: GenerationRequest
    audio_id: Id | None = None
    melody: bool = False
    meter: Annotated[int, M(ge=1, le=12)] = 4
    bars: Annotated[int, M(ge=1, le=256)] | None = None
    seed: Annotated[int, M(ge=0, le=2**31 - 1)] | None = None
    render_audio: bool = False
    seed_tokens: Annotated[list[Annotated[str, M(pattern=r"^(n\d{1,3}|c[\d.]{1,40}|r)_[\d.]{1,5}$")]],
                           M(max_length=256)] | None = None
    reason: Literal["api", "cli", "section", "bars"] = "api"

    @property
    def id(self) -> str:
        return self.request.id


def new_id(prefix: str) -> str:
    """A fresh opaque id (``g`` generations, ``a`` audio): never derived from user input."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _field_error(exc: msgspec.ValidationError) -> InvalidRequest:
    msg = str(exc)
    m = re.search(r" - at `\$\.?([^`]*)`$", msg)
    if m:
        return InvalidRequest(f"{m.group(1) or 'body'}: {msg[:m.start()]}")
    return InvalidRequest(f"invalid parameters: {msg}")


def parse_params(data: bytes | dict | None) -> GenerateParams:
    """JSON bytes or a dict -> validated params; raises InvalidRequest naming the field."""
    try:
        if data is None or data == b"":
            return GenerateParams()
        if isinstance(data, (bytes, str)):
            return msgspec.json.decode(data, type=GenerateParams)
        if isinstance(data, dict):      # JSON has one number type: 4.0 is an integer to the API's schema
            data = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
        return msgspec.convert(data, GenerateParams)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None


def build_job(params: GenerateParams, *, conditioning: Conditioning | None = None, audio_id: str | None = None,
              reason: str = "api", job_id: str | None = None, base_prompt: str = "",
              seed_tokens: list[str] | None = None) -> GenerationJob:
    """Check consistency, fill gaps from the stream's conditioning, and build the queued job.

    Explicit parameters win over the stream's values. Raises InvalidRequest (naming the
    parameter) for anything a model would otherwise fail on later.
    """
    cond = conditioning or Conditioning()
    tempo = params.tempo if params.tempo is not None else cond.tempo
    section = params.section or cond.section
    intensity = params.intensity if params.intensity is not None else cond.intensity
    key = params.key or cond.key
    meter = params.meter or cond.meter or 4
    if params.melody and params.kind != "musicgen":
        raise InvalidRequest("melody: only the musicgen kind takes melody conditioning")
    if params.melody and audio_id is None:
        raise InvalidRequest("melody: needs audio to follow (an uploaded audio id or a live source)")
    duration = params.duration
    bars = params.bars
    if params.kind == "lstm":
        tempo = tempo or LSTM_DEFAULT_TEMPO
        bar_s = meter * 60.0 / tempo
        if bars is None:
            bars = max(1, round((duration or 10.0) / bar_s))
        elif duration is not None:
            raise InvalidRequest("bars: give either bars or duration, not both")
        duration = bars * bar_s
        if not 5.0 <= duration <= 120.0:
            raise InvalidRequest(f"bars: {bars} bars of {meter} at {tempo:g} BPM last {duration:.1f} s; "
                                 "the length must be 5-120 s")
    elif bars is not None:
        raise InvalidRequest("bars: only the lstm kind takes bars; give duration for musicgen")
    if params.render_audio and params.kind != "lstm":
        raise InvalidRequest("render_audio: only lstm output (MIDI) is rendered; musicgen is audio already")
    prompt = build_prompt(params.prompt or base_prompt, tempo=tempo, section=section, intensity=intensity,
                          key=key, meter=meter)
    try:
        request = GenerationRequest(
            id=job_id or new_id("g"), source=params.source or cond.source, backend=params.kind, prompt=prompt,
            duration=round(duration if duration is not None else 10.0, 3), temperature=params.temperature,
            top_k=params.top_k, top_p=params.top_p, cfg_coef=params.cfg_coef,
            tempo=round(tempo, 2) if tempo else None, section=section,
            intensity=round(intensity, 3) if intensity is not None else None, key=key, requested_at=time.time())
        job = GenerationJob(request=request, audio_id=audio_id, melody=params.melody, meter=meter, bars=bars,
                            seed=params.seed, render_audio=params.render_audio,
                            seed_tokens=seed_tokens[-256:] if seed_tokens else None, reason=reason)
        # Struct constructors do not validate ranges: a round trip through the codec does.
        return msgspec.json.decode(msgspec.json.encode(job), type=GenerationJob)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
