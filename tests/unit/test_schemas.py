import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from beatbus.errors import SchemaError
from beatbus.schemas import (
    AudioFrame,
    BeatEvent,
    ChordEvent,
    ControlEvent,
    Event,
    GenerationRequest,
    GenerationResult,
    IntensityEvent,
    KeyEvent,
    LedCommand,
    SectionEvent,
    StreamEnd,
    TransitionEvent,
    TriggerRequest,
    decode,
    encode,
    float_to_pcm,
    from_fields,
    pcm_to_float,
    to_fields,
)
from beatbus.schemas.events import EVENT_TYPES
from beatbus.schemas.export import SCHEMA_DIR, schema_documents

NOW = 1_790_000_000.0

SAMPLES = [
    AudioFrame(source="mic", seq=3, sample_index=1323, wall_ns=1_790_000_000_000_000_000, sr=22050,
               n_samples=4, pcm=float_to_pcm(np.array([0, 0.5, -0.5, 1.0], np.float32))),
    StreamEnd(source="mic", timestamp=12.5, emitted_at=NOW),
    BeatEvent(source="mic", timestamp=1.5, system_time=NOW, is_downbeat=True, bpm=120.0, intensity=0.4,
              confidence=0.9, beat=3, beat_in_bar=1, bar=1, meter=4, next_beat_time=2.0,
              next_beat_system_time=NOW + 0.5, emitted_at=NOW + 0.01),
    IntensityEvent(source="mic", timestamp=1.0, system_time=NOW, emitted_at=NOW, intensity=0.3, rms=0.1,
                   loudness_lufs=-14.0, flux=0.2, centroid_hz=1500.0, bass=0.5, mids=0.3, highs=0.2),
    SectionEvent(source="mic", start=10.0, system_time=NOW, emitted_at=NOW, label="chorus", confidence=0.7,
                 status="tentative", group=2),
    TriggerRequest(error_type="business", beat=17, section="chorus", tempo=128.0),
    GenerationRequest(id="job-1", prompt="upbeat", duration=30.0, tempo=120.0, requested_at=NOW),
    GenerationResult(id="job-1", status="finished", progress=100, audio_path="/x.wav", metadata={"bpm": 120}),
    ControlEvent(source="mic", led_offset_ms=-20.0, effects_enabled=True, issued_at=NOW),
    TransitionEvent(source="mic", kind="drop", timestamp=30.0, system_time=NOW, detected_time=30.2,
                    emitted_at=NOW + 0.2, confidence=0.8, loudness_from=-20.0, loudness_to=-9.0),
    LedCommand(id="req-1", consumer="led", action="update_device", device="ddp:10.0.0.5",
               fields={"brightness": 0.5, "effect_config": {"decay": 0.3}}, issued_at=NOW),
    KeyEvent(source="mic", timestamp=4.0, system_time=NOW, detected_time=6.1, emitted_at=NOW + 2.2, tonic=9,
             mode="minor", confidence=0.9),
    ChordEvent(source="mic", timestamp=8.0, system_time=NOW, detected_time=8.4, emitted_at=NOW + 0.45, root=5,
               quality="maj", confidence=0.8, beat=16, bar=4, beat_in_bar=1, next_change_time=10.0,
               next_change_system_time=NOW + 2.0, next_change_beats=4),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_json_and_stream_fields(event):
    assert decode(encode(event), type(event)) == event
    assert decode(encode(event), Event) == event          # tagged union finds the type
    assert from_fields(to_fields(event), type(event)) == event


def test_every_event_type_has_a_sample():
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)


def test_audio_pcm_travels_raw_not_base64():
    frame = SAMPLES[0]
    fields = to_fields(frame)
    assert fields[b"pcm"] == frame.pcm and b"pcm\":\"\"" in fields[b"d"]
    assert np.allclose(pcm_to_float(frame), [0, 0.5, -0.5, 1.0], atol=1e-4)


@pytest.mark.parametrize("payload, needle", [
    (b'{"type":"beat","source":"mic"}', "missing required field"),
    (b'{"type":"trigger","error_type":"x","beat":-1,"section":"verse","tempo":120}', "beat"),
    (b'{"type":"trigger","error_type":"x","beat":1,"section":"drop","tempo":120}', "section"),
    (b'{"type":"trigger","error_type":"x","beat":1,"section":"verse","tempo":"fast"}', "tempo"),
    (b'{"type":"generation_request","id":"a","duration":500,"requested_at":1}', "duration"),
    (b'{"type":"nope"}', "type"),
    (b'{"type": "beat", ', "malformed JSON"),
    (b'\xff\xfe', "malformed"),
])
def test_bad_payloads_rejected_with_clear_error(payload, needle):
    with pytest.raises(SchemaError) as err:
        decode(payload, Event)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_source_name_rejected():
    with pytest.raises(SchemaError, match="source"):
        decode(b'{"type":"stream_end","source":"a b{c}","timestamp":1}', Event)


def test_audio_pcm_length_must_match_header():
    fields = to_fields(SAMPLES[0])
    fields[b"pcm"] = fields[b"pcm"][:-2]
    with pytest.raises(SchemaError, match="pcm has 6 bytes"):
        from_fields(fields, AudioFrame)


def test_entry_without_payload_field():
    with pytest.raises(SchemaError, match="no 'd' field"):
        from_fields({b"x": b"1"}, Event)


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(data):
    try:
        decode(data, Event)
    except SchemaError:
        pass


@hsettings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "source", "timestamp", "bpm", "beat", "pcm", "sr"]),
                       st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8), st.booleans()),
                       max_size=7))
def test_wrong_types_are_schema_errors(doc):
    try:
        decode(msgspec.json.encode(doc), Event)
    except SchemaError:
        pass


def test_exported_json_schemas_match_code():
    """Fails when an event changes and `beatbus schemas export` was not re-run."""
    docs = schema_documents()
    assert set(docs) == {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    for name, data in docs.items():
        assert (SCHEMA_DIR / name).read_bytes() == data, f"{name} is stale: run `beatbus schemas export`"


def _drop_class(docstring: str, field_doc: str) -> type:
    """The same event, its docstrings indented the way a given author or formatter wrote them."""
    import typing

    cls = msgspec.defstruct("Drop", [("level", typing.Annotated[float, msgspec.Meta(description=field_doc)])])
    cls.__doc__ = docstring
    return cls


def test_exported_schema_ignores_docstring_indentation():
    # msgspec >= 0.23 cleans indentation itself, older releases kept it: the export must not care.
    flush = _drop_class("A drop.\n\nLoudness rises sharply.", "Level in LUFS.\nAlways negative.")
    indented = _drop_class("A drop.\n\n        Loudness rises sharply.\n        ",
                           "Level in LUFS.\n            Always negative.")
    assert schema_documents([flush]) == schema_documents([indented])


def test_normalise_cleans_raw_descriptions_as_an_older_msgspec_leaves_them():
    from beatbus.schemas.export import normalise

    raw = {"description": "Top.\n\n    Body line.\n    ", "properties": {
        "x": {"description": "Field.\n        More."}, "items": [{"description": "  lead"}]}}
    assert normalise(raw) == {"description": "Top.\n\nBody line.", "properties": {
        "x": {"description": "Field.\nMore."}, "items": [{"description": "lead"}]}}
