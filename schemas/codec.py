"""The one wire codec: JSON (msgspec) for events, raw bytes for PCM.

A stream entry has a field ``d`` (the event's JSON). An AudioFrame's PCM travels in a
second field ``pcm`` as raw bytes, not base64, because audio is most of the bus's bytes.
Decoding validates types and ranges and raises :class:`SchemaError` naming the problem.
"""
from __future__ import annotations

from functools import cache
from typing import Any, TypeVar, get_args

import msgspec
import numpy as np

from beatbus.errors import SchemaError

from .events import AudioFrame, Event

__all__ = ["encode", "decode", "to_fields", "from_fields", "tag_of", "tags", "pcm_to_float", "float_to_pcm"]

T = TypeVar("T")
_encoder = msgspec.json.Encoder()


@cache
def _decoder(kind: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(kind)


def encode(event: Any) -> bytes:
    """Event -> JSON bytes."""
    return _encoder.encode(event)


def decode(data: bytes | str, kind: Any = Event) -> Any:
    """JSON bytes -> validated event of ``kind`` (a Struct type or a Union of them)."""
    try:
        return _decoder(kind).decode(data)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"invalid {getattr(kind, '__name__', 'event')}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SchemaError(f"malformed JSON: {exc}") from None


def to_fields(event: Any) -> dict[bytes, bytes]:
    """Event -> stream entry fields."""
    if isinstance(event, AudioFrame):
        pcm = event.pcm
        return {b"d": encode(msgspec.structs.replace(event, pcm=b"")), b"pcm": pcm}
    return {b"d": encode(event)}


def from_fields(fields: dict, kind: Any = Event) -> Any:
    """Stream entry fields -> validated event. Raises SchemaError on anything malformed."""
    data = fields.get(b"d", fields.get("d"))
    if data is None:
        raise SchemaError("stream entry has no 'd' field")
    event = decode(data, kind)
    if isinstance(event, AudioFrame):
        pcm = fields.get(b"pcm", fields.get("pcm", b""))
        width = 2 if event.dtype == "s16" else 4
        if len(pcm) != event.n_samples * event.channels * width:
            raise SchemaError(
                f"AudioFrame pcm has {len(pcm)} bytes, header says {event.n_samples} x "
                f"{event.channels} x {width}")
        event = msgspec.structs.replace(event, pcm=bytes(pcm))
    return event


class _Tagged(msgspec.Struct):
    type: str | None = None


_tag_decoder = msgspec.json.Decoder(_Tagged)


def tag_of(fields: dict) -> str | None:
    """The type tag of a stream entry (``"beat"``, ``"control"``...) without decoding the rest;
    None when it has none or is unreadable."""
    data = fields.get(b"d", fields.get("d"))
    if data is None:
        return None
    try:
        return _tag_decoder.decode(data).type
    except msgspec.DecodeError:
        return None


@cache
def tags(kind: Any) -> tuple[str, ...]:
    """The type tags ``kind`` (a Struct type or a Union of them) decodes."""
    return tuple(k.__struct_config__.tag for k in get_args(kind) or (kind,))


def float_to_pcm(samples: np.ndarray, dtype: str = "s16") -> bytes:
    """float32 in [-1, 1] -> little-endian PCM bytes (clipped; NaN -> 0)."""
    x = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    if dtype == "f32":
        return x.astype("<f4").tobytes()
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def pcm_to_float(frame: AudioFrame) -> np.ndarray:
    """AudioFrame -> float32 mono samples (channels averaged)."""
    if frame.dtype == "f32":
        x = np.frombuffer(frame.pcm, dtype="<f4").astype(np.float32)
    else:
        x = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float32) / 32768.0
    if frame.channels > 1:
        x = x.reshape(-1, frame.channels).mean(axis=1)
    return x
