"""Request and response bodies of the HTTP API (pydantic: they are also the OpenAPI schema).

Every range is checked on input; a violation is a 422 whose ``detail`` names the field
(e.g. ``body.duration: Input should be less than or equal to 3600``).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    model_validator,
)

from beatbus.keys import NAME_PATTERN

__all__ = ["SectionLabel", "SourceId", "SongMetadata", "AudioFeatures", "PlannedSection", "SongPlan", "SongData",
           "RhythmModeRequest", "RhythmModeStatus", "RhythmModeStarted", "BeatTriggerRequest", "BeatTriggerResponse",
           "ControlRequest", "ControlResponse", "SourceState", "SourceList", "Health", "ErrorBody",
           "SONG_SECONDS", "DEFAULT_TEMPO"]

SectionLabel = Literal["intro", "verse", "chorus", "bridge", "outro", "unknown"]
SourceId = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Tempo = Annotated[float, Field(ge=30.0, le=300.0, description="beats per minute")]
# JSON has one number type: 4.0 is an integer to JSON Schema (and so to the OpenAPI document)
_integral = BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
JsonInt = Annotated[int, _integral]
Meter = Annotated[int, Field(ge=2, le=12, description="beats per bar"), _integral]
# The original rhythm service's defaults (its clients rely on them): a song is 3 minutes, 120 BPM.
SONG_SECONDS = 180.0
DEFAULT_TEMPO = 120.0


def _no_default(schema: dict) -> None:
    schema.pop("default", None)         # "absent" is not a value a client may send


def _bpm_override_schema(schema: dict) -> None:
    _no_default(schema)
    bounds = {k: schema.pop(k) for k in ("minimum", "maximum", "type")}
    schema["anyOf"] = [{"type": "number", "enum": [0]}, {**bounds, "minimum": 30.0}]
    schema["description"] = "BPM to lock to (30-300); 0 clears the override"


class ErrorBody(BaseModel):
    """Every error answer: one line naming the cause (``body.duration: ...``)."""

    detail: str


class _Request(BaseModel):
    # strict: JSON true is not a beat number, "12" is not a tempo
    model_config = ConfigDict(strict=True)


class AudioFeatures(_Request):
    """A catalogue's audio features (Spotify's shape, as the original rhythm service took them);
    other fields are ignored."""

    tempo: Tempo | None = None
    energy: float | None = Field(None, ge=0.0, le=1.0)
    danceability: float | None = Field(None, ge=0.0, le=1.0)
    duration_ms: JsonInt | None = Field(None, ge=5000, le=3_600_000, description="song length in ms")
    time_signature: Meter | None = None


class SongMetadata(_Request):
    """What is known about a song without hearing it: ours (``title``, ``duration``, ``tempo``,
    ``genre``, ``meter``) or the original rhythm service's shape (``name``, ``artist``,
    ``audio_features``). Given fields win over ``audio_features``; without any duration a song
    is 180 s long (:data:`SONG_SECONDS`), without any tempo it has the genre's typical one, else 120."""

    title: str = Field("", max_length=200)
    name: str | None = Field(None, max_length=200, description="the original service's title")
    artist: str = Field("", max_length=200)
    spotify_id: str | None = Field(None, max_length=64, description="accepted, not used")
    duration: float | None = Field(None, ge=5.0, le=3600.0, description="song length in seconds (default: "
                                   "audio_features.duration_ms, else 180)")
    tempo: Tempo | None = Field(None, description="known tempo; default audio_features.tempo, else the genre's, "
                                                  "else 120")
    genre: str | None = Field(None, max_length=50)
    meter: Meter | None = Field(None, description="beats per bar (default: audio_features.time_signature, else 4)")
    audio_features: AudioFeatures | None = None

    @model_validator(mode="after")
    def _fill(self) -> SongMetadata:
        features = self.audio_features or AudioFeatures()
        self.title = self.title or self.name or ""
        if self.duration is None:
            self.duration = features.duration_ms / 1000 if features.duration_ms else SONG_SECONDS
        self.tempo = self.tempo or features.tempo
        self.meter = self.meter or features.time_signature or 4
        return self


class PlannedSection(_Request):
    label: SectionLabel
    start: float = Field(..., ge=0.0, le=36000.0, description="seconds from the song's start")
    end: float = Field(..., ge=0.0, le=36000.0)
    bars: JsonInt | None = Field(None, ge=0)
    pattern: str | None = Field(None, max_length=64, description="error pattern this section plays")

    @model_validator(mode="after")
    def _ordered(self) -> PlannedSection:
        if self.end < self.start:
            raise ValueError(f"end={self.end} must not be before start={self.start}")
        return self


class StructurePart(BaseModel):
    """A section in the original rhythm service's words."""

    start: float
    duration: float
    type: str


class SongPlan(BaseModel):
    """An analysis: tempo, meter and a section timeline (input to rhythm mode), plus the original
    rhythm service's answer fields (``success``, ``beat_interval``, ``structure``)."""

    title: str = ""
    artist: str = ""
    tempo: Tempo
    meter: Meter
    duration: float
    method: Literal["metadata-heuristic", "audio"]
    sections: list[PlannedSection]
    beats: int | None = Field(None, description="beats found (audio analysis)")

    @computed_field
    @property
    def success(self) -> bool:
        return True

    @computed_field(description="seconds per beat")
    @property
    def beat_interval(self) -> float:
        return round(60.0 / self.tempo, 6)

    @computed_field(description="the sections as start, duration, type")
    @property
    def structure(self) -> list[StructurePart]:
        return [StructurePart(start=s.start, duration=round(s.end - s.start, 3), type=s.label) for s in self.sections]


class StructurePartIn(_Request):
    start: float = Field(..., ge=0.0, le=36000.0)
    duration: float = Field(..., ge=0.0, le=36000.0)
    type: str = Field(..., max_length=32, description="a section label; others play as unknown")


class SongData(_Request):
    """Rhythm mode's song: an analyze-song result (ours, or the original service's ``structure``),
    the original's ``{"name", "audio_features": {"tempo", ...}}``, or just a tempo. Tempo: ``tempo``,
    else ``audio_features.tempo``, else 120. Other fields are ignored."""

    tempo: Tempo | None = None
    meter: Meter = 4
    duration: float | None = Field(None, ge=1.0, le=3600.0)
    sections: list[PlannedSection] = Field(default_factory=list, max_length=500)
    name: str | None = Field(None, max_length=200)
    audio_features: AudioFeatures | None = None
    structure: list[StructurePartIn] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _fill(self) -> SongData:
        features = self.audio_features or AudioFeatures()
        self.tempo = self.tempo or features.tempo or DEFAULT_TEMPO
        if not self.sections and self.structure:
            labels = set(SectionLabel.__args__)
            self.sections = [PlannedSection(label=p.type if p.type in labels else "unknown", start=p.start,
                                            end=p.start + p.duration) for p in self.structure]
        return self


class RhythmModeRequest(_Request):
    song_data: SongData = Field(default_factory=SongData, description="default: 120 BPM (as the original service)")
    duration: float = Field(SONG_SECONDS, ge=1.0, le=3600.0, description="seconds to run (default 180)")
    source: SourceId | None = Field(None, description="live source to follow (default: any live source)")


class RhythmModeStatus(BaseModel):
    active: bool
    mode: Literal["live", "schedule"] | None = None
    source: str | None = None
    started_at: float | None = None
    ends_at: float | None = None
    outcomes: dict[str, int] = Field(default_factory=dict)


class RhythmModeStarted(RhythmModeStatus):
    """The status, plus the original rhythm service's answer fields."""

    success: bool = True
    message: str = "rhythm mode started"
    tempo: float
    beat_interval: float = Field(..., description="seconds per beat")
    duration: float = Field(..., description="seconds it runs")


class BeatTriggerRequest(_Request):
    model_config = ConfigDict(strict=True, extra="forbid")

    section: SectionLabel = Field("verse", description="default verse (as the original service)")
    beat_num: JsonInt = Field(1, ge=0, le=10**9, description="default 1 (as the original service)")
    tempo: float | None = Field(None, ge=1.0, le=400.0, description="default: the live tempo, else 120")
    source: SourceId | None = Field(None, description="whose tempo to report (default: none)")


class BeatTriggerResponse(BaseModel):
    outcome: str
    status: int | None
    attempts: int
    idempotency_key: str
    payload: dict
    # the original rhythm service's answer fields
    success: bool = Field(..., description="the receiver accepted it")
    triggered: bool = Field(..., description="the same as success")
    error_type: str
    section: str
    beat: int


class ControlRequest(_Request):
    """Live settings for one source; omitted fields stay as they are (give at least one)."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"minProperties": 1})

    # Not nullable: a field is given (a value) or left out, so "at least one" is minProperties.
    sensitivity: float = Field(None, ge=0.0, le=1.0, json_schema_extra=_no_default)
    bpm_override: float = Field(None, ge=0.0, le=300.0, json_schema_extra=_bpm_override_schema)
    effects_enabled: bool = Field(None, json_schema_extra=_no_default)
    led_offset_ms: float = Field(None, ge=-1000.0, le=1000.0, json_schema_extra=_no_default)

    @model_validator(mode="after")
    def _something(self) -> ControlRequest:
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
    reachable: bool = Field(True, description="false while the broker node that holds the source's streams "
                            "does not answer (a Redis Cluster shard down); the fields below are then null")
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
    quality: dict[str, str] = Field(default_factory=dict, description="stage -> its adaptive quality level for "
                                    "this source (beat: the backend; intensity: full, half; structure: full, half, "
                                    "shed); stages that adapt only")


class SectionSpan(BaseModel):
    label: str
    start: float = Field(..., description="s on the source's clock")
    end: float | None = Field(None, description="s on the source's clock; null while the section is playing")
    system_time: float = Field(..., description="wall time (unix s) of the start")
    confidence: float
    status: str = Field(..., description="confirmed, or revised (relabelled since)")


class SectionHistory(BaseModel):
    """The confirmed sections of the source's current run (what the dashboard's timeline draws)."""
    source: str
    sections: list[SectionSpan]


class SourceList(BaseModel):
    sources: list[SourceState]


class Health(BaseModel):
    """``healthy`` (HTTP 200) while the broker answers, else ``unhealthy`` (HTTP 503); the original
    rhythm service's fields plus ours."""

    status: Literal["healthy", "unhealthy"]
    service: str
    version: str
    backends: dict[str, str]
    fpga_enabled: bool
