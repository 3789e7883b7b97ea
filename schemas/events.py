"""Typed, versioned beatbus events (msgspec Structs).

Every event is tagged with its ``type`` on the wire and carries ``v`` (schema version).
Times: ``timestamp``/``start``/``*_time`` are *stream* seconds (sample index / sr) unless
named ``system_*``/``emitted_at``, which are wall-clock Unix seconds. Unknown fields are
ignored on decode, so older readers accept newer minor versions.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "AudioFrame", "StreamEnd", "BeatEvent", "IntensityEvent", "SectionEvent",
    "TriggerRequest", "GenerationRequest", "GenerationResult", "ControlEvent", "TransitionEvent",
    "TransitionKind", "IntensityEntry", "LedCommand", "LedAction", "LED_DEVICE_PATTERN",
    "KeyEvent", "ChordEvent", "KeyMode", "ChordQuality", "HarmonyEntry",
    "SectionLabel", "EVENT_TYPES", "AudioEntry", "Event",
]

M = msgspec.Meta
# A source name, and every other name beatbus puts into a key (consumer groups, job queues);
# defined here because the schemas import nothing of ours but the error base (beatbus.keys re-exports it).
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
Source = Annotated[str, M(pattern=NAME_PATTERN, description="source name")]
Seconds = Annotated[float, M(ge=0.0, description="stream time in seconds")]
Unix = Annotated[float, M(ge=0.0, description="wall-clock Unix time in seconds")]
Unit = Annotated[float, M(ge=0.0, le=1.0)]
Bpm = Annotated[float, M(ge=0.0, le=400.0)]
SectionLabel = Literal["intro", "verse", "chorus", "bridge", "outro", "unknown"]
# An LED device's name: the seeded ones are ``scheme:host`` (``#2`` for a second one), web:// hosts, URL names
LED_DEVICE_PATTERN = r"^[A-Za-z0-9_.:#@-]{1,64}$"


class _Event(msgspec.Struct, kw_only=True, frozen=True, tag_field="type"):
    v: int = 1


class AudioFrame(_Event, tag="audio_frame", kw_only=True, frozen=True):
    """A block of PCM audio. On a stream the PCM travels raw beside the JSON header."""
    source: Source
    seq: Annotated[int, M(ge=0)]
    sample_index: Annotated[int, M(ge=0, description="index of the first sample since stream start")]
    wall_ns: Annotated[int, M(ge=0, description="wall-clock time (ns) of the first sample")]
    sr: Annotated[int, M(ge=8000, le=192000)]
    channels: Annotated[int, M(ge=1, le=2)] = 1
    dtype: Literal["s16", "f32"] = "s16"
    n_samples: Annotated[int, M(ge=0, le=96000)]
    pcm: bytes = b""


class StreamEnd(_Event, tag="stream_end", kw_only=True, frozen=True):
    """The source ended (end of file, producer stopped); consumers may finish."""
    source: Source
    timestamp: Seconds
    reason: Annotated[str, M(max_length=32)] = "eof"
    emitted_at: Unix = 0.0


class BeatEvent(_Event, tag="beat", kw_only=True, frozen=True):
    source: Source
    timestamp: Seconds
    system_time: Unix
    is_downbeat: bool
    bpm: Bpm
    intensity: Unit | None = None
    confidence: Unit
    beat: Annotated[int, M(ge=0, description="beat index since stream start")]
    beat_in_bar: Annotated[int, M(ge=1, le=12)]
    bar: Annotated[int, M(ge=0)]
    meter: Annotated[int, M(ge=1, le=12)]
    next_beat_time: Seconds
    next_beat_system_time: Unix
    emitted_at: Unix
    backend: Annotated[str, M(max_length=32)] = ""


class IntensityEvent(_Event, tag="intensity", kw_only=True, frozen=True):
    source: Source
    timestamp: Seconds
    system_time: Unix
    emitted_at: Unix
    intensity: Unit
    rms: Annotated[float, M(ge=0.0)]
    loudness_lufs: float
    flux: Annotated[float, M(ge=0.0)]
    centroid_hz: Annotated[float, M(ge=0.0)]
    bass: Unit
    mids: Unit
    highs: Unit


TransitionKind = Literal["build-up", "drop", "breakdown", "tempo-change"]


class TransitionEvent(_Event, tag="transition", kw_only=True, frozen=True):
    """An energy transition or tempo change, on ``bb:{source}:intensity``.

    ``timestamp`` is when it happened (a build-up: when it started); ``detected_time`` the stream
    time of the audio that decided it (their difference is the detection delay). A build-up may
    carry ``predicted_time``, when the drop is expected.
    """
    source: Source
    kind: TransitionKind
    timestamp: Seconds
    system_time: Unix
    detected_time: Seconds
    emitted_at: Unix
    confidence: Unit
    predicted_time: Seconds | None = None
    predicted_system_time: Unix | None = None
    bpm_from: Bpm | None = None
    bpm_to: Bpm | None = None
    loudness_from: float | None = None
    loudness_to: float | None = None


class SectionEvent(_Event, tag="section", kw_only=True, frozen=True):
    source: Source
    start: Seconds
    end: Seconds | None = None
    system_time: Unix
    emitted_at: Unix
    label: SectionLabel
    confidence: Unit
    status: Literal["tentative", "confirmed", "revised"]
    group: Annotated[int, M(ge=0, description="repetition group id")] = 0


class TriggerRequest(_Event, tag="trigger", kw_only=True, frozen=True):
    """The error generator's ``POST /api/rhythm-trigger`` payload (plus ``v``/``type``)."""
    trigger: Literal["rhythm"] = "rhythm"
    error_type: Annotated[str, M(min_length=1, max_length=64)]
    beat: Annotated[int, M(ge=0)]
    section: SectionLabel
    tempo: Bpm


class GenerationRequest(_Event, tag="generation_request", kw_only=True, frozen=True):
    id: Annotated[str, M(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    source: Source | None = None
    backend: Literal["musicgen", "lstm"] = "musicgen"
    prompt: Annotated[str, M(max_length=1000)] = ""
    duration: Annotated[float, M(ge=5.0, le=120.0)] = 10.0
    temperature: Annotated[float, M(ge=0.1, le=2.0)] = 1.0
    top_k: Annotated[int, M(ge=0, le=500)] = 250
    top_p: Unit = 0.0
    cfg_coef: Annotated[float, M(ge=1.0, le=10.0)] = 3.0
    tempo: Bpm | None = None
    section: SectionLabel | None = None
    intensity: Unit | None = None
    key: str | None = None
    requested_at: Unix


class GenerationResult(_Event, tag="generation_result", kw_only=True, frozen=True):
    id: Annotated[str, M(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    status: Literal["queued", "started", "finished", "failed"]
    progress: Annotated[int, M(ge=0, le=100)] = 0
    audio_path: str | None = None
    midi_path: str | None = None
    metadata: dict[str, str | int | float | bool | None] = {}
    error: str | None = None
    duration: Annotated[float, M(ge=0.0)] | None = None
    finished_at: Unix | None = None


class ControlEvent(_Event, tag="control", kw_only=True, frozen=True):
    """A change of live settings for one source on ``bb:{source}:control``; None = unchanged."""
    source: Source
    sensitivity: Unit | None = None
    bpm_override: Annotated[float, M(ge=0.0, le=300.0, description="fixed tempo; 0 clears it")] | None = None
    effects_enabled: bool | None = None
    led_offset_ms: Annotated[float, M(ge=-1000.0, le=1000.0, description="+ = lights later")] | None = None
    issued_at: Unix


LedAction = Literal["add_device", "update_device", "remove_device", "save_preset", "apply_preset",
                   "delete_preset"]


class LedCommand(_Event, tag="led_command", kw_only=True, frozen=True):
    """A change of one LED consumer's setup, on ``bb:led:commands`` (written by the API).

    The consumer named ``consumer`` validates and applies it, saves its setup and answers on
    ``bb:led:reply:{id}`` (a list holding one JSON document: ``ok``, ``status``, ``error``, ``setup``).
    ``fields`` are device keys (``output``, ``pixels``, ``effect``, ``effect_config``...) for
    ``add_device`` / ``update_device``; the consumer checks them.
    """
    id: Annotated[str, M(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="request id (the reply key)")]
    consumer: Annotated[str, M(pattern=NAME_PATTERN, description="LED consumer name (consume led --name)")]
    action: LedAction
    device: Annotated[str, M(pattern=LED_DEVICE_PATTERN)] | None = None
    preset: Annotated[str, M(pattern=NAME_PATTERN)] | None = None
    fields: dict[str, Any] = {}
    issued_at: Unix


KeyMode = Literal["major", "minor"]
ChordQuality = Literal["maj", "min", "N"]
PitchClass = Annotated[int, M(ge=0, le=11, description="pitch class, 0 = C ... 11 = B")]


class KeyEvent(_Event, tag="key", kw_only=True, frozen=True):
    """The source's key, on ``bb:{source}:harmony``: published when it is first found and when it changes.

    ``timestamp`` is when the key took over (the beat from which the new key led), ``detected_time``
    the stream time of the audio that decided it.
    """
    source: Source
    timestamp: Seconds
    system_time: Unix
    detected_time: Seconds
    emitted_at: Unix
    tonic: PitchClass
    mode: KeyMode
    confidence: Unit


class ChordEvent(_Event, tag="chord", kw_only=True, frozen=True):
    """A chord change on ``bb:{source}:harmony`` (published only when the chord changes).

    ``timestamp`` is when the chord began (the start of the beat ``beat`` of bar ``bar``, from the
    beats stream; None without beats); ``quality`` ``N`` is no chord (``root`` None). The next
    change is expected at ``next_change_time`` (``next_change_beats`` beats after ``timestamp``:
    the harmonic rhythm on the bar grid).
    """
    source: Source
    timestamp: Seconds
    system_time: Unix
    detected_time: Seconds
    emitted_at: Unix
    root: PitchClass | None = None
    quality: ChordQuality
    confidence: Unit
    beat: Annotated[int, M(ge=0, description="beat index since stream start")] | None = None
    bar: Annotated[int, M(ge=0)] | None = None
    beat_in_bar: Annotated[int, M(ge=1, le=12)] | None = None
    next_change_time: Seconds | None = None
    next_change_system_time: Unix | None = None
    next_change_beats: Annotated[int, M(ge=1, le=64)] | None = None


AudioEntry = AudioFrame | StreamEnd
IntensityEntry = IntensityEvent | TransitionEvent | StreamEnd
HarmonyEntry = KeyEvent | ChordEvent | StreamEnd
Event = (AudioFrame | StreamEnd | BeatEvent | IntensityEvent | SectionEvent
         | TriggerRequest | GenerationRequest | GenerationResult | ControlEvent | TransitionEvent | LedCommand
         | KeyEvent | ChordEvent)
EVENT_TYPES = (AudioFrame, StreamEnd, BeatEvent, IntensityEvent, SectionEvent,
               TriggerRequest, GenerationRequest, GenerationResult, ControlEvent, TransitionEvent, LedCommand,
               KeyEvent, ChordEvent)
