"""The one auth dependency: off loopback every route but the probes' (/health, /metrics) needs the node's API key."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from avadios.errors import Unauthenticated


def api_key_check(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that refuses a request without `Authorization: Bearer <api_key>`; with no key (the
    API listens on loopback only) it lets everything through."""
    expected = f"Bearer {api_key}".encode() if api_key is not None else None

    async def check(request: Request) -> None:  # async: FastAPI would run a plain def in a worker thread
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthenticated(
                "missing or wrong API key: send 'Authorization: Bearer <key>' with the key from the node's api.key file"
            )

    return check
