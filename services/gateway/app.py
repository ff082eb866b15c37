"""The local HTTP API: OpenAI-compatible routes, health and metrics, answering from tier 0 or tier 1."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from avadios import __version__
from avadios.config import NodeConfig
from avadios.errors import AvadiosError, NotFound, Unavailable, http_status
from avadios.transport import NatsChannel, Stub
from avadios.v1 import cache_pb2, inference_pb2
from services.gateway.cache_key import cache_key
from services.gateway.dashboard import add_dashboard
from services.gateway.health import HealthBoard
from services.gateway.metrics import Metrics
from services.gateway.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_completion,
    error_body,
    text_completion,
    usage_dict,
)
from services.gateway.wallet_api import add_wallet_routes

log = logging.getLogger("avadios.gateway")
T = TypeVar("T", bound=BaseModel)
MODELS_TTL_S = 2.0
CACHE_TIMEOUT_S = 1.0
TIER_HEADER = "X-Avadios-Tier"
_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "busy"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.type, default_code = _ERROR_TYPES.get(status, ("server_error", "internal_error"))
        self.code = code or default_code


@dataclass(slots=True)
class Answer:
    """A primed answer: which tier produced it and its chunks (the last one has finish_reason and usage)."""

    tier: str
    chunks: AsyncIterator[inference_pb2.GenerateChunk]


class Gateway:
    def __init__(self, config: NodeConfig, channel: NatsChannel, node_id: str, api_key: str | None) -> None:
        self.config = config
        self.node_id = node_id
        self.api_key = api_key
        self.channel = channel
        self.inference = Stub(
            channel, "inference", inference_pb2.DESCRIPTOR.services_by_name["Inference"], default_timeout=10.0
        )
        self.cache = Stub(
            channel, "cache", cache_pb2.DESCRIPTOR.services_by_name["Cache"], default_timeout=CACHE_TIMEOUT_S
        )
        self.board = HealthBoard()
        self.metrics = Metrics()
        self._models: inference_pb2.ListModelsReply | None = None
        self._models_at = 0.0
        self._background: set[asyncio.Task[None]] = set()

    # ---- tiers ---------------------------------------------------------------------------------------

    async def list_models(self) -> inference_pb2.ListModelsReply:
        if self._models is None or time.monotonic() - self._models_at > MODELS_TTL_S:
            self._models = await self.inference.ListModels(inference_pb2.ListModelsRequest())
            self._models_at = time.monotonic()
        return self._models

    async def resolve_model(self, name: str) -> str:
        models = await self.list_models()
        if not name or name == "default":
            return models.default_model
        if name not in {m.name for m in models.models}:
            raise NotFound(
                f"The model '{name}' does not exist on this node. Available: {', '.join(m.name for m in models.models)}"
            )
        return name

    async def answer(self, request: inference_pb2.GenerateRequest, key: bytes | None, lookup: bool = True) -> Answer:
        """Tier 0 when the cache has this exact reproducible request, else tier 1 (the local model).
        The first chunk is fetched here, so errors surface before any HTTP byte is sent."""
        if key is not None and lookup:
            cached = await self._cache_lookup(key)
            if cached is not None:
                return Answer("0", _replay(cached))
        stream = self.inference.Generate(request, timeout=self.config.request_timeout_s, request_id=request.request_id)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            raise Unavailable("the inference service ended the stream without an answer") from None
        return Answer("1", self._record(first, stream, request, key))

    async def _cache_lookup(self, key: bytes) -> cache_pb2.CachedAnswer | None:
        try:
            reply = await self.cache.Lookup(cache_pb2.CacheLookupRequest(key=key))
        except AvadiosError as exc:  # the cache is an optimisation: without it the model still answers
            log.warning("tier 0 cache lookup failed: %s", exc)
            return None
        return reply.answer if reply.found else None

    async def _store(self, key: bytes, answer: cache_pb2.CachedAnswer) -> None:
        try:
            await self.cache.Store(cache_pb2.CacheStoreRequest(key=key, answer=answer))
        except AvadiosError as exc:
            log.warning("tier 0 cache store failed: %s", exc)

    async def _record(
        self,
        first: inference_pb2.GenerateChunk,
        rest: AsyncIterator[inference_pb2.GenerateChunk],
        request: inference_pb2.GenerateRequest,
        key: bytes | None,
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        """Pass chunks through; once the answer is complete, store it in tier 0 without making the caller wait.
        The Store goes out on this gateway's NATS connection before the answer's last byte, and NATS keeps one
        connection's messages in order, so the next identical request's Lookup reaches the cache after it."""
        texts: list[str] = []
        try:
            chunk: inference_pb2.GenerateChunk | None = first
            while chunk is not None:
                texts.append(chunk.text)
                if chunk.finish_reason and key is not None:
                    answer = cache_pb2.CachedAnswer(
                        text="".join(texts),
                        finish_reason=chunk.finish_reason,
                        usage=chunk.usage,
                        model=chunk.model,
                        created_unix=int(time.time()),
                    )
                    task = asyncio.create_task(self._store(key, answer))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                yield chunk
                chunk = await anext(rest, None)
        finally:
            with contextlib.suppress(Exception):
                await rest.aclose()  # type: ignore[attr-defined]

    # ---- HTTP ----------------------------------------------------------------------------------------

    async def read_body(self, request: Request, schema: type[T]) -> T:
        declared = request.headers.get("content-length")
        limit = self.config.max_body_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise ApiError(413, f"request body is over the limit of {limit} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(400, f"invalid '{where}': {first['msg']}", "invalid_request") from None

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>' "
                "with the key from the node's api.key file",
            )


def _replay(cached: cache_pb2.CachedAnswer) -> AsyncIterator[inference_pb2.GenerateChunk]:
    async def chunks() -> AsyncIterator[inference_pb2.GenerateChunk]:
        yield inference_pb2.GenerateChunk(text=cached.text)
        yield inference_pb2.GenerateChunk(
            finish_reason=cached.finish_reason, usage=cached.usage, model=cached.model, instance="cache"
        )

    return chunks()


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def build_app(gw: Gateway) -> FastAPI:
    app = FastAPI(title="AVADIOS node", version=__version__, docs_url="/docs", redoc_url=None)
    metrics = gw.metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and wrong methods answer in OpenAI's error shape too.
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None), status_code=exc.status_code)

    def error_response(exc: ApiError, route: str) -> JSONResponse:
        metrics.errors.labels(route, exc.code).inc()
        metrics.requests.labels(route, str(exc.status), "").inc()
        return JSONResponse(error_body(exc.message, exc.type, exc.code), status_code=exc.status)

    def api_error(exc: Exception) -> ApiError:
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, AvadiosError):
            status = http_status(exc.code)
            if exc.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "max payload" in exc.message:
                status = 413
            return ApiError(status, exc.message)
        log.exception("unexpected error")
        return ApiError(500, f"internal error: {type(exc).__name__}")

    Handler = Callable[[Request], Awaitable[Response]]

    def guarded(route: str, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                gw.check_auth(request)
                return await handler(request)
            except Exception as exc:
                return error_response(api_error(exc), route)

        return run

    async def generate(
        request: Request, schema: type[ChatCompletionRequest] | type[CompletionRequest], route: str
    ) -> Response:
        started = time.perf_counter()
        body = await gw.read_body(request, schema)
        model = await gw.resolve_model(body.model)
        prefix = "chatcmpl-" if schema is ChatCompletionRequest else "cmpl-"
        request_id = prefix + uuid.uuid4().hex
        gen_request = body.generate_request(request_id, model)
        # HTTP's own cache directives: no-cache = compute afresh (and refresh tier 0), no-store = leave tier 0 alone.
        directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
        storable = body.reproducible and "no-store" not in directives
        key = cache_key(gen_request, model, gw.config.default_max_tokens) if storable else None
        answer = await gw.answer(gen_request, key, lookup="no-cache" not in directives)
        headers = {TIER_HEADER: answer.tier, "X-Request-Id": request_id}
        is_chat = schema is ChatCompletionRequest

        def finish(last: inference_pb2.GenerateChunk) -> dict[str, int]:
            usage = usage_dict(last.usage.prompt_tokens, last.usage.completion_tokens)
            metrics.tokens.labels(answer.tier, "prompt").inc(last.usage.prompt_tokens)
            metrics.tokens.labels(answer.tier, "completion").inc(last.usage.completion_tokens)
            metrics.latency.labels(route, answer.tier).observe(time.perf_counter() - started)
            metrics.requests.labels(route, "200", answer.tier).inc()
            return usage

        if not body.stream:
            texts, last = [], inference_pb2.GenerateChunk()
            async for chunk in answer.chunks:
                texts.append(chunk.text)
                last = chunk
            text = "".join(texts)
            usage = finish(last)
            if is_chat:
                payload = chat_completion(request_id, model, text, last.finish_reason, usage)
            else:
                payload = text_completion(request_id, model, text, last.finish_reason, usage)
            return JSONResponse(payload, headers=headers)

        async def events() -> AsyncIterator[bytes]:
            created, first = int(time.time()), True
            try:
                if is_chat:
                    yield _sse(chat_chunk(request_id, model, created, {"role": "assistant", "content": ""}, None))
                async for chunk in answer.chunks:
                    if chunk.text:
                        if first:
                            metrics.first_token.labels(answer.tier).observe(time.perf_counter() - started)
                            first = False
                        yield _sse(
                            chat_chunk(request_id, model, created, {"content": chunk.text}, None)
                            if is_chat
                            else text_completion(request_id, model, chunk.text, None, None, created)
                        )
                    if chunk.finish_reason:
                        usage = finish(chunk)
                        if is_chat:
                            last_event = chat_chunk(request_id, model, created, {}, chunk.finish_reason)
                        else:
                            last_event = text_completion(request_id, model, "", chunk.finish_reason, None, created)
                        yield _sse(last_event)
                        if body.include_usage:
                            tail = (
                                chat_chunk(request_id, model, created, {}, None)
                                if is_chat
                                else text_completion(request_id, model, "", None, None, created)
                            )
                            tail["choices"], tail["usage"] = [], usage
                            yield _sse(tail)
                yield _sse("[DONE]")
            except Exception as exc:  # headers are gone: report the failure in the stream, as OpenAI does
                err = api_error(exc)
                metrics.errors.labels(route, err.code).inc()
                yield _sse(error_body(err.message, err.type, err.code))

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"}
        )

    async def chat_completions(request: Request) -> Response:
        return await generate(request, ChatCompletionRequest, "/v1/chat/completions")

    async def completions(request: Request) -> Response:
        return await generate(request, CompletionRequest, "/v1/completions")

    async def models(request: Request) -> Response:
        reply = await gw.list_models()
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "local",
                "avadios": {
                    "size_bytes": m.size_bytes,
                    "context_length": m.context_length,
                    "architecture": m.architecture,
                    "quantization": m.quantization,
                    "chat_format": m.chat_format,
                    "default": m.is_default,
                },
            }
            for m in reply.models
        ]
        metrics.requests.labels("/v1/models", "200", "").inc()
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        state, services = gw.board.summary()
        body = {"status": state, "node_id": gw.node_id, "version": __version__, "services": services}
        return JSONResponse(body, status_code=200 if state == "ok" else 503)

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_api_route("/v1/chat/completions", guarded("/v1/chat/completions", chat_completions), methods=["POST"])
    app.add_api_route("/v1/completions", guarded("/v1/completions", completions), methods=["POST"])
    app.add_api_route("/v1/models", guarded("/v1/models", models), methods=["GET"])
    # Probes (compose, Kubernetes) must reach these without the key; they reveal no user data.
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics_route, methods=["GET"])
    add_wallet_routes(app, gw)
    add_dashboard(app, gw)
    return app
