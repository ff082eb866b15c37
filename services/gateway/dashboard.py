"""The node's home page at `/`: a plain server-rendered status page until the web GUI issue replaces it."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from avadios import __version__

if TYPE_CHECKING:
    from services.gateway.app import Gateway

STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}
.ok{color:#167d2c}.loading{color:#a86b00}.unavailable,.not_serving{color:#b3261e}
code{background:#f3f3f3;padding:0 .2rem}"""


def add_dashboard(app: FastAPI, gw: Gateway) -> None:
    async def home(request: Request) -> HTMLResponse:
        state, services = gw.board.summary()
        rows = "".join(
            f"<tr><td>{escape(str(s['service']))}</td><td>{s['replica']}</td><td>{s['pid']}</td>"
            f"<td class='{escape(str(s['status']))}'>{escape(str(s['status']))}</td><td>{s['requests_served']}</td>"
            f"<td>{escape(str(s['loaded_model'] or s['detail']))}</td></tr>"
            for group in services.values()
            for s in group
        )
        base = str(request.base_url).rstrip("/")
        page = f"""<!doctype html><html><head><meta charset="utf-8"><title>AVADIOS node</title>
<meta http-equiv="refresh" content="5"><style>{STYLE}</style></head><body>
<h1>AVADIOS node <small>{escape(__version__)}</small></h1>
<p>Node id <code>{escape(gw.node_id)}</code> &middot; health <b class="{escape(state)}">{escape(state)}</b></p>
<p>OpenAI base URL: <code>{escape(base)}/v1</code> &middot; <a href="/docs">API docs</a> &middot;
<a href="/health">/health</a> &middot; <a href="/metrics">/metrics</a> &middot; <a href="/v1/models">/v1/models</a></p>
<h2>Services</h2><table><tr><th>service</th><th>replica</th><th>pid</th><th>status</th><th>served</th>
<th>model / detail</th></tr>{rows}</table></body></html>"""
        return HTMLResponse(page)

    app.add_api_route("/", home, methods=["GET"], include_in_schema=False)
