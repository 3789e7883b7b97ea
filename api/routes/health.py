"""``GET /health`` and ``GET /metrics`` (Prometheus), both open."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from beatbus import __version__
from beatbus.bus import BROKER_ERRORS

from ..models import Health
from ..state import Api

__all__ = ["router"]

router = APIRouter()


@router.get("/health", response_model=Health, tags=["health"],
            responses={503: {"model": Health, "description": "unhealthy: the broker does not answer"}})
def health(api: Api):
    """``healthy`` while the broker answers, else 503 ``unhealthy`` (``backends`` says which part)."""
    backends = {"beat": api.settings.backend}
    try:
        api.bus.redis.ping()
        backends["broker"] = "ok"
    except BROKER_ERRORS:
        backends["broker"] = "down"
    if api.delivery is not None:
        backends["error_generator"] = f"circuit {api.delivery.breaker.state.value}"
    else:
        backends["error_generator"] = "not configured"
    healthy = backends["broker"] == "ok"
    doc = Health(status="healthy" if healthy else "unhealthy", service="beatbus", version=__version__,
                 backends=backends, fpga_enabled=api.settings.backend == "hls")
    return doc if healthy else JSONResponse(doc.model_dump(), status_code=503)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
