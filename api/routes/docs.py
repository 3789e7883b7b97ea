"""``GET /docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their files served by this API (open).

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank on a stage network
without internet; the files come from the pinned fastapi-offline package (MIT) instead.
"""
from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["router", "FILES_URL"]

FILES_URL = "/docs/files"
_FILES = Path(fastapi_offline.__file__).parent / "static"
_TITLE = "beatbus API"

router = APIRouter()
router.mount(FILES_URL, StaticFiles(directory=_FILES), name="docs-files")


@router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title=_TITLE,
                               swagger_js_url=f"{root}{FILES_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{root}{FILES_URL}/swagger-ui.css",
                               swagger_favicon_url=f"{root}/static/favicon.svg")


@router.get("/redoc", include_in_schema=False)
def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_redoc_html(openapi_url=f"{root}/openapi.json", title=_TITLE,
                          redoc_js_url=f"{root}{FILES_URL}/redoc.standalone.js",
                          redoc_favicon_url=f"{root}/static/favicon.svg", with_google_fonts=False)
