"""The node's own routes: GET /health and /metrics for probes (open, they reveal no user data). The dashboard at
`/` is `api/web.py`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from avadios import __version__
from avadios.config import SERVICES
from avadios.services.gateway.health import HealthBoard
from avadios.services.gateway.metrics import Metrics


class HealthOut(BaseModel):
    status: str = Field(description="ok (200), or loading / unavailable (503)")
    node_id: str
    version: str
    services: dict[str, list[dict[str, Any]]] = Field(description="per service, every live instance")
    missing: list[str] = Field(
        default_factory=list, description="services of a node with no live instance: no heartbeat lately"
    )


def node_router(node_id: str, board: HealthBoard, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["node"])

    @router.get(
        "/health",
        summary="200 when the node can answer, 503 while the model loads or inference is down",
        response_model=HealthOut,
        responses={503: {"model": HealthOut}},
    )
    async def health() -> Response:
        state, services = board.summary()
        missing = [s for s in SERVICES if s not in services]
        body = HealthOut(status=state, node_id=node_id, version=__version__, services=services, missing=missing)
        return JSONResponse(body.model_dump(), status_code=200 if state == "ok" else 503)

    @router.get("/metrics", summary="Prometheus text", response_class=Response)
    async def metrics_route() -> Response:
        return Response(
            metrics.render() + board.counters_text().encode(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return router
