"""OpenAI function calling on a local model: the tools become a JSON schema that a llama.cpp grammar enforces, and
the constrained answer is read back as `tool_calls` (or as plain content, where the model chose to answer).

The model is told the tools in a system message, and its output must be one JSON object:
`{"name": <a tool's name>, "arguments": {...its parameters...}}` for a call, or `{"content": "..."}` for an answer.
`tool_choice` picks which of those the grammar admits: "auto" both, "required" any call, a named function only
that call, "none" nothing (the tools are then not offered at all). One call per answer.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ANSWER = {
    "type": "object",
    "properties": {"content": {"type": "string"}},
    "required": ["content"],
    "additionalProperties": False,
}


class FunctionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionIn


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class ToolChoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceIn


def _call_schema(function: FunctionIn) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": function.name},
            "arguments": function.parameters or {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def offered(tools: list[ToolIn] | None, choice: ToolChoice | None) -> list[ToolIn]:
    """The tools the model may call under `choice` (empty: answer in plain text, no grammar)."""
    if not tools or choice == "none":
        return []
    if isinstance(choice, ToolChoiceIn):
        named = [t for t in tools if t.function.name == choice.function.name]
        if not named:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not among the tools")
        return named
    return list(tools)


def answer_schema(tools: list[ToolIn], choice: ToolChoice | None) -> dict[str, Any]:
    """The JSON schema of every answer `choice` allows: one of the tools' calls, or (under "auto") plain content."""
    calls = [_call_schema(t.function) for t in tools]
    options = [*calls, ANSWER] if choice in (None, "auto") else calls
    return options[0] if len(options) == 1 else {"anyOf": options}


def instructions(tools: list[ToolIn], choice: ToolChoice | None) -> str:
    lines = ["You can call these tools:"]
    for tool in tools:
        f = tool.function
        params = json.dumps(f.parameters or {"type": "object"}, separators=(",", ":"))
        lines.append(f"- {f.name}: {f.description or ''} Parameters (JSON schema): {params}")
    lines.append('To call a tool, reply with {"name": <tool name>, "arguments": {<parameters>}}.')
    if choice in (None, "auto"):
        lines.append('To answer without a tool, reply with {"content": <your answer>}.')
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """What a constrained answer says: a call (name, arguments as JSON text) or plain content."""

    content: str | None
    name: str = ""
    arguments: str = ""

    def tool_calls(self) -> list[dict[str, Any]]:
        if not self.name:
            return []
        return [
            {
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {"name": self.name, "arguments": self.arguments},
            }
        ]


def read_answer(text: str) -> ToolAnswer:
    """The call or the content in a grammar-constrained answer; an answer cut short by max_tokens is not JSON and
    comes back as its text (its finish_reason says "length")."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return ToolAnswer(_cut_content(text))
    if isinstance(value, dict) and isinstance(value.get("name"), str) and "arguments" in value:
        return ToolAnswer(None, value["name"], json.dumps(value["arguments"], ensure_ascii=False))
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return ToolAnswer(value["content"])
    return ToolAnswer(text)


_CONTENT_START = re.compile(r'\s*\{\s*"content"\s*:\s*"')


def _cut_content(text: str) -> str:
    """The text of a plain answer cut short inside its JSON string (`{"content": "Paris is` -> `Paris is`)."""
    start = _CONTENT_START.match(text)
    if start is None:
        return text
    partial = text[start.end() :]
    for end in range(len(partial), max(-1, len(partial) - 8), -1):  # an escape may be cut in half
        try:
            return str(json.loads(f'"{partial[:end]}"'))
        except json.JSONDecodeError:
            continue
    return partial
