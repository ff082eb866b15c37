"""Request handling that needs no model: cache keys, chat rendering, OpenAI body validation, GGUF metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from avadios.errors import InvalidArgument
from avadios.services.gateway.api.openai_schema import ChatCompletionRequest
from avadios.services.gateway.cache_key import cache_key
from avadios.services.inference.chat_format import Message, render_qa
from avadios.services.inference.gguf_meta import quantization, read_metadata
from avadios.v1 import inference_pb2


def chat(text: str, **sampling: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": text}], **sampling}
    )


def key_of(body: ChatCompletionRequest, request_id: str = "r1") -> bytes:
    return cache_key(body.generate_request(request_id, "m"), "m", 256)


@given(st.text(max_size=200), st.text(max_size=200))
def test_cache_keys_are_equal_exactly_when_the_requests_are(a: str, b: str) -> None:
    assert key_of(chat(a, temperature=0)) == key_of(chat(a, temperature=0), request_id="another")
    assert (key_of(chat(a, temperature=0)) == key_of(chat(b, temperature=0))) == (a == b)


def test_every_sampling_parameter_is_part_of_the_cache_key() -> None:
    base = key_of(chat("hi", temperature=0))
    for change in ({"max_tokens": 5}, {"top_p": 0.5}, {"seed": 7}, {"stop": ["x"]}, {"temperature": 0.5, "seed": 1}):
        assert key_of(chat("hi", **{"temperature": 0, **change})) != base, change
    # An omitted max_tokens means the default, so both spellings share one entry.
    assert key_of(chat("hi", temperature=0, max_tokens=256)) == base


def test_only_greedy_or_seeded_requests_are_reproducible() -> None:
    assert chat("hi", temperature=0).reproducible
    assert chat("hi", temperature=0.7, seed=3).reproducible
    assert not chat("hi", temperature=0.7).reproducible


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": -1},
        {"max_tokens": 0},
        {"temperature": 2.5},
        {"top_p": 0},
        {"n": 2},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [""]},
    ],
)
def test_bad_sampling_parameters_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        chat("hi", **body)


def test_qa_format_renders_system_history_and_an_open_answer() -> None:
    prompt = render_qa(
        [
            Message("system", "Be brief."),
            Message("user", "Hi?"),
            Message("assistant", "Hello."),
            Message("user", "Capital of France?"),
        ]
    )
    assert prompt.text == "Be brief.\n\nQ: Hi?\nA: Hello.\nQ: Capital of France?\nA:"
    assert "\nQ:" in prompt.stop


def test_unknown_roles_are_refused() -> None:
    from avadios.services.inference.chat_format import check_messages

    with pytest.raises(InvalidArgument, match="role 'tool'"):
        check_messages([Message("tool", "x")])
    with pytest.raises(InvalidArgument, match="at least one"):
        check_messages([])


def test_developer_messages_become_system_messages() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "rules"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ],
        }
    )
    request = body.generate_request("r", "m")
    assert [(m.role, m.content) for m in request.chat.messages] == [("system", "rules"), ("user", "ab")]
    assert isinstance(request, inference_pb2.GenerateRequest)


def test_gguf_metadata_of_the_default_model(default_model: Path) -> None:
    meta = read_metadata(default_model)
    assert meta["general.architecture"] == "gemma3"
    assert meta["gemma3.context_length"] == 32768
    assert quantization(meta) == "Q4_K_M"
    assert "tokenizer.chat_template" not in meta  # why the avadios-qa format exists


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "x.gguf"
    bogus.write_bytes(b"NOPE" + bytes(100))
    from avadios.services.inference.gguf_meta import GGUFError

    with pytest.raises(GGUFError, match="not a GGUF"):
        read_metadata(bogus)
