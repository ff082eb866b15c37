"""Browsers on other sites must not drive the node: a cross-origin write is refused, and a node on loopback
answers only requests addressed to a loopback name.

Why: a node on loopback needs no API key, and a web page the user visits can make the browser send "simple"
cross-site requests (a multipart upload, a form post) to 127.0.0.1 without any CORS preflight. The browser
always names the page's origin in `Origin` on such a write, so a write whose Origin is not this node's own
address is refused. DNS rebinding (a hostile name that resolves to 127.0.0.1, so the page looks same-origin)
is refused by the Host check: on loopback only 127.0.0.1, localhost and [::1] are this node's names. Scripts
and OpenAI clients send no Origin and are unaffected.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from avadios.services.gateway.api.errors import ApiError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _host_name(host: str) -> str:
    """"localhost:8740" -> "localhost"; "[::1]:8740" -> "[::1]"."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SameOrigin:
    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(Headers(scope=scope), scope.get("method", "GET"))
            if refusal is not None:
                error = ApiError(403, refusal, "cross_origin_refused")
                await JSONResponse(error.body(), status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers, method: str) -> str | None:
        host = headers.get("host", "")
        if self.loopback_only and host and _host_name(host).lower() not in LOOPBACK_NAMES:
            return f"this node answers on loopback only, not as {host!r}: use http://127.0.0.1 or localhost"
        origin = headers.get("origin")
        if method not in SAFE_METHODS and origin is not None:
            own = origin.split("://", 1)[-1].rstrip("/")
            if own.lower() != host.lower():
                return f"a write from another site ({origin}) is refused: use the node's own dashboard or a script"
        return None
