"""The node's own routes: GET /health and /metrics for probes (open, they reveal no user data) and the status
page at `/` (a plain server-rendered page until the web GUI replaces it; behind the API key like the rest)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from avadios import __version__
from avadios.services.gateway.health import HealthBoard
from avadios.services.gateway.metrics import Metrics

STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}
.ok{color:#167d2c}.loading{color:#a86b00}.unavailable,.not_serving{color:#b3261e}
code{background:#f3f3f3;padding:0 .2rem}"""


class HealthOut(BaseModel):
    status: str = Field(description="ok (200), or loading / unavailable (503)")
    node_id: str
    version: str
    services: dict[str, list[dict[str, Any]]] = Field(description="per service, every live instance")


def node_router(
    node_id: str, board: HealthBoard, metrics: Metrics, auth: Callable[[Request], Awaitable[None]]
) -> APIRouter:
    router = APIRouter(tags=["node"])

    @router.get(
        "/health",
        summary="200 when the node can answer, 503 while the model loads or inference is down",
        response_model=HealthOut,
        responses={503: {"model": HealthOut}},
    )
    async def health() -> Response:
        state, services = board.summary()
        body = HealthOut(status=state, node_id=node_id, version=__version__, services=services)
        return JSONResponse(body.model_dump(), status_code=200 if state == "ok" else 503)

    @router.get("/metrics", summary="Prometheus text", response_class=Response)
    async def metrics_route() -> Response:
        return Response(
            metrics.render() + board.counters_text().encode(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @router.get("/", include_in_schema=False, dependencies=[Depends(auth)])
    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(status_page(node_id, board, str(request.base_url).rstrip("/")))

    return router


def status_page(node_id: str, board: HealthBoard, base: str) -> str:
    state, services = board.summary()
    rows = "".join(
        f"<tr><td>{escape(str(s['service']))}</td><td>{s['replica']}</td><td>{s['pid']}</td>"
        f"<td class='{escape(str(s['status']))}'>{escape(str(s['status']))}</td><td>{s['requests_served']}</td>"
        f"<td>{escape(str(s['loaded_model'] or s['detail']))}</td></tr>"
        for group in services.values()
        for s in group
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>AVADIOS node</title>
<meta http-equiv="refresh" content="5"><style>{STYLE}</style></head><body>
<h1>AVADIOS node <small>{escape(__version__)}</small></h1>
<p>Node id <code>{escape(node_id)}</code> &middot; health <b class="{escape(state)}">{escape(state)}</b></p>
<p>OpenAI base URL: <code>{escape(base)}/v1</code> &middot; <a href="/docs">API docs</a> &middot;
<a href="/health">/health</a> &middot; <a href="/metrics">/metrics</a> &middot; <a href="/v1/models">/v1/models</a></p>
<h2>Services</h2><table><tr><th>service</th><th>replica</th><th>pid</th><th>status</th><th>served</th>
<th>model / detail</th></tr>{rows}</table></body></html>"""
