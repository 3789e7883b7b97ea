"""Route guards: the one place authentication and rate limits attach to the API.

Every route declares the scope it needs with ``dependencies=[require("control")]``
(scopes: ``read``, ``control``, ``trigger``, ``generate``; ``GET /health`` has none).
:func:`check` applies the app's :class:`Guard` (``app.state.guard``):

- keys configured: a bearer token is required -> 401 without a valid one, 403 when the key
  lacks the scope;
- no keys: "open" mode, answered only for loopback peers asking for a loopback host (the
  server refuses to bind elsewhere without keys; the Host check stops DNS rebinding);
- then a token bucket per (key, route) -> 429 with ``Retry-After``.

Tokens come in ``Authorization: Bearer <key>``. Browsers cannot set headers on a WebSocket,
so a WebSocket may instead offer the subprotocols ``beatbus.v1, bearer.<key>``; the server
answers with ``beatbus.v1`` (:func:`ws_subprotocol`). Never a query parameter: URLs end up
in logs and browser history.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Depends, HTTPException
from prometheus_client import Counter
from starlette.requests import HTTPConnection

from .auth import SCOPES, KeyStore
from .ratelimit import TokenBuckets
from .server import is_loopback

__all__ = ["require", "check", "SCOPES", "Guard", "WsDenied", "ws_subprotocol", "WS_PROTOCOL"]

WS_PROTOCOL = "beatbus.v1"
_BEARER_PROTOCOL = "bearer."
AUTH_FAILURES = Counter("beatbus_api_auth_failures_total", "Requests refused by authentication", ["reason"])
RATE_LIMITED = Counter("beatbus_api_rate_limited_total", "Requests refused by a rate limit", ["scope"])


@dataclass
class Guard:
    """Who may do what, and how often.

    Parameters
    ----------
    store : KeyStore, optional
        The API keys; None or empty: open mode (loopback peers only).
    buckets : TokenBuckets, optional
        Rate limits; None: none (embedding and tests).
    """

    store: KeyStore | None = None
    buckets: TokenBuckets | None = field(default=None)

    def has_keys(self) -> bool:
        return bool(self.store)


class WsDenied(Exception):
    """A WebSocket handshake refused with an HTTP status (answered by :data:`api.contract.EXCEPTION_HANDLERS`)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def _host_of(header: str) -> str:
    host = header.strip()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _token(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if conn.scope["type"] == "websocket":
        for proto in conn.headers.get("sec-websocket-protocol", "").split(","):
            proto = proto.strip()
            if proto.startswith(_BEARER_PROTOCOL):
                return proto[len(_BEARER_PROTOCOL):]
    return None


def ws_subprotocol(conn: HTTPConnection) -> str | None:
    """The subprotocol to accept with: ``beatbus.v1`` when the client offered it."""
    offered = [p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",")]
    return WS_PROTOCOL if WS_PROTOCOL in offered else None


def _refuse(conn: HTTPConnection, status: int, detail: str, headers: dict[str, str] | None = None):
    if conn.scope["type"] == "websocket":
        return WsDenied(status, detail, headers)
    return HTTPException(status, detail, headers=headers)


async def check(conn: HTTPConnection, scope: str) -> None:
    """May this request or WebSocket use ``scope``? Raises 401/403/429 (HTTP) or WsDenied."""
    guard: Guard = getattr(conn.app.state, "guard", None) or Guard()
    if guard.has_keys():
        token = _token(conn)
        key = guard.store.authenticate(token) if token else None
        if key is None:
            AUTH_FAILURES.labels("missing" if not token else "invalid").inc()
            raise _refuse(conn, 401, "missing API key: send 'Authorization: Bearer <key>'" if not token
                          else "invalid or revoked API key", {"WWW-Authenticate": 'Bearer realm="beatbus"'})
        if scope not in key.scopes:
            AUTH_FAILURES.labels("scope").inc()
            raise _refuse(conn, 403, f"API key {key.id} lacks the {scope!r} scope")
        caller = f"key:{key.id}"
        conn.state.api_key = key.id
    else:
        peer = conn.client.host if conn.client else ""
        if not (is_loopback(peer) and is_loopback(_host_of(conn.headers.get("host", "")))):
            AUTH_FAILURES.labels("open_mode").inc()
            raise _refuse(conn, 401, "no API keys are configured: this API answers only on localhost "
                                     "(create a key: beatbus api keys create --scope read)")
        caller = f"peer:{peer}"
    if guard.buckets is not None:
        route = conn.scope.get("route")
        wait = guard.buckets.take(caller, getattr(route, "path", conn.url.path), scope)
        if wait > 0:
            RATE_LIMITED.labels(scope).inc()
            raise _refuse(conn, 429, f"rate limit of the {scope!r} scope reached: retry in {wait:.1f} s",
                          {"Retry-After": TokenBuckets.retry_after(wait)})


def require(scope: str):
    """A dependency guarding a route (HTTP or WebSocket) with ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} must be one of {SCOPES}")

    async def guard(conn: HTTPConnection) -> None:
        await check(conn, scope)

    guard.__name__ = f"require_{scope}"
    return Depends(guard)
