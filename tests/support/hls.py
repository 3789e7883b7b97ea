"""The shipped QKeras model's hls4ml project, converted and compiled once per test session.

Both hls test modules ask for it: the project lives in pytest's session temp directory, and
:func:`hls.backend.ensure_library` skips the conversion and the g++ compile (~15-60 s, most of
these tests' time) when the project is already there, stamped with the current build key.
"""
from __future__ import annotations

from pathlib import Path

from beatbus.hls.backend import ensure_library

__all__ = ["BEATS", "shipped_project"]

from .paths import BEATS_DIR as BEATS  # real annotated dev songs


def shipped_project(tmp_path_factory) -> Path:
    """Directory of the shipped model's compiled project (built on the session's first call)."""
    project = Path(tmp_path_factory.getbasetemp()) / "hls-shipped" / "beat_small"
    ensure_library(project)
    return project
