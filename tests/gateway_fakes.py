"""In-process stand-ins for the inference and cache services, so the gateway's pipeline and HTTP API run
without NATS or a model: the inference answers every request with the same pieces of text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from avadios.config import NodeConfig
from avadios.errors import AvadiosError, Unavailable
from avadios.services.gateway.app import Gateway
from avadios.services.gateway.pipeline import Pipeline
from avadios.transport import NatsChannel
from avadios.v1 import cache_pb2, inference_pb2
from avadios.v1.cache_nats import CacheClient
from avadios.v1.inference_nats import InferenceClient
from avadios.v1.voice_nats import VoiceClient

MODEL = "tiny"
PIECES = ("Par", "is")


@dataclass
class FakeInference:
    pieces: tuple[str, ...] = PIECES
    fail_after: int | None = None  # raise this error after that many pieces (None: never)
    error: AvadiosError | None = None  # raised before the first chunk
    requests: list[inference_pb2.GenerateRequest] = field(default_factory=list)

    async def ListModels(self, request: Any, **_: Any) -> inference_pb2.ListModelsReply:
        return inference_pb2.ListModelsReply(
            default_model=MODEL,
            models=[inference_pb2.ModelInfo(name=MODEL, is_default=True, context_length=2048, quantization="F32")],
        )

    def Generate(self, request: inference_pb2.GenerateRequest, **_: Any) -> AsyncIterator[inference_pb2.GenerateChunk]:
        self.requests.append(request)

        async def chunks() -> AsyncIterator[inference_pb2.GenerateChunk]:
            if self.error is not None:
                raise self.error
            for i, piece in enumerate(self.pieces):
                if self.fail_after is not None and i == self.fail_after:
                    raise AvadiosError("the model fell over")
                yield inference_pb2.GenerateChunk(text=piece, model=MODEL)
            usage = inference_pb2.Usage(prompt_tokens=3, completion_tokens=len(self.pieces))
            yield inference_pb2.GenerateChunk(finish_reason="stop", usage=usage, model=MODEL)

        return chunks()


@dataclass
class FakeCache:
    entries: dict[bytes, cache_pb2.CachedAnswer] = field(default_factory=dict)
    lookups: int = 0

    async def Lookup(self, request: cache_pb2.CacheLookupRequest, **_: Any) -> cache_pb2.CacheLookupReply:
        self.lookups += 1
        answer = self.entries.get(request.key)
        return cache_pb2.CacheLookupReply(found=answer is not None, answer=answer)

    async def Store(self, request: cache_pb2.CacheStoreRequest, **_: Any) -> cache_pb2.CacheStoreReply:
        self.entries[request.key] = request.answer
        return cache_pb2.CacheStoreReply()


def fake_pipeline(inference: FakeInference, cache: FakeCache) -> Pipeline:
    return Pipeline(
        cast(InferenceClient, inference), cast(CacheClient, cache), request_timeout_s=10.0, default_max_tokens=256
    )


def fake_gateway(home: Path, inference: FakeInference, cache: FakeCache, api_key: str | None = None) -> Gateway:
    """A gateway whose pipeline talks to the fakes; routes that need other services (wallet, peers) have no
    NATS behind them and fail, which is what the error tests want."""
    gateway = Gateway(NodeConfig(home=home), cast(NatsChannel, None), "node-under-test", api_key)
    gateway.pipeline = fake_pipeline(inference, cache)
    gateway.voice = cast(VoiceClient, NoVoice())
    return gateway


class NoVoice:
    """A node whose voice service is not running: every call is refused as the transport refuses it."""

    def __getattr__(self, method: str) -> Any:
        async def refuse(*_: Any, **__: Any) -> Any:
            raise Unavailable("no voice service is running")

        return refuse
