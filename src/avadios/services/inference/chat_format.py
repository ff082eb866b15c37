"""Turns chat messages into a prompt: the GGUF's own chat template, or the documented `avadios-qa` format.

A base model's GGUF (such as the default gemma-3-270m) has no `tokenizer.chat_template`, and
llama-cpp-python's fallback (the llama-2 format) makes such a model answer chats with nothing. Such
models get `avadios-qa`, the question/answer layout base models continue naturally:

    <system messages, one per line>          (only if there are any)
                                              (blank line)
    Q: <user message>
    A: <assistant message>
    Q: <last user message>
    A:

Generation stops at the next "\\nQ:" or "\\nA:" so the model answers one question and stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from avadios.errors import InvalidArgument

QA_FORMAT = "avadios-qa"
GGUF_TEMPLATE = "gguf-template"
QA_STOP = ("\nQ:", "\nA:")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    text: str
    stop: tuple[str, ...]
    # True when the template already wrote the BOS token, so tokenizing must not add another.
    has_bos: bool


def check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise InvalidArgument("messages must contain at least one message")
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise InvalidArgument(f"messages[{i}].role {m.role!r} is not one of {', '.join(ROLES)}")


def render_qa(messages: Sequence[Message]) -> RenderedPrompt:
    system = [m.content.strip() for m in messages if m.role == "system"]
    lines = ["\n".join(system), ""] if system else []
    for m in messages:
        if m.role == "user":
            lines.append(f"Q: {m.content.strip()}")
        elif m.role == "assistant":
            lines.append(f"A: {m.content.strip()}")
    if messages[-1].role != "assistant":
        lines.append("A:")
    return RenderedPrompt("\n".join(lines), QA_STOP, has_bos=False)


class ChatRenderer:
    """Renders chats for one model; built once per loaded model."""

    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        self.format_name = GGUF_TEMPLATE if template else QA_FORMAT
        self._jinja = Jinja2ChatFormatter(template, eos_token=eos_token, bos_token=bos_token) if template else None
        self._eos = eos_token

    def render(self, messages: Sequence[Message]) -> RenderedPrompt:
        check_messages(messages)
        if self._jinja is None:
            return render_qa(messages)
        chat: Any = [{"role": m.role, "content": m.content} for m in messages]
        result = self._jinja(messages=chat)
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return RenderedPrompt(result.prompt, tuple(stop), has_bos=bool(result.added_special))
