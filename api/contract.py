"""The API's error answers, one shape everywhere, and an OpenAPI document that lists them.

Every error is ``{"detail": "<one line naming the cause>"}`` (:class:`~api.models.ErrorBody`):
validation errors too (FastAPI's default is a list), and the 413 Starlette sends as plain
text when a body is over its limit. :func:`finish_openapi` completes the generated document
so it describes what the server really answers (checked by ``schemathesis --checks all``):

- guarded routes (all but ``/health``): 401, 403, 429; the bearer scheme only while API keys
  exist (without keys, loopback clients need none);
- routes with parameters or a body: 422; with a body: 413; with path parameters: 404 (a value
  the router cannot match, e.g. one holding ``/``);
- FastAPI's list-shaped ``HTTPValidationError`` is replaced by ``ErrorBody``.

:data:`EXCEPTION_HANDLERS` (the app's ``exception_handlers``) give validation errors, HTTP
errors, user errors (:class:`~beatbus.errors.BeatbusError`, 400) and refused WebSocket
handshakes that one shape.
"""
from __future__ import annotations

import copy

import orjson
from fastapi import Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beatbus.errors import BeatbusError

from .deps import WsDenied
from .websocket import deny

__all__ = ["errors", "invalid_json", "field_errors", "too_large", "JsonTooLarge", "finish_openapi",
           "EXCEPTION_HANDLERS"]

_ERROR_REF = "#/components/schemas/ErrorBody"
_WHY = {
    400: "bad request (the cause is named)",
    401: "no API key, a bad one, or (without keys) a client that is not on this machine",
    403: "the API key lacks the route's scope",
    404: "unknown resource, or a path value the router cannot match",
    409: "conflict with the current state (the cause is named)",
    413: "request body (or audio) larger than the limit",
    415: "unsupported content type or undecodable audio",
    422: "invalid request: the field and the rule it breaks",
    429: "rate limit reached (Retry-After says when to come back)",
    502: "the downstream receiver failed",
    503: "broker or error generator unavailable / not configured",
    504: "no LED consumer answered in time (none runs on this broker, or it did not answer)",
    507: "disk full",
}


def errors(*codes: int) -> dict[int, dict]:
    """``responses=`` entries for these error codes, each an :class:`ErrorBody`."""
    from .models import ErrorBody

    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}


def invalid_json(reason: str, position: int) -> str:
    """The one wording of a malformed JSON body (FastAPI's parser and ours are both ``json``)."""
    return f"body: invalid JSON ({reason} at position {position})"


def field_errors(errors_) -> str:
    """pydantic/FastAPI errors -> one line: ``body.duration: Input should be ...; ...``."""
    parts = []
    for e in errors_:
        if e.get("type") == "json_invalid":
            loc = e.get("loc", ())
            parts.append(invalid_json(str((e.get("ctx") or {}).get("error", "unreadable")),
                                      loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0))
            continue
        loc = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
    return "; ".join(dict.fromkeys(parts)) or "invalid request"


def too_large(limit) -> str:
    return f"request body is larger than the limit of {limit} bytes" if limit else "request body is too large"


class JsonTooLarge:
    """Outermost ASGI wrapper: Starlette's body limit answers 413 in plain text (or FastAPI's
    generic ``Content Too Large``) from outside every exception handler; say it like every other
    error, with the limit."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: Message | None = None
        body = b""

        async def send_json(message: Message) -> None:
            nonlocal held, body
            if message["type"] == "http.response.start" and message["status"] == 413:
                held = message                  # decide once the (small) body is known
                return
            if held is None or message["type"] != "http.response.body":
                return await send(message)
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            if _generic(held, body):
                body = orjson.dumps({"detail": too_large(scope.get(MAX_BODY_SIZE_SCOPE_KEY))})
                headers = [(k, v) for k, v in held["headers"] if k.lower() not in (b"content-type", b"content-length")]
                held = {**held, "headers": headers + [(b"content-type", b"application/json"),
                                                      (b"content-length", str(len(body)).encode())]}
            await send(held)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_json)


def _generic(start: Message, body: bytes) -> bool:
    ctype = dict(start["headers"]).get(b"content-type", b"")
    if not ctype.startswith(b"application/json"):
        return True
    try:
        return orjson.loads(body).get("detail") == "Content Too Large"
    except (orjson.JSONDecodeError, AttributeError):
        return True


def finish_openapi(doc: dict, *, keyed: bool) -> dict:
    """A copy of FastAPI's document completed as the module docstring says."""
    from .models import ErrorBody

    doc = copy.deepcopy(doc)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    if keyed:
        doc["components"]["securitySchemes"] = {"apiKey": {
            "type": "http", "scheme": "bearer",
            "description": "An API key from `beatbus api keys create` (needed on every route but /health)"}}
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            codes = set()
            if path != "/health":
                codes |= {401, 403, 429}
                if keyed:
                    op["security"] = [{"apiKey": []}]
            params = op.get("parameters", [])
            if params or "requestBody" in op:
                codes.add(422)
            if "requestBody" in op:
                codes.add(413)
            if any(p.get("in") == "path" for p in params):
                codes.add(404)
            responses = op["responses"]
            for code in sorted(codes):
                responses.setdefault(str(code), {"description": _WHY[code]})
            for code, response in responses.items():
                if code.startswith(("4", "5")) and not _has_json(response, exclude="HTTPValidationError"):
                    response["content"] = {"application/json": {"schema": {"$ref": _ERROR_REF}}}
    return doc


def _has_json(response: dict, *, exclude: str) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    return schema is not None and not schema.get("$ref", "").endswith(exclude)


async def _ws_denied(websocket: WebSocket, exc: WsDenied) -> None:
    await deny(websocket, exc.status, exc.detail, exc.headers)


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": field_errors(exc.errors())}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status, detail, cause = exc.status_code, exc.detail, exc.__cause__
    if status == 413 and detail == "Content Too Large":     # Starlette's body limit
        detail = too_large(request.scope.get(MAX_BODY_SIZE_SCOPE_KEY))
    elif status == 400 and isinstance(cause, UnicodeDecodeError):     # FastAPI's JSON body parser
        status, detail = 422, invalid_json("not UTF-8 text", cause.start)
    elif status == 405:
        return JSONResponse({"detail": detail}, status_code=405, headers={**(exc.headers or {}),
                                                                           "Allow": _allowed(request)})
    return JSONResponse({"detail": detail}, status_code=status, headers=exc.headers)


def _allowed(request: Request) -> str:
    """Every method of the path: Starlette's 405 names only those of the first route that matched it
    (one route per method: ``GET`` and ``POST /api/led/devices`` are two)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


async def _user_error(_request: Request, exc: BeatbusError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


EXCEPTION_HANDLERS = {WsDenied: _ws_denied, RequestValidationError: _invalid,
                      StarletteHTTPException: _http_error, BeatbusError: _user_error}
