"""What the API's routes share: one :class:`ApiState` per app, on ``app.state.api``.

A route asks for it with a parameter ``api: Api`` (a FastAPI dependency, so no route is a
closure over :func:`api.app.create_app`'s arguments). The app's lifespan starts and stops the
parts that run threads (``hub``, ``led``, ``delivery``, ``rhythm``).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection

from beatbus.bus import BROKER_ERRORS, Bus
from beatbus.config import Settings
from beatbus.consumers.trigger import DeliveryThread, PatternBook, TriggerConfig

from .contract import errors
from .hub import EventHub
from .led_preview import LedPreviews
from .rhythm import RhythmMode

__all__ = ["ApiLimits", "ApiState", "Api", "api_state", "broker", "ERRORS"]

ERRORS = errors(400, 503)           # 401/403/404/413/422/429 are added where they apply (api.contract)


@dataclass(frozen=True)
class ApiLimits:
    """Size limits of request bodies and uploads.

    Attributes
    ----------
    body_bytes : int
        Any JSON request body.
    upload_bytes : int
        An audio file posted to ``/api/analyze-song``.
    upload_seconds : float
        Longest audio analysed (checked from the file header, before any analysis).
    """

    body_bytes: int = 64 * 1024
    upload_bytes: int = 20 * 1024 * 1024
    upload_seconds: float = 600.0


@dataclass
class ApiState:
    """The broker connection, configuration and running parts of one API app.

    Attributes
    ----------
    bus : Bus
        Connected broker client (the app's caller owns and closes it).
    settings : Settings
    limits : ApiLimits
    trigger : TriggerConfig or None
        Where triggers go; without a URL, no ``delivery`` or ``rhythm`` is started.
    book : PatternBook
        Section -> error pattern, from ``trigger``.
    analyses : asyncio.Semaphore
        Audio analyses running at once (beat tracking is CPU-bound: at most two).
    hub, led, delivery, rhythm
        Started by the lifespan: the WebSocket event fan-out, the LED previews, trigger delivery
        and rhythm mode (the last two only with a trigger URL).
    """

    bus: Bus
    settings: Settings
    limits: ApiLimits
    trigger: TriggerConfig | None = None
    book: PatternBook = field(default_factory=PatternBook)
    analyses: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    hub: EventHub | None = None
    led: LedPreviews | None = None
    delivery: DeliveryThread | None = None
    rhythm: RhythmMode | None = None

    def rhythm_mode(self) -> RhythmMode:
        """Rhythm mode, or 503 when no error generator is configured."""
        if self.rhythm is None:
            raise HTTPException(503, "no error generator configured: start the API with --error-generator-url "
                                     "or BEATBUS_ERROR_GENERATOR_URL")
        return self.rhythm


async def api_state(conn: HTTPConnection) -> ApiState:
    """The app's :class:`ApiState` (async: a sync dependency would cost a thread hop per request)."""
    return conn.app.state.api


Api = Annotated[ApiState, Depends(api_state)]


def broker(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, with the broker unreachable answered as 503."""
    try:
        return fn(*args, **kwargs)
    except BROKER_ERRORS as exc:
        raise HTTPException(503, f"broker unavailable: {type(exc).__name__}") from None
