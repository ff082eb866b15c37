"""Tier 1 from a server the user already runs: a real OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`
on the default model) behind a real node started with `avadios up --backend URL`; the server goes away and comes
back while the node runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.helpers import Node, eventually, free_port, running_node, wait_for

ALIAS = "backend-gemma"
QUESTION = "Q: What is the capital of France?\nA:"


class Backend:
    """`python -m llama_cpp.server` on one port, restartable there."""

    def __init__(self, model: Path, log: Path) -> None:
        self.model, self.log, self.port = model, log, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", ALIAS,
                 "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "2", "--n_ctx", "1024"],
                stdout=out, stderr=out,
            )  # fmt: skip
        wait_for(lambda: httpx.get(self.url + "/models", timeout=1).status_code == 200, 120, "llama_cpp.server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def backend(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    server = Backend(default_model, tmp_path_factory.mktemp("backend") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("home"), "--backend", backend.url) as n:
        yield n


@pytest.fixture(scope="module")
def client(node: Node) -> OpenAI:
    return OpenAI(base_url=node.api_url + "/v1", api_key="unused-on-loopback", max_retries=0)


def test_the_node_lists_the_backends_models_and_answers_from_it_in_tier_1(node: Node, client: OpenAI) -> None:
    listed = client.models.list().data
    text_models = [m.id for m in listed if (m.model_extra or {}).get("avadios", {}).get("kind") is None]
    assert text_models == [ALIAS]  # the node's own GGUF is not listed: tier 1 is the backend (voice models are)
    first = client.completions.with_raw_response.create(model=ALIAS, prompt=QUESTION, temperature=0, max_tokens=8)
    assert first.headers["x-avadios-tier"] == "1"
    assert "Paris" in first.parse().choices[0].text
    again = client.completions.with_raw_response.create(model=ALIAS, prompt=QUESTION, temperature=0, max_tokens=8)
    assert again.headers["x-avadios-tier"] == "0"  # tier 0 works unchanged in front of the backend
    assert again.parse().choices[0].text == first.parse().choices[0].text
    stream = client.completions.create(model=ALIAS, prompt=QUESTION, max_tokens=8, stream=True, temperature=0,
                                       extra_headers={"Cache-Control": "no-cache"})  # fmt: skip
    pieces = [c.choices[0].text for c in stream if c.choices and c.choices[0].text]
    assert len(pieces) >= 2 and "".join(pieces) == first.parse().choices[0].text  # streamed as the backend streams
    metrics = httpx.get(node.api_url + "/metrics").text
    assert 'avadios_tokens_total{kind="completion",tier="1"}' in metrics
    health = httpx.get(node.api_url + "/health").json()
    assert health["services"]["inference"][0]["models"] == [ALIAS]


def test_what_needs_a_local_gguf_is_refused_with_the_reason(node: Node) -> None:
    reply = httpx.post(node.api_url + "/tokenize", json={"content": "hello"})
    assert reply.status_code == 501 and "local GGUF" in reply.json()["error"]["message"]


def test_the_backend_going_away_is_a_503_that_says_so_and_its_return_serves_again(
    node: Node, backend: Backend, client: OpenAI
) -> None:
    backend.stop()
    body = {"model": ALIAS, "prompt": QUESTION, "max_tokens": 4, "temperature": 0.5}
    reply = httpx.post(node.api_url + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 503
    message = reply.json()["error"]["message"]
    assert backend.url in message and "not answering" in message
    eventually(lambda: httpx.get(node.api_url + "/health").status_code == 503, 15, "/health to say 503")
    backend.start()
    eventually(lambda: httpx.get(node.api_url + "/health").status_code == 200, 30, "/health to recover")
    answer = client.completions.create(model=ALIAS, prompt=QUESTION, max_tokens=8, temperature=0.5)
    assert answer.choices[0].text
