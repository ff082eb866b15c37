"""The OpenAI-compatible request bodies, validated at the HTTP edge, and the responses built from answers.

Responses are built as plain dicts (byte for byte what OpenAI's clients parse); the `*Out` models describe
them for /docs, and a unit test holds the two together.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from avadios.errors import InvalidArgument
from avadios.ledger.amount import parse_autom
from avadios.ledger.errors import BadAmount
from avadios.services.gateway.pipeline import NetworkAsk, reproducible
from avadios.v1 import inference_pb2

MAX_STOP_SEQUENCES = 4


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class NetworkOptions(BaseModel):
    """`"avadios": {...}` in a request body: how the network tier may answer it."""

    model_config = ConfigDict(extra="forbid")
    tier: Literal["auto", "local", "network"] = "auto"
    replicas: int | None = Field(default=None, ge=1, le=16, description="providers asked; a strict majority must agree")
    max_price: str | None = Field(default=None, description='AUTOM the whole request may cost, e.g. "0.05"')

    def ask(self, header_tier: str | None) -> NetworkAsk:
        tier = (header_tier or "").strip().lower() or self.tier
        if tier in ("0", "1"):
            tier = "local"  # the tiers a response names, asked for: stay on this node
        try:
            price = parse_autom(self.max_price) if self.max_price is not None else 0
        except BadAmount as exc:
            raise InvalidArgument(f"avadios.max_price: {exc.message}") from None
        return NetworkAsk(tier, self.replicas or 0, price)


class SamplingIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = ""
    avadios: NetworkOptions = Field(default_factory=NetworkOptions)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    def sampling(self) -> inference_pb2.SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        params = inference_pb2.SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or 0,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stops,
        )
        if self.seed is not None:
            params.seed = self.seed
        return params

    @property
    def reproducible(self) -> bool:
        return reproducible(self.sampling())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatCompletionRequest(SamplingIn):
    messages: list[ChatMessageIn] = Field(min_length=1)

    def generate_request(self, request_id: str, model: str) -> inference_pb2.GenerateRequest:
        messages = [
            inference_pb2.ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
            for m in self.messages
        ]
        return inference_pb2.GenerateRequest(
            request_id=request_id,
            model=model,
            sampling=self.sampling(),
            chat=inference_pb2.ChatPrompt(messages=messages),
        )


class CompletionRequest(SamplingIn):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt is supported per request")
        return value

    def generate_request(self, request_id: str, model: str) -> inference_pb2.GenerateRequest:
        prompt = self.prompt[0] if isinstance(self.prompt, list) else self.prompt
        return inference_pb2.GenerateRequest(
            request_id=request_id, model=model, sampling=self.sampling(), prompt=prompt
        )


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    request_id: str, model: str, text: str, finish_reason: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }


def chat_chunk(
    request_id: str, model: str, created: int, delta: dict[str, str], finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def text_completion(
    request_id: str,
    model: str,
    text: str,
    finish_reason: str | None,
    usage: dict[str, int] | None,
    created: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request_id,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


# ---- what the responses look like, for /docs ---------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UsageOut(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(_Out):
    role: Literal["assistant"]
    content: str


class ChatChoiceOut(_Out):
    index: int
    message: ChatMessageOut
    logprobs: None
    finish_reason: str


class ChatCompletionOut(_Out):
    """`POST /v1/chat/completions` without `stream`; with it, `text/event-stream` of chat.completion.chunk
    objects ending in `data: [DONE]`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoiceOut]
    usage: UsageOut


class TextChoiceOut(_Out):
    index: int
    text: str
    logprobs: None
    finish_reason: str | None


class TextCompletionOut(_Out):
    """`POST /v1/completions` without `stream`; with it, `text/event-stream` of text_completion objects."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoiceOut]
    usage: UsageOut | None = None


class ModelDetailsOut(_Out):
    size_bytes: int
    context_length: int
    architecture: str
    quantization: str
    chat_format: str
    default: bool


class VoiceModelDetailsOut(_Out):
    kind: Literal["transcription", "speech"]
    default: bool
    english_only: bool
    means: str = Field("", description="for an OpenAI name (whisper-1, tts-1, tts-1-hd): the model it stands for")


class ModelOut(_Out):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "local"
    avadios: ModelDetailsOut | VoiceModelDetailsOut


class ModelListOut(_Out):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class ErrorDetailOut(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorOut(_Out):
    """Every error of the API, OpenAI's shape."""

    error: ErrorDetailOut
