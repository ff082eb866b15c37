"""The tier pipeline: one generation request answered by tier 0 (the cache), tier 1 (the local model) or the
network (paid, verified answers from other nodes, through the verifier service).

It knows nothing of HTTP. The HTTP API, voice and the GUI hand it the one request shape every caller uses, an
`inference_pb2.GenerateRequest` (a chat or a raw prompt, with its sampling parameters), and get an `Answer`: the
tier that produced it, the resolved model name and the chunks as they come.

Which tier: tier 0 when it holds this exact reproducible request; otherwise the network when the caller asks for it
(`NetworkAsk.tier == "network"`), when the node's `network_tier` is "always", or, with "auto" (the default), when
this node does not hold the model; otherwise tier 1. With `network_tier = "never"` nothing leaves the node.

Tier 0 only ever answers reproducible requests (greedy decoding, or sampling with a fixed seed): their key is the
BLAKE3 of model, input and sampling parameters (`cache_key.py`). A tier 1 answer is stored there once complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum

import grpc

from avadios.errors import PAYMENT_REASONS, AvadiosError, InvalidArgument, NotFound, PaymentRequired, Unavailable
from avadios.sampling_features import network_refusal
from avadios.services.gateway.cache_key import cache_key
from avadios.transport import NatsChannel
from avadios.v1 import cache_pb2, inference_pb2, jobs_pb2
from avadios.v1.cache_nats import CacheClient
from avadios.v1.inference_nats import InferenceClient
from avadios.v1.jobs_nats import VerifierClient

log = logging.getLogger("avadios.gateway")
MODELS_TTL_S = 2.0
CACHE_TIMEOUT_S = 1.0
INFERENCE_TIMEOUT_S = 10.0  # unary calls (ListModels); a generation runs under the request's own deadline


class Tier(StrEnum):
    """Which tier produced an answer; the value is what `X-Avadios-Tier` and the metrics say."""

    CACHE = "0"
    LOCAL = "1"
    NETWORK = "network"


class ModelNotFound(NotFound):
    reason = "model_not_found"


class NetworkVerdictFailed(AvadiosError):
    """The providers' answers did not reach the agreement a network request needs: nothing wrong is returned."""

    code = grpc.StatusCode.ABORTED
    reason = "verification_failed"


@dataclass(frozen=True, slots=True)
class NetworkAsk:
    """What a caller asks of the network tier: "auto" (the node decides), "local" (never the network) or
    "network"; replicas and the price cap (micro-AUTOM) default to the node's settings when 0."""

    tier: str = "auto"
    replicas: int = 0
    max_price: int = 0


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What a caller allows tier 0 to do for one request (HTTP: `Cache-Control: no-cache` clears `lookup`,
    `no-store` clears both). Unreproducible requests never touch tier 0, whatever the policy."""

    lookup: bool = True  # may the answer come from tier 0
    store: bool = True  # may a fresh answer be kept in tier 0


@dataclass(frozen=True, slots=True)
class Completed:
    """A whole answer: its text and its last chunk (finish reason, usage, model)."""

    text: str
    last: inference_pb2.GenerateChunk
    logprobs: list[inference_pb2.TokenLogprob] = field(default_factory=list)  # sampling.logprobs only


@dataclass(slots=True)
class Answer:
    """A primed answer: the first chunk has arrived, so a failure before it was raised by `Pipeline.answer`.
    `chunks` yields the text in pieces; the last chunk carries finish_reason and usage."""

    tier: Tier
    model: str
    chunks: AsyncIterator[inference_pb2.GenerateChunk]
    job: jobs_pb2.JobRecord | None = None  # a network answer's job: providers, verdict, cost

    async def collect(self) -> Completed:
        texts: list[str] = []
        logprobs: list[inference_pb2.TokenLogprob] = []
        last = inference_pb2.GenerateChunk()
        async for chunk in self.chunks:
            texts.append(chunk.text)
            logprobs.extend(chunk.token_logprobs)
            last = chunk
        return Completed("".join(texts), last, logprobs)


def reproducible(sampling: inference_pb2.SamplingParams) -> bool:
    """Only these answers may come from the cache: greedy decoding, or sampling with a fixed seed."""
    return sampling.temperature == 0.0 or sampling.HasField("seed")


def cacheable(sampling: inference_pb2.SamplingParams) -> bool:
    """Tier 0 keeps text only: a request that asks for logprobs is reproducible but always computed afresh."""
    return reproducible(sampling) and not (sampling.logprobs or sampling.top_logprobs)


class Pipeline:
    def __init__(
        self,
        inference: InferenceClient,
        cache: CacheClient,
        request_timeout_s: float,
        default_max_tokens: int,
        verifier: VerifierClient | None = None,
        network_tier: str = "never",
    ) -> None:
        self.inference = inference
        self.cache = cache
        self.verifier = verifier
        self.network_tier = network_tier if verifier is not None else "never"
        self.request_timeout_s = request_timeout_s
        self.default_max_tokens = default_max_tokens
        self._models: inference_pb2.ListModelsReply | None = None
        self._models_at = 0.0
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def over(
        cls, channel: NatsChannel, request_timeout_s: float, default_max_tokens: int, network_tier: str = "never"
    ) -> Pipeline:
        """The pipeline of a node: its inference, cache and verifier services over the node's NATS."""
        inference = InferenceClient(channel, default_timeout=INFERENCE_TIMEOUT_S)
        cache = CacheClient(channel, default_timeout=CACHE_TIMEOUT_S)
        verifier = VerifierClient(channel, default_timeout=request_timeout_s)
        return cls(inference, cache, request_timeout_s, default_max_tokens, verifier, network_tier)

    async def list_models(self) -> inference_pb2.ListModelsReply:
        if self._models is None or time.monotonic() - self._models_at > MODELS_TTL_S:
            self._models = await self.inference.ListModels(inference_pb2.ListModelsRequest())
            self._models_at = time.monotonic()
        return self._models


    async def local_model(self, name: str) -> str:
        """The model this node serves under `name` ("" and "default": the default model); 404 if it holds none."""
        models = await self.list_models()
        model = name if name and name != "default" else models.default_model
        if model not in {m.name for m in models.models}:
            available = ", ".join(m.name for m in models.models)
            raise ModelNotFound(f"The model '{model}' does not exist on this node. Available: {available}")
        return model

    async def embed(self, model: str, inputs: list[str], request_id: str) -> inference_pb2.EmbedReply:
        """Embeddings are always computed here, by the model this node holds (never cached, never the network)."""
        request = inference_pb2.EmbedRequest(request_id=request_id, model=await self.local_model(model), inputs=inputs)
        return await self.inference.Embed(request, timeout=self.request_timeout_s, request_id=request_id)

    async def tokenize(self, request: inference_pb2.TokenizeRequest) -> inference_pb2.TokenizeReply:
        request.model = await self.local_model(request.model)
        return await self.inference.Tokenize(request)

    async def detokenize(self, request: inference_pb2.DetokenizeRequest) -> inference_pb2.DetokenizeReply:
        request.model = await self.local_model(request.model)
        return await self.inference.Detokenize(request)

    def _goes_to_network(self, ask: NetworkAsk, model: str, local: set[str]) -> bool:
        if ask.tier not in ("auto", "local", "network"):
            raise InvalidArgument(f"tier must be auto, local or network, not {ask.tier!r}")
        if ask.tier == "network" and self.network_tier == "never":
            raise InvalidArgument("this node's network_tier is 'never': no request leaves it")
        if ask.tier == "local" or self.network_tier == "never":
            return False
        return ask.tier == "network" or self.network_tier == "always" or model not in local

    async def answer(
        self,
        request: inference_pb2.GenerateRequest,
        cache: CachePolicy = CachePolicy(),
        network: NetworkAsk = NetworkAsk(),
    ) -> Answer:
        """Tier 0 when the cache has this exact reproducible request, else the network or tier 1 (see above).
        `request.model` may be "" or "default" (the default model); the first chunk is fetched here, so every error
        surfaces before the caller has sent anything on."""
        models = await self.list_models()
        local = {m.name for m in models.models}
        # "" and "default" mean this node's default model
        model = request.model if request.model and request.model != "default" else models.default_model
        to_network = self._goes_to_network(network, model, local)
        refusal = network_refusal(request.sampling)
        if to_network and refusal:
            if network.tier == "network" or model not in local:
                raise InvalidArgument(f"cannot send this request to the network: {refusal}")
            to_network = False  # network_tier "always": a constrained request still has its local answer
        if not to_network and model not in local:
            available = ", ".join(m.name for m in models.models)
            raise ModelNotFound(f"The model '{model}' does not exist on this node. Available: {available}")
        request = _with_model(request, model)
        key = None
        if cacheable(request.sampling) and (cache.lookup or cache.store):
            key = cache_key(request, model, self.default_max_tokens)
        if key is not None and cache.lookup and network.tier != "network":  # asked for the network: go there
            cached = await self._cache_lookup(key)
            if cached is not None:
                return Answer(Tier.CACHE, model, _replay(cached))
        if to_network:
            return await self._network(request, network, key if cache.store else None)
        stream = self.inference.Generate(request, timeout=self.request_timeout_s, request_id=request.request_id)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            raise Unavailable("the inference service ended the stream without an answer") from None
        return Answer(Tier.LOCAL, model, self._record(first, stream, key if cache.store else None))

    async def _network(
        self, request: inference_pb2.GenerateRequest, ask: NetworkAsk, key: bytes | None
    ) -> Answer:
        """A verified answer from other nodes, as one text chunk (the answer is whole once verified)."""
        assert self.verifier is not None
        job = jobs_pb2.JobRequest(request=request, replicas=ask.replicas, max_price=ask.max_price)
        try:
            reply = await self.verifier.RunJob(job, timeout=self.request_timeout_s, request_id=request.request_id)
        except AvadiosError as exc:
            if exc.reason in PAYMENT_REASONS:  # refused before any AUTOM moved: HTTP 402 with that reason
                raise PaymentRequired(exc.message, exc.reason or "") from None
            raise
        if not reply.job.accepted:
            raise NetworkVerdictFailed(f"network request {reply.job.job_id} {reply.job.verdict}; nothing was returned")
        chunks = [
            inference_pb2.GenerateChunk(text=reply.text, model=request.model),
            inference_pb2.GenerateChunk(
                finish_reason=reply.finish_reason, usage=reply.usage, model=request.model, instance=reply.provider
            ),
        ]
        first = chunks[0]
        return Answer(Tier.NETWORK, request.model, self._record(first, _iterate(chunks[1:]), key), reply.job)

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


def _with_model(request: inference_pb2.GenerateRequest, model: str) -> inference_pb2.GenerateRequest:
    if request.model == model:
        return request
    resolved = inference_pb2.GenerateRequest()
    resolved.CopyFrom(request)
    resolved.model = model
    return resolved


async def _iterate(chunks: list[inference_pb2.GenerateChunk]) -> AsyncIterator[inference_pb2.GenerateChunk]:
    for chunk in chunks:
        yield chunk


def _replay(cached: cache_pb2.CachedAnswer) -> AsyncIterator[inference_pb2.GenerateChunk]:
    async def chunks() -> AsyncIterator[inference_pb2.GenerateChunk]:
        yield inference_pb2.GenerateChunk(text=cached.text)
        yield inference_pb2.GenerateChunk(
            finish_reason=cached.finish_reason, usage=cached.usage, model=cached.model, instance="cache"
        )

    return chunks()
