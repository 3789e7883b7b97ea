"""Request and response bodies of the HTTP API (pydantic: they are also the OpenAPI schema).

Every range is checked on input; a violation is a 422 whose ``detail`` names the field
(e.g. ``body.duration: Input should be less than or equal to 3600``).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["SectionLabel", "SourceId", "SongMetadata", "PlannedSection", "SongPlan", "SongData",
           "RhythmModeRequest", "RhythmModeStatus", "BeatTriggerRequest", "BeatTriggerResponse",
           "ControlRequest", "ControlResponse", "SourceState", "SourceList", "Health", "ErrorBody"]

SectionLabel = Literal["intro", "verse", "chorus", "bridge", "outro", "unknown"]
SourceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Tempo = Annotated[float, Field(ge=30.0, le=300.0, description="beats per minute")]
Meter = Annotated[int, Field(ge=2, le=12, description="beats per bar")]


class ErrorBody(BaseModel):
    detail: str


class _Request(BaseModel):
    # strict: JSON true is not a beat number, "12" is not a tempo
    model_config = ConfigDict(strict=True)


class SongMetadata(_Request):
    """What is known about a song without hearing it."""

    title: str = Field("", max_length=200)
    artist: str = Field("", max_length=200)
    duration: float = Field(..., ge=5.0, le=3600.0, description="song length in seconds")
    tempo: Tempo | None = Field(None, description="known tempo; default from the genre, else 120")
    genre: str | None = Field(None, max_length=50)
    meter: Meter = 4


class PlannedSection(_Request):
    label: SectionLabel
    start: float = Field(..., ge=0.0, le=36000.0, description="seconds from the song's start")
    end: float = Field(..., ge=0.0, le=36000.0)
    bars: int | None = Field(None, ge=0)
    pattern: str | None = Field(None, max_length=64, description="error pattern this section plays")

    @model_validator(mode="after")
    def _ordered(self) -> "PlannedSection":
        if self.end < self.start:
            raise ValueError(f"end={self.end} must not be before start={self.start}")
        return self


class SongPlan(BaseModel):
    """An analysis: tempo, meter and a section timeline (input to rhythm mode)."""

    title: str = ""
    artist: str = ""
    tempo: float
    meter: int
    duration: float
    method: Literal["metadata-heuristic", "audio"]
    sections: list[PlannedSection]
    beats: int | None = Field(None, description="beats found (audio analysis)")


class SongData(_Request):
    """Rhythm mode's song: an analyze-song result or just a tempo (extra fields are ignored)."""

    tempo: Tempo
    meter: Meter = 4
    duration: float | None = Field(None, ge=1.0, le=3600.0)
    sections: list[PlannedSection] = Field(default_factory=list, max_length=500)


class RhythmModeRequest(_Request):
    song_data: SongData
    duration: float = Field(..., ge=1.0, le=3600.0, description="seconds to run")
    source: SourceId | None = Field(None, description="live source to follow (default: any live source)")


class RhythmModeStatus(BaseModel):
    active: bool
    mode: Literal["live", "schedule"] | None = None
    source: str | None = None
    started_at: float | None = None
    ends_at: float | None = None
    outcomes: dict[str, int] = Field(default_factory=dict)


class BeatTriggerRequest(_Request):
    model_config = ConfigDict(strict=True, extra="forbid")

    section: SectionLabel
    beat_num: int = Field(..., ge=0, le=10**9)
    tempo: float | None = Field(None, ge=1.0, le=400.0, description="default: the live tempo, else 120")
    source: SourceId | None = Field(None, description="whose tempo to report (default: none)")


class BeatTriggerResponse(BaseModel):
    outcome: str
    status: int | None
    attempts: int
    idempotency_key: str
    payload: dict


class ControlRequest(_Request):
    """Live settings for one source; omitted fields stay as they are (give at least one)."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"minProperties": 1})

    sensitivity: float | None = Field(None, ge=0.0, le=1.0)
    bpm_override: float | None = Field(None, ge=0.0, le=300.0, description="0 clears the override")
    effects_enabled: bool | None = None
    led_offset_ms: float | None = Field(None, ge=-1000.0, le=1000.0)

    @model_validator(mode="after")
    def _something(self) -> "ControlRequest":
        if self.bpm_override is not None and 0 < self.bpm_override < 30:
            raise ValueError(f"bpm_override={self.bpm_override} must be 0 (clear) or 30-300")
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("give at least one of sensitivity, bpm_override, effects_enabled, led_offset_ms")
        return self


class ControlResponse(BaseModel):
    stream: str
    id: str
    event: dict


class SourceState(BaseModel):
    source: str
    live: bool = Field(..., description="a producer heartbeat was seen recently")
    bpm: float | None = None
    beat: int | None = None
    bar: int | None = None
    beat_in_bar: int | None = None
    meter: int | None = None
    position: str | None = Field(None, description="bar.beat, 1-based")
    is_downbeat: bool | None = None
    confidence: float | None = None
    last_beat_at: float | None = Field(None, description="wall time (unix s) of the last beat")
    section: str | None = None
    section_start: float | None = None
    intensity: float | None = None
    level_db: float | None = Field(None, description="audio RMS level in dBFS")
    lag: float | None = Field(None, description="s from the last beat's audio to its emission")
    age: float | None = Field(None, description="s since the last beat was emitted")


class SourceList(BaseModel):
    sources: list[SourceState]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    backends: dict[str, str]
    fpga_enabled: bool
