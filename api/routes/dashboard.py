"""The dashboard: ``GET /`` and its files under ``/static`` (open; ``api/static``)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["router", "STATIC_DIR"]

STATIC_DIR = Path(__file__).parent.parent / "static"

router = APIRouter()
router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@router.get("/", include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")
