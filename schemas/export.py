"""Export each event's JSON Schema into ``schemas/json/`` for non-Python consumers."""
from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from .events import EVENT_TYPES

__all__ = ["schema_documents", "schema_document", "normalise", "export_schemas", "SCHEMA_DIR"]

SCHEMA_DIR = Path(__file__).parent / "json"


def normalise(node: Any) -> Any:
    """Clean every description the way ``inspect.cleandoc`` does.

    msgspec >= 0.23 cleans docstring indentation itself and older releases did not; cleaning here
    makes the exported files a function of our code alone, whichever msgspec or Python built them.
    """
    if isinstance(node, dict):
        return {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else normalise(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [normalise(v) for v in node]
    return node


def schema_document(kind: type) -> bytes:
    """One event type's JSON Schema as pretty, key-sorted, normalised JSON bytes."""
    doc = normalise(msgspec.json.schema(kind))
    doc["$id"] = f"https://beatbus.dev/schemas/{kind.__name__}.schema.json"
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def schema_documents(kinds: Iterable[type] = EVENT_TYPES) -> dict[str, bytes]:
    """File name -> JSON Schema bytes, one per event type."""
    return {f"{kind.__name__}.schema.json": schema_document(kind) for kind in kinds}


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in schema_documents().items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written
