"""The OpenAI fields beyond plain sampling, without a model: each is carried to the inference service or refused by
name, tier 0 keeps answers under different constraints apart, constrained requests stay off the network, tool calls
are read back in OpenAI's shape, and GGUF metadata names quantizations and sizes contexts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from avadios.config import load_config
from avadios.errors import InvalidArgument
from avadios.services.gateway.api.tools import ToolIn, answer_schema, read_answer
from avadios.services.gateway.app import build_app
from avadios.services.gateway.cache_key import cache_key
from avadios.services.gateway.pipeline import NetworkAsk, Pipeline, Tier
from avadios.services.inference.engine import Sampling
from avadios.services.inference.forward import openai_body
from avadios.services.inference.gguf_meta import quantization, read_metadata, serving_context
from avadios.services.inference.service import json_schema_grammar
from avadios.services.verifier.provider import check_offer
from avadios.testing.tiny_gguf import write_tiny_gguf
from avadios.v1 import inference_pb2, jobs_pb2
from avadios.v1.cache_nats import CacheClient
from avadios.v1.inference_nats import InferenceClient
from avadios.v1.jobs_nats import VerifierClient
from tests.gateway_fakes import MODEL, FakeCache, FakeInference, fake_gateway

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "capital of France?"}], "temperature": 0}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def client_for(home: Path, inference: FakeInference, cache: FakeCache | None = None) -> httpx.AsyncClient:
    app = build_app(fake_gateway(home, inference, cache or FakeCache()))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8740")


def refused(reply: httpx.Response, param: str) -> str:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    return str(error["message"])


async def test_fields_this_node_cannot_honour_are_refused_by_name_and_nothing_is_generated(tmp_path: Path) -> None:
    inference = FakeInference()
    async with client_for(tmp_path, inference) as client:
        url = "/v1/chat/completions"
        assert "not supported" in refused(await client.post(url, json={**CHAT, "audio": {"voice": "x"}}), "audio")
        assert "one choice" in refused(await client.post(url, json={**CHAT, "n": 2}), "n")
        refused(await client.post(url, json={**CHAT, "top_logprobs": 2}), "top_logprobs")  # without logprobs
        refused(await client.post(url, json={**CHAT, "tool_choice": "required"}), "tool_choice")
        named = {**CHAT, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}
        assert "nope" in refused(await client.post(url, json=named), "tool_choice")
        assert "token ids" in refused(await client.post(url, json={**CHAT, "logit_bias": {"Paris": 5}}), "logit_bias")
        refused(await client.post(url, json={**CHAT, "response_format": {"type": "json_schema"}}), "response_format")
        refused(await client.post(url, json={**CHAT, "presence_penalty": 3}), "presence_penalty")
        refused(await client.post("/v1/completions", json={"prompt": "x", "suffix": "y"}), "suffix")
        assert "token arrays" in refused(await client.post("/v1/embeddings", json={"input": [[1, 2, 3]]}), "input")
    assert inference.requests == []


async def test_what_the_request_asks_reaches_the_inference_service(tmp_path: Path) -> None:
    inference = FakeInference()
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = {
        **CHAT,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "logit_bias": {"42": -100},
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 7,
        "stop": ["\n"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    }
    async with client_for(tmp_path, inference) as client:
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        assert (await client.post("/v1/completions", json={"prompt": "x", "logprobs": 2})).status_code == 200
    chat, text = inference.requests
    s = chat.sampling
    assert (s.presence_penalty, s.frequency_penalty, dict(s.logit_bias)) == (0.5, -0.25, {42: -100.0})
    assert (s.logprobs, s.top_logprobs, s.seed, list(s.stop)) == (True, 3, 7, ["\n"])
    assert json.loads(s.json_schema) == schema
    assert (text.sampling.logprobs, text.sampling.top_logprobs) == (True, 2)


def test_tier_0_keys_differ_when_what_steers_the_answer_differs() -> None:
    def key(**fields: Any) -> bytes:
        sampling = inference_pb2.SamplingParams(temperature=0, **fields)
        return cache_key(inference_pb2.GenerateRequest(prompt="p", sampling=sampling), MODEL, 256)

    plain = key()
    variants = [
        key(json_schema='{"type":"object"}'),
        key(json_schema='{"type":"array"}'),
        key(logit_bias={1: 5.0}),
        key(logit_bias={1: -5.0}),
        key(presence_penalty=0.5),
        key(frequency_penalty=0.5),
    ]
    assert len({plain, *variants}) == 1 + len(variants)
    assert key(logit_bias={1: 5.0, 2: 1.0}) == key(logit_bias={2: 1.0, 1: 5.0})


async def test_a_logprobs_request_is_computed_afresh_and_a_json_answer_is_kept_apart(tmp_path: Path) -> None:
    inference, cache = FakeInference(), FakeCache()
    async with client_for(tmp_path, inference, cache) as client:
        for _ in range(2):
            reply = await client.post("/v1/chat/completions", json={**CHAT, "logprobs": True})
            assert reply.headers["x-avadios-tier"] == "1"
        assert cache.lookups == 0 and not cache.entries
        await client.post("/v1/chat/completions", json=CHAT)
        await asyncio.sleep(0.05)  # tier 0 stores in the background
        as_json = {**CHAT, "response_format": {"type": "json_object"}}
        assert (await client.post("/v1/chat/completions", json=as_json)).headers["x-avadios-tier"] == "1"
        assert (await client.post("/v1/chat/completions", json=CHAT)).headers["x-avadios-tier"] == "0"


class FakeVerifier:
    def __init__(self) -> None:
        self.jobs: list[jobs_pb2.JobRequest] = []

    async def RunJob(self, job: jobs_pb2.JobRequest, **_: Any) -> jobs_pb2.JobReply:
        self.jobs.append(job)
        return jobs_pb2.JobReply(text="net", finish_reason="stop", job=jobs_pb2.JobRecord(accepted=True))


async def test_a_constrained_request_stays_on_the_node_or_is_refused_for_the_network() -> None:
    verifier = FakeVerifier()
    pipeline = Pipeline(
        cast(InferenceClient, FakeInference()),
        cast(CacheClient, FakeCache()),
        10.0,
        256,
        cast(VerifierClient, verifier),
        network_tier="always",
    )
    chat = inference_pb2.ChatPrompt(messages=[inference_pb2.ChatMessage(role="user", content="q")])

    def request(model: str = "", **fields: Any) -> inference_pb2.GenerateRequest:
        sampling = inference_pb2.SamplingParams(temperature=0.5, **fields)
        return inference_pb2.GenerateRequest(request_id="r", model=model, sampling=sampling, chat=chat)

    assert (await pipeline.answer(request())).tier is Tier.NETWORK
    assert (await pipeline.answer(request(json_schema='{"type":"object"}'))).tier is Tier.LOCAL
    with pytest.raises(InvalidArgument, match="logit_bias cannot be verified by Proof of Inference"):
        await pipeline.answer(request(logit_bias={3: 1.0}), network=NetworkAsk("network"))
    with pytest.raises(InvalidArgument, match="logprobs"):
        await pipeline.answer(request(logprobs=True, model="elsewhere"))
    assert len(verifier.jobs) == 1


async def test_a_tool_call_comes_back_as_tool_calls_whole_and_streamed(tmp_path: Path) -> None:
    call = ('{"name": "get_weather", ', '"arguments": {"city": "Paris"}}')
    body = {**CHAT, "tools": [WEATHER]}
    async with client_for(tmp_path, FakeInference(pieces=call)) as client:
        whole = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
        assert whole["finish_reason"] == "tool_calls" and whole["message"]["content"] is None
        (tool_call,) = whole["message"]["tool_calls"]
        assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        streamed = await client.post("/v1/chat/completions", json={**body, "stream": True, "temperature": 0.5})
        events = [json.loads(line[6:]) for line in streamed.text.split("\n\n") if line.startswith("data: {")]
        deltas = [e["choices"][0]["delta"] for e in events]
        assert deltas[1]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    async with client_for(tmp_path, FakeInference(pieces=('{"content": "Sunny"}',))) as client:
        answer = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
        assert answer["message"] == {"role": "assistant", "content": "Sunny"} and answer["finish_reason"] == "stop"


def test_the_tool_schema_admits_calls_and_under_auto_an_answer_and_becomes_a_grammar() -> None:
    tool = ToolIn.model_validate(WEATHER)
    auto = answer_schema([tool], "auto")
    assert len(auto["anyOf"]) == 2
    required = answer_schema([tool], "required")
    assert required["properties"]["name"] == {"const": "get_weather"}
    assert "get_weather" in json_schema_grammar(json.dumps(auto))
    assert read_answer('{"content": "Paris is').content == "Paris is"  # cut short by max_tokens
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        json_schema_grammar("{nope")


def test_sampling_says_when_it_needs_the_single_sequence_path() -> None:
    plain = Sampling(8, 0.0, 1.0, None, ())
    assert not plain.constrained
    for extra in (
        {"grammar": "root ::= \"a\""},
        {"logprobs": True},
        {"top_logprobs": 2},
        {"presence_penalty": 0.1},
        {"frequency_penalty": 0.1},
        {"logit_bias": ((1, 2.0),)},
    ):
        assert Sampling(8, 0.0, 1.0, None, (), **extra).constrained, extra


def test_quantization_is_named_by_llama_cpp_and_context_comes_from_the_gguf(tmp_path: Path) -> None:
    assert quantization({"general.file_type": 30}) == "IQ4_XS"
    assert quantization({"general.file_type": 15}) == "Q4_K_M"
    assert quantization({"general.file_type": 0}) == "F32"
    meta = read_metadata(write_tiny_gguf(tmp_path / "tiny.gguf", context=4096))
    assert serving_context(meta, 8192, 1 << 34) == 4096  # the trained context
    assert serving_context(meta, 1024, 1 << 34) == 1024  # the configured cap
    per_token = 2 * 64 * 2 * 2  # 2 layers x (keys + values) x width 64 x f16
    assert serving_context(meta, 8192, 4 * per_token * 3000) == 3000  # a quarter of the memory


def test_the_backend_setting_is_checked(tmp_path: Path) -> None:
    config = load_config(
        {"home": tmp_path}, env={"AVADIOS_INFERENCE_BACKEND": "openai", "AVADIOS_INFERENCE_BACKEND_URL": "http://h:1/v1"}
    )
    assert (config.inference_backend, config.inference_backend_url) == ("openai", "http://h:1/v1")
    with pytest.raises(ValueError, match="inference_backend_url"):
        load_config({"home": tmp_path, "inference_backend": "openai"}, env={})
    with pytest.raises(ValueError, match=r"bad value for inference_backend .*must be one of llama.cpp, openai"):
        load_config({"home": tmp_path, "inference_backend": "ollama"}, env={})


def test_a_forwarded_request_says_the_same_in_openais_words() -> None:
    sampling = inference_pb2.SamplingParams(
        max_tokens=5, temperature=0.5, top_p=0.9, stop=["\n"], presence_penalty=0.5, logit_bias={7: -3.0},
        json_schema='{"type":"object"}', logprobs=True, top_logprobs=2,
    )  # fmt: skip
    sampling.seed = 3
    chat = inference_pb2.ChatPrompt(messages=[inference_pb2.ChatMessage(role="user", content="hi")])
    path, body = openai_body(inference_pb2.GenerateRequest(model="m", chat=chat, sampling=sampling), 256)
    assert path == "/chat/completions" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["max_tokens"], body["seed"], body["stop"], body["logit_bias"]) == (5, 3, ["\n"], {"7": -3.0})
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert (body["logprobs"], body["top_logprobs"], body["stream"]) == (True, 2, True)
    path, body = openai_body(inference_pb2.GenerateRequest(model="m", prompt="p"), 256)
    assert path == "/completions" and body["prompt"] == "p" and body["max_tokens"] == 256 and "logprobs" not in body


def test_a_provider_refuses_an_offer_it_could_not_have_verified() -> None:
    request = inference_pb2.GenerateRequest(
        model="m", prompt="p", sampling=inference_pb2.SamplingParams(max_tokens=4, json_schema='{"type":"object"}')
    )
    offer = jobs_pb2.JobOffer(request_id="r", request=request, model_hash=b"h" * 32, hold=b"o" * 32, price_cap=10)
    with pytest.raises(InvalidArgument, match="response_format/tools cannot be verified"):
        check_offer(offer, 256)
    offer.request.sampling.json_schema = ""
    check_offer(offer, 256)  # the same offer, plain, is served
