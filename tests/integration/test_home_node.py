"""A real node (`avadios up`: nats-server, gateway, cache, inference on the real gemma-3-270m) used as a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.helpers import Node, running_node, wait_for

MODEL = "gemma-3-270m-q4_k_m"


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


FRANCE = user("What is the capital of France?")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # A small queue so the busy test can fill it; every other test sends one request at a time.
    with running_node(tmp_path_factory.mktemp("home"), AVADIOS_INFERENCE_QUEUE="2") as n:
        yield n


@pytest.fixture(scope="module")
def client(node: Node) -> OpenAI:
    return OpenAI(base_url=node.api_url + "/v1", api_key="unused-on-loopback", max_retries=0)


def assert_openai_error(reply: httpx.Response, status: int) -> dict[str, object]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"]
    return error


def serving_pids(node: Node) -> set[int]:
    health = httpx.get(node.api_url + "/health").json()
    return {s["pid"] for s in health["services"].get("inference", []) if s["status"] == "serving"}


def test_models_lists_the_default_model(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids


def test_chat_completion_answers_from_the_local_model(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24)
    answer = reply.choices[0].message.content or ""
    assert "Paris" in answer
    assert reply.usage is not None and reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0


def test_streaming_chat_arrives_in_pieces_and_ends_with_a_finish_reason(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("Name a large animal."),
        stream=True,
        max_tokens=16,
        temperature=0.7,
        seed=None,
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3, pieces  # really streamed: several deltas, not one blob
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_the_same_greedy_request_twice_is_answered_again_from_tier_0(client: OpenAI) -> None:
    question = user("What is the largest ocean on Earth?")
    first = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=question, temperature=0, max_tokens=20
    )
    second = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=question, temperature=0, max_tokens=20
    )
    assert first.headers["x-avadios-tier"] == "1"
    assert second.headers["x-avadios-tier"] == "0"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content
    # Sampling at a temperature without a seed is not reproducible: never served from the cache.
    hot = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=question, temperature=0.9, max_tokens=8
    )
    assert hot.headers["x-avadios-tier"] == "1"
    # HTTP's Cache-Control: no-cache asks for a fresh answer from the model.
    fresh = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=question, temperature=0, max_tokens=20, extra_headers={"Cache-Control": "no-cache"}
    )
    assert fresh.headers["x-avadios-tier"] == "1"
    assert fresh.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_streaming_from_tier_0_gives_the_same_text(client: OpenAI) -> None:
    question = user("What color is the sky?")
    plain = client.chat.completions.create(model=MODEL, messages=question, temperature=0, max_tokens=16)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=question, temperature=0, max_tokens=16, stream=True
    ) as response:
        assert response.headers["x-avadios-tier"] == "0"
        text = "".join(
            c.choices[0].delta.content or ""
            for c in response.parse()
            if isinstance(c, ChatCompletionChunk) and c.choices
        )
    assert text == plain.choices[0].message.content


def test_text_completion_route(client: OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="Q: What is the capital of France?\nA:", max_tokens=12, temperature=0, stop=["\n"]
    )
    assert "Paris" in reply.choices[0].text


def test_bad_requests_get_openai_errors_and_the_node_keeps_serving(node: Node, client: OpenAI) -> None:
    url = node.api_url + "/v1/chat/completions"
    assert_openai_error(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400)
    err = assert_openai_error(httpx.post(url, json={"model": "no-such-model", "messages": FRANCE}), 404)
    assert "no-such-model" in str(err["message"])
    err = assert_openai_error(httpx.post(url, json={"model": MODEL, "messages": FRANCE, "max_tokens": -5}), 400)
    assert "max_tokens" in str(err["message"])
    assert_openai_error(httpx.post(url, json={"model": MODEL, "messages": []}), 400)
    assert_openai_error(httpx.post(url, json={"model": MODEL, "messages": FRANCE, "temperature": 7}), 400)
    huge = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    assert_openai_error(httpx.post(url, json=huge), 413)
    assert_openai_error(httpx.get(node.api_url + "/v1/nothing-here"), 404)
    reply = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24)
    assert "Paris" in (reply.choices[0].message.content or "")


def test_a_full_queue_answers_429_instead_of_piling_up(node: Node) -> None:
    body = {
        "model": MODEL,
        "messages": user("Tell me a long story."),
        "max_tokens": 48,
        "temperature": 0.8,
    }
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: httpx.post(node.api_url + "/v1/chat/completions", json=body, timeout=120), range(8))
        )
    statuses = sorted(r.status_code for r in replies)
    assert 200 in statuses and 429 in statuses, statuses
    assert set(statuses) <= {200, 429}
    busy = next(r for r in replies if r.status_code == 429)
    assert_openai_error(busy, 429)


def test_health_and_metrics_report_the_node(node: Node) -> None:
    health = httpx.get(node.api_url + "/health").json()
    assert health["status"] == "ok"
    inference = health["services"]["inference"]
    assert inference[0]["status"] == "serving" and inference[0]["loaded_model"] == MODEL
    assert {"cache", "gateway", "inference"} <= set(health["services"])
    metrics = httpx.get(node.api_url + "/metrics").text
    assert 'avadios_requests_total{route="/v1/chat/completions",status="200",tier="1"}' in metrics
    assert 'avadios_requests_total{route="/v1/chat/completions",status="200",tier="0"}' in metrics
    assert 'avadios_tokens_total{kind="completion",tier="1"}' in metrics
    assert "avadios_request_latency_seconds_bucket" in metrics
    assert 'avadios_errors_total{code="model_not_found",route="/v1/chat/completions"}' in metrics


def test_the_home_page_is_the_dashboard(node: Node) -> None:
    # What it shows is tested in a browser (tests/integration/test_dashboard.py); here: it is served, with its code.
    page = httpx.get(node.api_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    assert httpx.get(node.api_url + "/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert f"dashboard: {node.api_url}/" in node.log_path.read_text()  # `avadios up` says where to open it


def test_cli_status_models_ask_and_id(node: Node) -> None:
    status = json.loads(node.cli("status", "--json").stdout)
    assert status["running"] and status["health"] == "ok"
    assert {"nats", "cache-0", "inference-0", "gateway-0"} <= set(status["processes"])
    models = json.loads(node.cli("models", "--json").stdout)
    assert models[0]["id"] == MODEL
    ident = json.loads(node.cli("id", "--json").stdout)
    assert ident["node_id"] == status["node_id"] and len(ident["node_id"]) == 64
    ask = node.cli("ask", "What is the capital of France?", "--max-tokens", "24")
    assert ask.returncode == 0 and "Paris" in ask.stdout
    key = node.home / "node.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_logs_are_json_lines_per_service(node: Node) -> None:
    for service in ("gateway-0", "inference-0", "cache-0", "supervisor"):
        lines = (node.home / "logs" / f"{service}.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        assert entries, service
        assert all({"ts", "level", "msg", "service"} <= set(e) for e in entries)


def test_a_killed_inference_process_is_restarted_and_serves_again(node: Node, client: OpenAI) -> None:
    old = node.pid_of("inference-0")
    os.kill(old, signal.SIGKILL)
    # While it is down or loading, requests fail fast with 503 rather than hang.
    reply = httpx.post(
        node.api_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": FRANCE, "max_tokens": 4, "temperature": 0.5},
        timeout=30,
    )
    assert reply.status_code in (200, 503), reply.text
    if reply.status_code == 503:
        assert_openai_error(reply, 503)
    new = wait_for(
        lambda: node.node_file()["processes"]["inference-0"]["pid"] not in (None, old) and node.pid_of("inference-0"),
        30,
        "a new inference pid",
    )
    wait_for(lambda: serving_pids(node) == {new}, 60, "the restarted replica to serve")
    answer = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0.1, max_tokens=24)
    assert answer.choices[0].message.content
    assert node.node_file()["processes"]["inference-0"]["restarts"] >= 1


def test_services_reconnect_after_the_nats_server_restarts(node: Node, client: OpenAI) -> None:
    old = node.pid_of("nats")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: node.node_file()["processes"]["nats"]["pid"] not in (None, old), 30, "a new nats-server")
    time.sleep(1.0)  # heartbeats from before the restart must age out of the picture
    node.wait_healthy(60)
    answer = client.chat.completions.create(model=MODEL, messages=user("Say hello."), temperature=0.3, max_tokens=8)
    assert answer.choices[0].message.content is not None
    assert client.models.list().data


def test_request_ids_and_tier_header_are_on_every_answer(node: Node) -> None:
    reply = httpx.post(
        node.api_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": FRANCE, "max_tokens": 4, "temperature": 0.5},
        timeout=60,
    )
    assert reply.headers["x-avadios-tier"] == "1" and reply.headers["x-request-id"].startswith("chatcmpl-")


def test_model_files_in_the_home_are_listed(node: Node, default_model: Path) -> None:
    shutil.copyfile(default_model, node.home / "models" / "my-copy.gguf")
    names = wait_for(
        lambda: [m["id"] for m in httpx.get(node.api_url + "/v1/models").json()["data"] if m["id"] == "my-copy"],
        10,
        "the new model to be listed",
    )
    assert names == ["my-copy"]
