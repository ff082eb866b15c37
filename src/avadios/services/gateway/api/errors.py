"""Every error of the HTTP API becomes one OpenAI-shaped body here: `{"error": {"message", "type", "param", "code"}}`.

The status comes from the project's error hierarchy (`avadios.errors.http_status_of`: mapped once, not again);
this module only names it the way OpenAI clients expect. `type` follows the status; `code` is the error's own
`reason` where its domain names one (the ledger's `insufficient_funds`, the pipeline's `model_not_found`),
else a slug for the status. Routes raise; one handler answers, and counts the error in the metrics.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avadios.errors import AvadiosError, http_status_of
from avadios.services.gateway.metrics import Metrics

_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "busy",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
    504: "timeout",
}


@dataclass(frozen=True, slots=True)
class ApiError:
    """What the client is told about an error."""

    status: int
    message: str
    code: str | None
    param: str | None = None  # the request field at fault, where one is (OpenAI names it too)
    retry_after_s: float | None = None  # when trying again may work (a queue's estimate): `Retry-After`

    @property
    def type(self) -> str:
        if self.status == 401:
            return "authentication_error"
        if self.status == 403:
            return "permission_error"
        if self.status == 429:
            return "rate_limit_error"
        return "invalid_request_error" if self.status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BodyTooLarge(HTTPException):
    """A request body over the limit. An HTTPException, because FastAPI passes only those through unchanged
    when reading the body fails."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def describe(exc: Exception) -> ApiError:
    """The one mapping from anything a route raises to what the client sees."""
    if isinstance(exc, AvadiosError):
        status = http_status_of(exc)
        code = exc.reason or _CODES.get(status) or exc.code.name.lower()
        return ApiError(status, exc.message, code, retry_after_s=exc.retry_after_s)
    if isinstance(exc, RequestValidationError):
        message, param = _validation_message(exc)
        return ApiError(400, message, _CODES[400], param=param)
    if isinstance(exc, HTTPException):  # unknown routes, wrong methods, bodies over the limit
        return ApiError(exc.status_code, str(exc.detail), _CODES.get(exc.status_code))
    return ApiError(500, f"internal error: {type(exc).__name__}", _CODES[500])


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """What is wrong with a request, and the field at fault (None when the body as a whole is)."""
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    if loc == ("body",) and isinstance(first.get("input"), bytes | str):
        return "request body must be a JSON object sent with 'Content-Type: application/json'", None
    where = ".".join(str(p) for p in (loc[1:] if loc[:1] in (("body",), ("query",), ("path",)) else loc))
    if first.get("type") == "extra_forbidden":
        return (
            f"'{where}' is not supported by this node, so the request is refused rather than answered without it "
            "(docs/openai-compatibility.md lists every field)",
            where,
        )
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"invalid '{where or 'body'}': {message}", where or None


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if error.retry_after_s is not None:  # HTTP wants whole seconds
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return JSONResponse(error.body(), status_code=error.status, headers=headers or None)


def sse_error(error: ApiError) -> bytes:
    """An error after a stream's headers are gone travels in the stream, as OpenAI does."""
    return f"data: {json.dumps(error.body())}\n\n".encode()


def install_error_handler(app: FastAPI, metrics: Metrics) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        error = describe(exc)
        route = request.scope.get("route")
        path = getattr(route, "path", None)
        if path is not None:  # a known route (an unknown path has no route label worth keeping)
            metrics.errors.labels(path, error.code or "").inc()
            metrics.requests.labels(path, str(error.status), "").inc()
        headers = exc.headers if isinstance(exc, HTTPException) else None
        return error_response(error, dict(headers) if headers else None)

    # One handler for every kind. Unexpected exceptions reach it through Starlette's ServerErrorMiddleware,
    # which logs their traceback after the client has its 500.
    for kind in (AvadiosError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, handle)


class BodyLimit:
    """Refuses request bodies over `limit` bytes (or a route's own limit in `per_path`) with 413, by their
    Content-Length or, without one, as they arrive, before anyone parses them."""

    def __init__(self, app: ASGIApp, limit: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        # path -> its own limit for a POST there (file and audio uploads stream to disk, not to memory)
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0
        limit = self.per_path.get(scope.get("path", ""), self.limit) if scope.get("method") == "POST" else self.limit

        async def limited() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited, send)
