"""The FastAPI application: :func:`create_app` composes the routers of :mod:`api.routes`.

The routes (table in :mod:`api.routes`) reach the broker, settings and running parts through
``app.state.api`` (:class:`api.state.ApiState`); the lifespan starts and stops those parts.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool

from beatbus import __version__
from beatbus.bus import Bus
from beatbus.config import Settings
from beatbus.consumers.trigger import DeliveryThread, PatternBook, TriggerConfig

from .contract import EXCEPTION_HANDLERS, JsonTooLarge, finish_openapi
from .deps import Guard
from .hub import EventHub
from .led_preview import LedPreviews
from .rhythm import RhythmMode
from .routes import analyze, dashboard, docs, events, health, led, rhythm, sources
from .sources import live_sources
from .state import ApiLimits, ApiState

__all__ = ["create_app", "ApiLimits"]


class _App(FastAPI):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.documents: dict[bool, dict] = {}     # finished OpenAPI documents, by "API keys exist"

    def build_middleware_stack(self):
        return JsonTooLarge(super().build_middleware_stack())      # outside Starlette's body limit

    def openapi(self) -> dict:
        """The generated document, completed by :func:`api.contract.finish_openapi` (errors on every
        route; the bearer scheme while API keys exist, which can change while the API runs)."""
        keyed = self.state.guard.has_keys()
        if keyed not in self.documents:
            doc = super().openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(analyze.SCHEMAS)
            self.documents[keyed] = finish_openapi(doc, keyed=keyed)
        return self.documents[keyed]


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    api: ApiState = app.state.api
    api.hub = EventHub(api.bus, block_ms=api.settings.block_ms)
    api.led = LedPreviews(api.bus)
    if api.trigger is not None and api.trigger.url:
        api.delivery = DeliveryThread(api.trigger, name="api-delivery").start()
        api.rhythm = RhythmMode(api.bus, settings=api.settings, config=api.trigger, delivery=api.delivery,
                                live_sources=lambda: live_sources(api.bus, api.settings))
    try:
        yield
    finally:
        if api.rhythm is not None:
            await run_in_threadpool(api.rhythm.close)
        if api.delivery is not None:
            await run_in_threadpool(api.delivery.close, 1.0)
        await run_in_threadpool(api.hub.close)
        await run_in_threadpool(api.led.close)


def create_app(bus: Bus, settings: Settings, *, trigger: TriggerConfig | None = None,
               limits: ApiLimits | None = None, routers: Sequence[APIRouter] = (), guard: Guard | None = None,
               cors_origins: Sequence[str] = ()) -> FastAPI:
    """Build the API.

    Parameters
    ----------
    bus : Bus
        Connected broker client (the caller owns and closes it).
    settings : Settings
    trigger : TriggerConfig, optional
        Where triggers go (``url`` from configuration, never from requests). Without a URL,
        trigger routes answer 503.
    limits : ApiLimits, optional
    routers : sequence of APIRouter
        Other stages' routes (e.g. generation's ``build_router``), included as they are;
        they guard themselves with :func:`api.deps.require`.
    guard : Guard, optional
        API keys and rate limits (:mod:`api.deps`); None: no keys (loopback clients only) and
        no rate limits.
    cors_origins : sequence of str
        Origins allowed to call the API from a browser; empty (default): no CORS headers, so
        only the dashboard's own origin can.
    """
    limits = limits or ApiLimits()
    app = _App(title="beatbus", version=__version__, lifespan=_lifespan, max_body_size=limits.body_bytes,
               docs_url=None, redoc_url=None,            # served by routes.docs, without a CDN
               exception_handlers=EXCEPTION_HANDLERS,
               description="Real-time rhythm events: sources, triggers, rhythm mode, live dashboard.")
    app.state.guard = guard or Guard()
    app.state.api = ApiState(bus, settings, limits, trigger=trigger,
                             book=trigger.book() if trigger else PatternBook())
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"])

    app.include_router(health.router)
    app.include_router(analyze.router, max_body_size=limits.upload_bytes)     # audio uploads
    for router in (rhythm.router, sources.router, events.router, led.router, *routers, docs.router, dashboard.router):
        app.include_router(router)
    return app
