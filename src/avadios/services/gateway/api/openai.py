"""The OpenAI-compatible routes: POST /v1/chat/completions and /v1/completions (JSON or SSE), GET /v1/models
(text models, then the voice service's; the audio routes themselves live in api/audio.py).

Both generation routes turn their body into the pipeline's one request shape and share one handler; what
differs between a chat and a completion is only how the answer is written out (`ChatShape`, `TextShape`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from avadios.errors import AvadiosError
from avadios.services.gateway.api.errors import describe, sse_error
from avadios.services.gateway.api.openai_schema import (
    ChatCompletionOut,
    ChatCompletionRequest,
    CompletionRequest,
    ModelDetailsOut,
    ModelListOut,
    ModelOut,
    TextCompletionOut,
    VoiceModelDetailsOut,
    chat_chunk,
    chat_completion,
    chat_logprobs,
    text_completion,
    text_logprobs,
    usage_dict,
)
from avadios.services.gateway.api.tools import read_answer
from avadios.services.gateway.metrics import Metrics
from avadios.services.gateway.pipeline import CachePolicy, Completed, Pipeline
from avadios.v1 import inference_pb2, jobs_pb2, voice_pb2
from avadios.v1.voice_nats import VoiceClient

log = logging.getLogger("avadios.gateway")
TIER_HEADER = "X-Avadios-Tier"
CHAT_ROUTE = "/v1/chat/completions"
COMPLETIONS_ROUTE = "/v1/completions"
MODELS_ROUTE = "/v1/models"
VOICE_MODELS_TIMEOUT_S = 2.0
_STREAMS = {"content": {"text/event-stream": {}}, "description": "JSON, or server-sent events with `stream`"}


class Shape(Protocol):
    """How one kind of answer is written out, whole or as stream events."""

    id_prefix: str

    def whole(self, request_id: str, model: str, done: Completed, usage: dict[str, int]) -> Any: ...

    def opening(self, request_id: str, model: str, created: int) -> list[dict[str, Any]]: ...

    def events(self, request_id: str, model: str, created: int, chunk: inference_pb2.GenerateChunk) -> list[Any]: ...

    def closing(self, request_id: str, model: str, created: int, finish_reason: str) -> list[Any]: ...


class ChatShape:
    """Chat answers. With tools offered, the constrained answer is read back as a tool call (or content) once it is
    complete, so a streamed one arrives whole in its last events."""

    id_prefix = "chatcmpl-"

    def __init__(self, logprobs: bool = False, tools: bool = False) -> None:
        self.logprobs = logprobs
        self.tools = tools
        self._held: list[str] = []

    def _logprobs(self, tokens: Sequence[inference_pb2.TokenLogprob]) -> dict[str, Any] | None:
        return chat_logprobs(tokens) if self.logprobs else None

    def whole(self, request_id: str, model: str, done: Completed, usage: dict[str, int]) -> Any:
        text: str | None = done.text
        finish, calls = done.last.finish_reason, None
        if self.tools:
            answer = read_answer(done.text)
            text, calls = answer.content, answer.tool_calls()
            finish = "tool_calls" if calls else finish
        return chat_completion(request_id, model, text, finish, usage, self._logprobs(done.logprobs), calls)

    def opening(self, request_id: str, model: str, created: int) -> list[dict[str, Any]]:
        return [chat_chunk(request_id, model, created, {"role": "assistant", "content": ""}, None)]

    def events(self, request_id: str, model: str, created: int, chunk: inference_pb2.GenerateChunk) -> list[Any]:
        if self.tools:
            self._held.append(chunk.text)
            return []
        if not chunk.text and not (self.logprobs and chunk.token_logprobs):
            return []
        logprobs = self._logprobs(chunk.token_logprobs)
        return [chat_chunk(request_id, model, created, {"content": chunk.text}, None, logprobs)]

    def closing(self, request_id: str, model: str, created: int, finish_reason: str) -> list[Any]:
        if not self.tools:
            return [chat_chunk(request_id, model, created, {}, finish_reason)]
        answer = read_answer("".join(self._held))
        calls = answer.tool_calls()
        if calls:
            delta: dict[str, Any] = {"tool_calls": [{"index": 0, **call} for call in calls]}
            finish_reason = "tool_calls"
        else:
            delta = {"content": answer.content}
        return [
            chat_chunk(request_id, model, created, delta, None),
            chat_chunk(request_id, model, created, {}, finish_reason),
        ]


class TextShape:
    id_prefix = "cmpl-"

    def __init__(self, logprobs: bool = False) -> None:
        self.logprobs = logprobs
        self._offset = 0  # text_offset of the next token in a streamed answer

    def whole(self, request_id: str, model: str, done: Completed, usage: dict[str, int]) -> Any:
        logprobs = text_logprobs(done.logprobs) if self.logprobs else None
        return text_completion(request_id, model, done.text, done.last.finish_reason, usage, logprobs=logprobs)

    def opening(self, request_id: str, model: str, created: int) -> list[dict[str, Any]]:
        return []

    def events(self, request_id: str, model: str, created: int, chunk: inference_pb2.GenerateChunk) -> list[Any]:
        if not chunk.text and not (self.logprobs and chunk.token_logprobs):
            return []
        logprobs = None
        if self.logprobs:
            logprobs = text_logprobs(chunk.token_logprobs, self._offset)
            self._offset += sum(len(t) for t in logprobs["tokens"])
        return [text_completion(request_id, model, chunk.text, None, None, created, logprobs)]

    def closing(self, request_id: str, model: str, created: int, finish_reason: str) -> list[Any]:
        return [text_completion(request_id, model, "", finish_reason, None, created)]


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def cache_policy(request: Request) -> CachePolicy:
    """HTTP's own cache directives: no-cache = compute afresh (and refresh tier 0), no-store = leave tier 0 alone."""
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    no_store = "no-store" in directives
    return CachePolicy(lookup="no-cache" not in directives and not no_store, store=not no_store)


def network_headers(job: jobs_pb2.JobRecord | None) -> dict[str, str]:
    """What a network answer cost and how it was verified (none for the local tiers)."""
    if job is None:
        return {}
    return {"X-Avadios-Job": job.job_id, "X-Avadios-Cost": str(job.cost), "X-Avadios-Verdict": job.verdict}


async def voice_models(voice: VoiceClient) -> list[ModelOut]:
    """The voice service's Whisper and speech models; none while it is down or loading (text models still list)."""
    try:
        reply = await voice.ListModels(voice_pb2.ListVoiceModelsRequest(), timeout=VOICE_MODELS_TIMEOUT_S)
    except AvadiosError as exc:
        log.info("voice models not listed: %s", exc)
        return []
    return [
        ModelOut(
            id=name,
            avadios=VoiceModelDetailsOut(
                kind="speech" if m.kind == "speech" else "transcription",
                default=m.is_default,
                english_only=m.english_only,
                means=m.name if name != m.name else "",
            ),
        )
        for m in reply.models
        for name in (m.name, *m.aliases)
    ]


def openai_router(pipeline: Pipeline, metrics: Metrics, voice: VoiceClient) -> APIRouter:
    router = APIRouter(tags=["OpenAI"])

    async def generate(
        request: Request, body: ChatCompletionRequest | CompletionRequest, shape: Shape, route: str
    ) -> Response:
        # Counted from here until the answer's last byte (a stream hands the count over to its own end).
        in_flight = metrics.in_flight.labels(route)
        in_flight.inc()
        streaming = False
        try:
            response = await answer_request(request, body, shape, route)
            streaming = isinstance(response, StreamingResponse)
            return response
        finally:
            if not streaming:
                in_flight.dec()

    async def answer_request(
        request: Request, body: ChatCompletionRequest | CompletionRequest, shape: Shape, route: str
    ) -> Response:
        in_flight = metrics.in_flight.labels(route)
        started = time.perf_counter()
        request_id = shape.id_prefix + uuid.uuid4().hex
        ask = body.avadios.ask(request.headers.get(TIER_HEADER))
        answer = await pipeline.answer(body.generate_request(request_id, body.model), cache_policy(request), ask)
        model, tier = answer.model, answer.tier.value
        headers = {TIER_HEADER: tier, "X-Request-Id": request_id, **network_headers(answer.job)}

        def finish(last: inference_pb2.GenerateChunk) -> dict[str, int]:
            usage = usage_dict(last.usage.prompt_tokens, last.usage.completion_tokens)
            metrics.tokens.labels(tier, "prompt").inc(last.usage.prompt_tokens)
            metrics.tokens.labels(tier, "completion").inc(last.usage.completion_tokens)
            metrics.latency.labels(route, tier).observe(time.perf_counter() - started)
            metrics.requests.labels(route, "200", tier).inc()
            return usage

        if not body.stream:
            done = await answer.collect()
            usage = finish(done.last)
            return JSONResponse(shape.whole(request_id, model, done, usage), headers=headers)

        async def events() -> AsyncIterator[bytes]:
            created, first = int(time.time()), True
            try:
                for event in shape.opening(request_id, model, created):
                    yield _sse(event)
                async for chunk in answer.chunks:
                    if chunk.text and first:
                        metrics.first_token.labels(tier).observe(time.perf_counter() - started)
                        first = False
                    for event in shape.events(request_id, model, created, chunk):
                        yield _sse(event)
                    if chunk.finish_reason:
                        usage = finish(chunk)
                        closing = shape.closing(request_id, model, created, chunk.finish_reason)
                        for event in closing:
                            yield _sse(event)
                        if body.include_usage:
                            yield _sse({**closing[-1], "choices": [], "usage": usage})
                yield _sse("[DONE]")
            except Exception as exc:  # the headers are gone: the failure travels in the stream, as OpenAI does
                if not isinstance(exc, AvadiosError):
                    log.exception("a streamed answer failed")
                error = describe(exc)
                metrics.errors.labels(route, error.code or "").inc()
                yield sse_error(error)
            finally:
                in_flight.dec()
                # A client gone mid-stream: close the answer now (its inference stream sends the cancel that frees
                # the slot at once), not whenever the garbage collector finalizes the generator.
                with contextlib.suppress(Exception):
                    await answer.chunks.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"}
        )

    @router.post(
        CHAT_ROUTE,
        response_model=None,
        responses={200: {"model": ChatCompletionOut, **_STREAMS}},
        summary="Chat completion (OpenAI-compatible)",
    )
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        shape = ChatShape(logprobs=body.logprobs, tools=bool(body.offered_tools()))
        return await generate(request, body, shape, CHAT_ROUTE)

    @router.post(
        COMPLETIONS_ROUTE,
        response_model=None,
        responses={200: {"model": TextCompletionOut, **_STREAMS}},
        summary="Text completion of a raw prompt (OpenAI-compatible)",
    )
    async def completions(request: Request, body: CompletionRequest) -> Response:
        return await generate(request, body, TextShape(logprobs=body.logprobs is not None), COMPLETIONS_ROUTE)

    @router.get(MODELS_ROUTE, summary="The models this node serves: text, then transcription and speech")
    async def models() -> ModelListOut:
        reply = await pipeline.list_models()
        data = [
            ModelOut(
                id=m.name,
                avadios=ModelDetailsOut(
                    size_bytes=m.size_bytes,
                    context_length=m.context_length,
                    architecture=m.architecture,
                    quantization=m.quantization,
                    chat_format=m.chat_format,
                    default=m.is_default,
                ),
            )
            for m in reply.models
        ]
        data += await voice_models(voice)
        metrics.requests.labels(MODELS_ROUTE, "200", "").inc()
        return ModelListOut(data=data)

    return router
