"""Text as numbers: POST /v1/embeddings (OpenAI's shape, float or base64) and llama-server's POST /tokenize and
POST /detokenize, all answered by the model this node holds."""

from __future__ import annotations

import base64
import uuid
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from avadios.errors import InvalidArgument
from avadios.services.gateway.metrics import Metrics
from avadios.services.gateway.pipeline import Pipeline
from avadios.v1 import inference_pb2

EMBEDDINGS_ROUTE = "/v1/embeddings"
TOKENIZE_ROUTE = "/tokenize"
DETOKENIZE_ROUTE = "/detokenize"
MAX_INPUTS = 256


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = ""
    # Texts only: OpenAI also takes token arrays, which this node refuses (it names the field) rather than guess.
    input: str | list[str] = Field(description=f"one text or up to {MAX_INPUTS}")

    @field_validator("input", mode="before")
    @classmethod
    def _some_text(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("give a text or a list of texts (token arrays are not supported)")
        if not 1 <= len(texts) <= MAX_INPUTS:
            raise ValueError(f"give 1 to {MAX_INPUTS} texts")
        if any(not t for t in texts):
            raise ValueError("texts must not be empty")
        return value
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # base64 of little-endian float32 with encoding_format "base64"


class EmbeddingUsageOut(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsageOut


class TokenizeRequest(BaseModel):
    """llama-server's body: `content`, `add_special` (add BOS), `with_pieces`; `model` picks one of this node's."""

    model_config = ConfigDict(extra="forbid")
    content: str
    add_special: bool = False
    with_pieces: bool = False
    model: str = ""


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[int] = Field(max_length=1 << 16)
    model: str = ""


def _encode(values: Any, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")
    return list(values)


def embeddings_router(pipeline: Pipeline, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["Embeddings and tokens"])

    @router.post(EMBEDDINGS_ROUTE, summary="Embeddings (OpenAI-compatible)")
    async def embeddings(body: EmbeddingRequest) -> EmbeddingListOut:
        texts = body.texts()
        reply = await pipeline.embed(body.model, texts, "emb-" + uuid.uuid4().hex)
        data = [
            EmbeddingOut(index=i, embedding=_encode(e.values, body.encoding_format))
            for i, e in enumerate(reply.embeddings)
        ]
        metrics.requests.labels(EMBEDDINGS_ROUTE, "200", "1").inc()
        usage = EmbeddingUsageOut(prompt_tokens=reply.prompt_tokens, total_tokens=reply.prompt_tokens)
        return EmbeddingListOut(data=data, model=reply.model, usage=usage)

    @router.post(TOKENIZE_ROUTE, summary="Text to token ids (llama-server's /tokenize)")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        reply = await pipeline.tokenize(
            inference_pb2.TokenizeRequest(
                model=body.model, content=body.content, add_special=body.add_special, with_pieces=body.with_pieces
            )
        )
        metrics.requests.labels(TOKENIZE_ROUTE, "200", "1").inc()
        if not body.with_pieces:
            return {"tokens": list(reply.tokens)}
        # llama-server gives a piece as text when it is valid UTF-8, else as its bytes
        pieces: list[str | list[int]] = []
        for piece in reply.pieces:
            try:
                pieces.append(piece.decode("utf-8"))
            except UnicodeDecodeError:
                pieces.append(list(piece))
        return {"tokens": [{"id": t, "piece": p} for t, p in zip(reply.tokens, pieces, strict=True)]}

    @router.post(DETOKENIZE_ROUTE, summary="Token ids to text (llama-server's /detokenize)")
    async def detokenize(body: DetokenizeRequest) -> dict[str, str]:
        if any(t < 0 for t in body.tokens):
            raise InvalidArgument("tokens must not be negative")
        reply = await pipeline.detokenize(inference_pb2.DetokenizeRequest(model=body.model, tokens=body.tokens))
        metrics.requests.labels(DETOKENIZE_ROUTE, "200", "1").inc()
        return {"content": reply.content}

    return router
