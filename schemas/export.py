"""Export each event's JSON Schema into ``schemas/json/`` for non-Python consumers."""
from __future__ import annotations

from pathlib import Path

import msgspec
import orjson

from .events import EVENT_TYPES

__all__ = ["schema_documents", "export_schemas", "SCHEMA_DIR"]

SCHEMA_DIR = Path(__file__).parent / "json"


def schema_documents() -> dict[str, bytes]:
    """File name -> pretty JSON Schema bytes, one per event type."""
    docs = {}
    for kind in EVENT_TYPES:
        doc = msgspec.json.schema(kind)
        doc["$id"] = f"https://beatbus.dev/schemas/{kind.__name__}.schema.json"
        docs[f"{kind.__name__}.schema.json"] = orjson.dumps(
            doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    return docs


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in schema_documents().items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written
