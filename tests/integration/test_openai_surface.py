"""The OpenAI surface of a real node (`avadios up` on the real gemma-3-270m) as the official `openai` client and
LangChain's `ChatOpenAI` use it: structured output, logprobs, biases, seeds, tool calls, embeddings, tokens, and
the compatibility table of docs/openai-compatibility.md, row by row."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, SecretStr

from tests.helpers import Node, running_node

MODEL = "gemma-3-270m-q4_k_m"
FRANCE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
TABLE = Path(__file__).parents[2] / "docs" / "openai-compatibility.md"
BASE_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    "/v1/completions": {"model": MODEL, "prompt": "Q: Hi\nA:", "max_tokens": 2},
    "/v1/embeddings": {"input": "hello"},
    "/tokenize": {"content": "hello"},
    "/detokenize": {"tokens": [9259]},
}


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("home")) as n:
        yield n


@pytest.fixture(scope="module")
def client(node: Node) -> OpenAI:
    return OpenAI(base_url=node.api_url + "/v1", api_key="unused-on-loopback", max_retries=0)


@pytest.fixture(scope="module")
def chat_model(node: Node) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=node.api_url + "/v1",
        api_key=SecretStr("unused"),
        model=MODEL,
        temperature=0,
        max_completion_tokens=40,
        max_retries=0,
    )


def test_models_name_the_quantization_and_the_trained_context(client: OpenAI) -> None:
    (model,) = [m for m in client.models.list().data if m.id == MODEL]
    details = model.model_extra["avadios"]  # type: ignore[index]
    assert details["quantization"] == "Q4_K_M" and details["context_length"] == 32768


def test_a_json_schema_answer_parses_and_matches_the_schema(client: OpenAI) -> None:
    reply = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a city in France."}],
        response_format=City,
        temperature=0,
        max_tokens=40,
    )
    city = reply.choices[0].message.parsed
    assert isinstance(city, City) and city.name and city.country
    plain = client.chat.completions.create(
        model=MODEL, messages=FRANCE, response_format={"type": "json_object"}, temperature=0, max_tokens=12
    )
    text = plain.choices[0].message.content or ""
    # The grammar admits only a JSON object; a base model may still talk until max_tokens cuts the object short.
    assert text.lstrip().startswith("{")
    assert plain.choices[0].finish_reason == "length" or isinstance(json.loads(text), dict)


def test_chat_logprobs_come_in_openais_shape_and_spell_the_answer(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    for t in tokens:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3 and bytes(t.bytes or []) == t.token.encode()
        # greedy: the chosen token is the most likely one
        assert t.top_logprobs[0].token == t.token
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)


def test_completion_logprobs_come_in_the_legacy_shape(client: OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="Q: What is the capital of France?\nA:", temperature=0, max_tokens=5, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]


def test_a_logit_bias_bans_the_answer_the_model_would_give(node: Node, client: OpenAI) -> None:
    prompt = "Q: What is the capital of France?\nA: The capital of France is"
    plain = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=3)
    assert "Paris" in plain.choices[0].text
    paris = httpx.post(node.api_url + "/tokenize", json={"content": " Paris"}).json()["tokens"]
    assert len(paris) == 1
    banned = client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, max_tokens=3, logit_bias={str(paris[0]): -100}
    )
    assert "Paris" not in banned.choices[0].text


def test_a_seed_makes_sampling_repeat_and_penalties_change_the_answer(client: OpenAI) -> None:
    def ask(**extra: Any) -> str:
        reply = client.completions.create(
            model=MODEL,
            prompt="Q: Name three colours.\nA:",
            max_tokens=12,
            extra_headers={"Cache-Control": "no-cache"},
            **extra,
        )
        return reply.choices[0].text

    assert ask(temperature=0.9, seed=11) == ask(temperature=0.9, seed=11)
    assert ask(temperature=0) != ask(temperature=0, frequency_penalty=2.0, presence_penalty=2.0)


def test_a_required_tool_call_names_the_tool_with_arguments_of_its_schema(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "the weather in a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        tool_choice="required",
        temperature=0,
        max_tokens=40,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]


def test_what_the_node_cannot_do_is_a_400_naming_the_field(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=FRANCE, n=2)
    assert refused.value.param == "n"
    with pytest.raises(openai.BadRequestError, match="Proof of Inference"):
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, logprobs=True, max_tokens=2, extra_body={"avadios": {"tier": "network"}}
        )


def test_embeddings_are_unit_vectors_in_float_and_base64(client: OpenAI) -> None:
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock markets fell sharply today."]
    floats = client.embeddings.create(model=MODEL, input=texts)
    vectors = np.array([d.embedding for d in floats.data])
    assert vectors.shape == (3, 640) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert floats.usage.prompt_tokens > 0
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=texts[0], encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(raw.http_response.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-6)
    with pytest.raises(openai.BadRequestError, match="at most 2048"):  # refused whole, never cut short
        client.embeddings.create(model=MODEL, input=["fine", "word " * 3000])


def test_tokenize_and_detokenize_round_trip_as_llama_server_does(node: Node) -> None:
    tokens = httpx.post(node.api_url + "/tokenize", json={"content": "Hello world", "with_pieces": True}).json()
    assert [t["piece"] for t in tokens["tokens"]] == ["Hello", " world"]
    ids = [t["id"] for t in tokens["tokens"]]
    with_bos = httpx.post(node.api_url + "/tokenize", json={"content": "Hello world", "add_special": True}).json()
    assert with_bos["tokens"][1:] == ids
    assert httpx.post(node.api_url + "/detokenize", json={"tokens": ids}).json() == {"content": "Hello world"}
    bad = httpx.post(node.api_url + "/detokenize", json={"tokens": [10**9]})
    assert bad.status_code == 400 and "vocabulary" in bad.json()["error"]["message"]


def test_langchain_invokes_streams_and_returns_structured_output(chat_model: ChatOpenAI) -> None:
    pieces = [str(c.content) for c in chat_model.stream("What is the capital of France?")]
    assert len([p for p in pieces if p]) >= 2  # streamed from the model in pieces
    whole = str(chat_model.invoke("What is the capital of France?").content)  # now from tier 0
    assert "Paris" in whole and whole == "".join(pieces)
    city = chat_model.with_structured_output(City, method="json_schema").invoke("Name a city in France.")
    assert isinstance(city, City) and city.name


def test_langchain_tool_call(chat_model: ChatOpenAI) -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    message = chat_model.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)


def table_rows() -> list[tuple[str, str, dict[str, Any], str]]:
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("/"):
            rows.append((cells[0], cells[1], json.loads(cells[2].strip("`")), cells[3]))
    return rows


def test_the_compatibility_table_is_what_the_node_does(node: Node) -> None:
    rows = table_rows()
    assert len(rows) >= 40 and {r[3] for r in rows} == {"supported", "refused"}
    wrong = []
    with httpx.Client(base_url=node.api_url, timeout=120) as http:
        for endpoint, field, sent, outcome in rows:
            reply = http.post(endpoint, json={**BASE_BODIES[endpoint], **sent})
            if outcome == "supported":
                ok = reply.status_code == 200 and "error" not in reply.text[:200]
            else:
                param = reply.json()["error"]["param"] or "" if reply.status_code == 400 else ""
                ok = reply.status_code == 400 and param.startswith(field)
            if not ok:
                got = f"HTTP {reply.status_code} {reply.text[:200]}"
                wrong.append(f"{endpoint} {field} {sent}: {outcome} in the table, {got}")
    assert not wrong, "\n".join(wrong)
