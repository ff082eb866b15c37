"""The OpenAI-compatible request bodies, validated at the HTTP edge, and the responses built from answers.

Responses are built as plain dicts (byte for byte what OpenAI's clients parse); the `*Out` models describe
them for /docs, and a unit test holds the two together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from avadios.errors import InvalidArgument
from avadios.ledger.amount import parse_autom
from avadios.ledger.errors import BadAmount
from avadios.services.gateway.api.tools import ToolChoice, ToolIn, answer_schema, instructions, offered
from avadios.services.gateway.pipeline import NetworkAsk, reproducible
from avadios.v1 import inference_pb2

MAX_STOP_SEQUENCES = 4


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ToolCallFunctionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: str


class ToolCallIn(BaseModel):
    """A call an assistant message made earlier in the conversation."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunctionIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = ""
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def rendered(self) -> inference_pb2.ChatMessage:
        """The message as the model reads it: tool calls as the JSON the model writes them in, tool results as a
        user turn that says which call they answer."""
        if self.role == "tool":
            call = self.tool_call_id or ""
            return inference_pb2.ChatMessage(role="user", content=f"Result of tool call {call}: {self.text()}")
        if self.role == "assistant" and self.tool_calls:
            calls = [
                json.dumps({"name": c.function.name, "arguments": _arguments(c.function.arguments)})
                for c in self.tool_calls
            ]
            return inference_pb2.ChatMessage(role="assistant", content="\n".join(calls))
        role = "system" if self.role == "developer" else self.role
        return inference_pb2.ChatMessage(role=role, content=self.text())


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


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


class JsonSchemaIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(default="output", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(BaseModel):
    """OpenAI's `response_format`: enforced by a llama.cpp grammar built from the JSON schema."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaIn | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatIn:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object with the schema")
        return self

    def schema(self) -> dict[str, Any] | None:  # type: ignore[override]
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.schema_
        return None


class SamplingIn(BaseModel):
    # Every field OpenAI defines that this node cannot honour is refused by name (docs/openai-compatibility.md),
    # never dropped: an answer that ignored part of its request would look right and be wrong.
    model_config = ConfigDict(extra="forbid")
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
    n: int = 1
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    response_format: ResponseFormatIn | None = None
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

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("this node generates one choice per request: send n=1 (or leave n out) and ask again")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys are token ids (from POST /tokenize), not {token!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"token {token}: a bias must be within -100..100")
        return value

    def json_schema(self) -> dict[str, Any] | None:
        """The schema the answer must match, if any."""
        return self.response_format.schema() if self.response_format else None

    def want_logprobs(self) -> tuple[bool, int]:
        return False, 0

    def sampling(self) -> inference_pb2.SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        schema = self.json_schema()
        logprobs, top = self.want_logprobs()
        params = inference_pb2.SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or 0,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stops,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()},
            json_schema=json.dumps(schema, sort_keys=True, separators=(",", ":")) if schema is not None else "",
            logprobs=logprobs,
            top_logprobs=top,
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
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[ToolIn] | None = Field(default=None, max_length=64)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted: an answer makes at most one call, which any value allows

    # Field validators rather than one model validator, so that a refusal names its field (error `param`); fields
    # are validated in order, so each sees the ones declared before it.
    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @field_validator("tools")
    @classmethod
    def _tools_alone(cls, value: list[ToolIn] | None, info: ValidationInfo) -> list[ToolIn] | None:
        fmt = info.data.get("response_format")
        if value and fmt is not None and fmt.type != "text":
            raise ValueError("tools and response_format cannot be combined: a tool call is itself constrained JSON")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(cls, value: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        if value not in (None, "none"):
            offered(info.data.get("tools") or [], value)  # a named function must be among the tools
            if not info.data.get("tools"):
                raise ValueError("tool_choice needs tools")
        return value

    def offered_tools(self) -> list[ToolIn]:
        return offered(self.tools, self.tool_choice)

    def json_schema(self) -> dict[str, Any] | None:
        tools = self.offered_tools()
        return answer_schema(tools, self.tool_choice) if tools else super().json_schema()

    def want_logprobs(self) -> tuple[bool, int]:
        return self.logprobs, self.top_logprobs or 0

    def generate_request(self, request_id: str, model: str) -> inference_pb2.GenerateRequest:
        messages = [m.rendered() for m in self.messages]
        tools = self.offered_tools()
        if tools:
            messages.insert(0, inference_pb2.ChatMessage(role="system", content=instructions(tools, self.tool_choice)))
        return inference_pb2.GenerateRequest(
            request_id=request_id,
            model=model,
            sampling=self.sampling(),
            chat=inference_pb2.ChatPrompt(messages=messages),
        )


class CompletionRequest(SamplingIn):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt is supported per request")
        return value

    def want_logprobs(self) -> tuple[bool, int]:
        return self.logprobs is not None, self.logprobs or 0

    def generate_request(self, request_id: str, model: str) -> inference_pb2.GenerateRequest:
        prompt = self.prompt[0] if isinstance(self.prompt, list) else self.prompt
        return inference_pb2.GenerateRequest(
            request_id=request_id, model=model, sampling=self.sampling(), prompt=prompt
        )


def _token(piece: bytes) -> str:
    return piece.decode("utf-8", "replace")


def chat_logprobs(tokens: Sequence[inference_pb2.TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat `logprobs`: every token with its bytes and its best alternatives."""
    return {
        "content": [
            {
                "token": _token(t.piece),
                "logprob": t.logprob,
                "bytes": list(t.piece),
                "top_logprobs": [
                    {"token": _token(a.piece), "logprob": a.logprob, "bytes": list(a.piece)} for a in t.top
                ],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def text_logprobs(tokens: Sequence[inference_pb2.TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The completions API's (legacy) `logprobs`: parallel lists, alternatives as {token: logprob}."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(_token(t.piece))
    return {
        "tokens": [_token(t.piece) for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{_token(a.piece): a.logprob for a in t.top} for t in tokens],
        "text_offset": offsets,
    }


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    request_id: str,
    model: str,
    text: str | None,
    finish_reason: str,
    usage: dict[str, int],
    logprobs: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage,
    }


def chat_chunk(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


def text_completion(
    request_id: str,
    model: str,
    text: str,
    finish_reason: str | None,
    usage: dict[str, int] | None,
    created: int | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request_id,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
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


class ToolCallFunctionOut(_Out):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallOut(_Out):
    id: str
    type: Literal["function"]
    function: ToolCallFunctionOut


class ChatMessageOut(_Out):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class TopLogprobOut(_Out):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]


class ChatLogprobsOut(_Out):
    content: list[TokenLogprobOut]
    refusal: None


class ChatChoiceOut(_Out):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobsOut | None
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


class TextLogprobsOut(_Out):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class TextChoiceOut(_Out):
    index: int
    text: str
    logprobs: TextLogprobsOut | None
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
