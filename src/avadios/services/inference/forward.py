"""Tier 1 from a server the user already runs (Ollama, llama-server, vLLM, llama-cpp-python's server): the Inference
service forwards every request to its OpenAI-compatible API and lists its models.

`inference_backend = "openai"` with `inference_backend_url` (e.g. "http://127.0.0.1:11434/v1") selects it. The NATS
service, its subjects, its queue limit and its health are the same as with a local GGUF, so the gateway's tiers,
cache, metrics and network routing do not know the difference. What a remote server cannot give is refused by name:
per-token ids for Proof of Inference (a provider needs a local GGUF), teacher-forced scoring, tokenize/detokenize.
A backend that does not answer makes this service NOT_SERVING (so /health is 503) and every request UNAVAILABLE
(HTTP 503) with the URL and what to do; it is probed every PROBE_INTERVAL_S and serves again once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from avadios.errors import AvadiosError, Busy, InvalidArgument, NotFound, Unavailable, Unimplemented
from avadios.runtime import ServiceContext
from avadios.transport import ServerContext
from avadios.v1 import common_pb2, inference_pb2, inference_pb2_grpc

log = logging.getLogger("avadios.inference")
Status = common_pb2.HealthReply.Status
PROBE_INTERVAL_S = 2.0
CONNECT_TIMEOUT_S = 5.0
BACKEND_FORMAT = "backend"  # ModelInfo.chat_format: the backend renders chats itself


class OpenAIBackend:
    """An OpenAI-compatible HTTP server, spoken to as its own clients would."""

    def __init__(self, url: str, request_timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url, timeout=httpx.Timeout(request_timeout_s, connect=CONNECT_TIMEOUT_S)
        )

    def down(self, exc: Exception) -> Unavailable:
        return Unavailable(
            f"the inference backend at {self.url} is not answering ({type(exc).__name__}: {exc or 'no reply'}); "
            "start that server again, or set inference_backend = \"llama.cpp\" to use a local GGUF"
        )

    async def models(self) -> list[str]:
        try:
            reply = await self.http.get("/models", timeout=CONNECT_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise self.down(exc) from None
        await _raise_for(reply, self.url)
        return [str(m["id"]) for m in reply.json().get("data", [])]

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The server-sent events of one streamed request, as JSON objects."""
        try:
            async with self.http.stream("POST", path, json=body) as reply:
                if reply.status_code >= 400:
                    await reply.aread()
                    await _raise_for(reply, self.url)
                async for line in reply.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if "error" in event:
                        raise Unavailable(f"the inference backend at {self.url} failed: {_message(event)}")
                    yield event
        except httpx.HTTPError as exc:
            raise self.down(exc) from None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = await self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise self.down(exc) from None
        await _raise_for(reply, self.url)
        result: dict[str, Any] = reply.json()
        return result


def _message(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(body)


async def _raise_for(reply: httpx.Response, url: str) -> None:
    if reply.status_code < 400:
        return
    try:
        text = _message(reply.json())
    except ValueError:
        text = reply.text[:300]
    if reply.status_code == 404:
        raise NotFound(f"the inference backend at {url}: {text}")
    if reply.status_code in (400, 422):
        raise InvalidArgument(f"the inference backend at {url} refused the request: {text}")
    if reply.status_code == 429:
        raise Busy(f"the inference backend at {url} is busy: {text}")
    raise Unavailable(f"the inference backend at {url} failed with HTTP {reply.status_code}: {text}")


def openai_body(request: inference_pb2.GenerateRequest, default_max_tokens: int) -> tuple[str, dict[str, Any]]:
    """The backend route and body for one request: the same fields, in OpenAI's own words."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": request.model,
        "stream": True,
        "max_tokens": s.max_tokens or default_max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p or 1.0,
    }
    if s.HasField("seed"):
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        body["frequency_penalty"] = s.frequency_penalty
    if s.logit_bias:
        body["logit_bias"] = {str(t): b for t, b in s.logit_bias.items()}
    if s.json_schema:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": json.loads(s.json_schema)},
        }
    chat = request.WhichOneof("input") == "chat"
    if s.logprobs or s.top_logprobs:
        if chat:
            body["logprobs"] = True
            body["top_logprobs"] = s.top_logprobs
        else:
            body["logprobs"] = s.top_logprobs
    if chat:
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.chat.messages]
        return "/chat/completions", body
    body["prompt"] = request.prompt
    return "/completions", body


def _logprobs(choice: dict[str, Any]) -> list[inference_pb2.TokenLogprob]:
    """A backend's chat or completion logprobs, in our shape (the token's bytes, where the backend gives them)."""
    found = choice.get("logprobs") or {}
    tokens: list[inference_pb2.TokenLogprob] = []
    if isinstance(found.get("content"), list):
        for entry in found["content"]:
            top = [
                inference_pb2.TokenLogprob(piece=_piece(a), logprob=a.get("logprob", 0.0))
                for a in entry.get("top_logprobs") or []
            ]
            tokens.append(inference_pb2.TokenLogprob(piece=_piece(entry), logprob=entry.get("logprob", 0.0), top=top))
    elif isinstance(found.get("tokens"), list):
        tops = found.get("top_logprobs") or [None] * len(found["tokens"])
        for token, logprob, alternatives in zip(found["tokens"], found.get("token_logprobs") or [], tops, strict=False):
            top = [
                inference_pb2.TokenLogprob(piece=t.encode(), logprob=lp) for t, lp in (alternatives or {}).items()
            ]
            tokens.append(inference_pb2.TokenLogprob(piece=str(token).encode(), logprob=logprob or 0.0, top=top))
    return tokens


def _piece(entry: dict[str, Any]) -> bytes:
    raw = entry.get("bytes")
    return bytes(raw) if isinstance(raw, list) else str(entry.get("token", "")).encode()


class ForwardingRoom(inference_pb2_grpc.InferenceServicer):
    descriptor = inference_pb2.DESCRIPTOR.services_by_name["Inference"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.backend = OpenAIBackend(ctx.config.inference_backend_url, ctx.config.request_timeout_s)
        self._models: list[str] = []
        self._down = f"waiting for the inference backend at {self.backend.url}"
        self._admitted = 0
        self._served = 0
        self._probe: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, ctx: ServiceContext) -> ForwardingRoom:
        return cls(ctx)

    @property
    def servicer(self) -> object:
        return self

    async def start(self) -> None:
        self._probe = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.backend.http.aclose()

    async def _watch(self) -> None:
        while True:
            await self._refresh()
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _refresh(self) -> list[str]:
        try:
            models = await self.backend.models()
        except AvadiosError as exc:
            if not self._down:
                log.warning("inference backend went away", extra={"url": self.backend.url, "error": exc.message})
            self._down = exc.message
            raise
        if self._down:
            log.info("inference backend answers", extra={"url": self.backend.url, "models": models})
        self._models, self._down = models, ""
        return models

    def health(self) -> common_pb2.HealthReply:
        status = Status.NOT_SERVING if self._down else Status.SERVING
        return self.ctx.base_health(
            status,
            self._down,
            requests_served=self._served,
            in_flight=self._admitted,
            models=self._models,
            loaded_model=self._models[0] if self._models else "",
        )

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: ServerContext
    ) -> inference_pb2.ListModelsReply:
        models = await self._refresh()
        if not models:
            raise Unavailable(f"the inference backend at {self.backend.url} lists no models")
        infos = [
            inference_pb2.ModelInfo(name=name, chat_format=BACKEND_FORMAT, is_default=i == 0)
            for i, name in enumerate(models)
        ]
        return inference_pb2.ListModelsReply(models=infos, default_model=models[0])

    @contextlib.asynccontextmanager
    async def _admission(self) -> AsyncIterator[None]:
        if self._admitted >= self.config.inference_queue:
            raise Busy(f"inference replica {self.ctx.replica} is busy ({self._admitted} requests in flight); retry")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: ServerContext
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        if request.want_tokens:
            raise Unimplemented(
                "this node's inference forwards to an OpenAI-compatible server, which gives no token ids to verify: "
                "serving network requests needs a local GGUF (inference_backend = \"llama.cpp\")"
            )
        if request.WhichOneof("input") != "chat" and not request.prompt:
            raise InvalidArgument("prompt is empty")
        path, body = openai_body(request, self.config.default_max_tokens)
        body["stream_options"] = {"include_usage": True}
        async with self._admission():
            finish, usage, pieces = "stop", inference_pb2.Usage(), 0
            started = time.monotonic()
            async for event in self.backend.stream(path, body):
                if event.get("usage"):
                    usage = inference_pb2.Usage(
                        prompt_tokens=int(event["usage"].get("prompt_tokens") or 0),
                        completion_tokens=int(event["usage"].get("completion_tokens") or 0),
                    )
                for choice in event.get("choices") or []:
                    text = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
                    tokens = _logprobs(choice)
                    if text or tokens:
                        pieces += 1
                        yield inference_pb2.GenerateChunk(text=text or "", token_logprobs=tokens)
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
            if not usage.completion_tokens:  # a server that streams no usage (llama-cpp-python's): one token an event
                usage.completion_tokens = pieces
            self._served += 1
            log.info("forwarded", extra={"path": path, "model": request.model, "s": time.monotonic() - started})
            yield inference_pb2.GenerateChunk(
                finish_reason=finish, usage=usage, model=request.model, instance=self.ctx.instance
            )

    async def Embed(self, request: inference_pb2.EmbedRequest, context: ServerContext) -> inference_pb2.EmbedReply:
        async with self._admission():
            reply = await self.backend.post("/embeddings", {"model": request.model, "input": list(request.inputs)})
        data = sorted(reply.get("data", []), key=lambda d: d.get("index", 0))
        usage = reply.get("usage") or {}
        return inference_pb2.EmbedReply(
            model=str(reply.get("model") or request.model),
            embeddings=[inference_pb2.Embedding(values=d["embedding"]) for d in data],
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
        )

    async def Score(self, request: inference_pb2.ScoreRequest, context: ServerContext) -> inference_pb2.ScoreReply:
        raise Unimplemented("scoring needs the model's logits: a local GGUF (inference_backend = \"llama.cpp\")")

    async def Tokenize(
        self, request: inference_pb2.TokenizeRequest, context: ServerContext
    ) -> inference_pb2.TokenizeReply:
        raise Unimplemented("tokenize needs the model's vocabulary: a local GGUF (inference_backend = \"llama.cpp\")")

    async def Detokenize(
        self, request: inference_pb2.DetokenizeRequest, context: ServerContext
    ) -> inference_pb2.DetokenizeReply:
        raise Unimplemented("detokenize needs the model's vocabulary: a local GGUF (inference_backend = \"llama.cpp\")")
