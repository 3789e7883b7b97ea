"""Route guards: the one place authentication and rate limits attach to the API.

Every route declares the scope it needs with ``dependencies=[require("control")]``
(scopes: ``read``, ``control``, ``trigger``, ``generate``; ``GET /health`` has none). Today
the guard lets everything through, because the API binds to 127.0.0.1 by default; the
[security] work replaces :func:`check` with API-key checks and per-key token buckets
(raising 401/403/429), without touching the routes.
"""
from __future__ import annotations

from fastapi import Depends
from starlette.requests import HTTPConnection

__all__ = ["require", "check", "SCOPES"]

SCOPES = ("read", "control", "trigger", "generate")


async def check(conn: HTTPConnection, scope: str) -> None:
    """May this request or WebSocket use ``scope``? (Placeholder: yes.)"""
    return None


def require(scope: str):
    """A dependency guarding a route (HTTP or WebSocket) with ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} must be one of {SCOPES}")

    async def guard(conn: HTTPConnection) -> None:
        await check(conn, scope)

    guard.__name__ = f"require_{scope}"
    return Depends(guard)
