"""The gateway's HTTP API in process, over fake inference and cache services: OpenAI shapes (JSON and SSE),
headers, one error shape for every route, the API key, and an OpenAPI document that shows every body."""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avadios.config import SERVICES
from avadios.services.gateway.api.openai_schema import (
    ChatCompletionOut,
    TextCompletionOut,
    chat_completion,
    text_completion,
)
from avadios.services.gateway.app import build_app
from tests.gateway_fakes import MODEL, FakeCache, FakeInference, fake_gateway

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "capital of France?"}], "temperature": 0}


def client_for(home: Path, inference: FakeInference | None = None, api_key: str | None = None) -> httpx.AsyncClient:
    app = build_app(fake_gateway(home, inference or FakeInference(), FakeCache(), api_key))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8740")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(tmp_path) as c:
        yield c


def events(reply: httpx.Response) -> list[Any]:
    lines = [line[len("data: ") :] for line in reply.text.split("\n\n") if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def assert_error(reply: httpx.Response, status: int, code: str | None) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["code"] == code, error
    return str(error["message"])


async def test_a_chat_answer_has_openai_shape_request_id_and_tier(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200
    body = ChatCompletionOut.model_validate(reply.json())
    assert body.choices[0].message.content == "Paris" and body.usage.total_tokens == 5
    assert reply.headers["x-avadios-tier"] == "1" and reply.headers["x-request-id"] == body.id
    assert body.id.startswith("chatcmpl-")


async def test_a_streamed_chat_opens_with_the_role_and_ends_with_usage_and_done(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache" and reply.headers["x-avadios-tier"] == "1"
    got = events(reply)
    assert got[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in got[:-2]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Par"}, {"content": "is"}, {}]
    assert got[-3]["choices"][0]["finish_reason"] == "stop"
    assert got[-2]["choices"] == [] and got[-2]["usage"]["completion_tokens"] == 2
    assert {e["id"] for e in got[:-1]} == {reply.headers["x-request-id"]}


async def test_completions_answer_whole_and_streamed(client: httpx.AsyncClient) -> None:
    whole = await client.post("/v1/completions", json={"prompt": "Q: capital?\nA:", "temperature": 0})
    body = TextCompletionOut.model_validate(whole.json())
    assert body.choices[0].text == "Paris" and body.id.startswith("cmpl-")
    streamed = await client.post("/v1/completions", json={"prompt": "x", "stream": True})
    got = events(streamed)
    assert [e["choices"][0]["text"] for e in got[:-1]] == ["Par", "is", ""]
    assert got[-2]["choices"][0]["finish_reason"] == "stop" and "usage" not in got[-2]


async def test_the_same_greedy_request_comes_from_tier_0_unless_cache_control_says_no(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).headers["x-avadios-tier"] == "1"
        await asyncio.sleep(0.01)  # the tier 0 store runs in the background (NATS keeps it ahead of a next lookup)
        second = await client.post("/v1/chat/completions", json=CHAT)
        assert second.headers["x-avadios-tier"] == "0"
        assert second.json()["choices"][0]["message"]["content"] == "Paris"
        for directive in ("no-cache", "no-store"):
            fresh = await client.post("/v1/chat/completions", json=CHAT, headers={"Cache-Control": directive})
            assert fresh.headers["x-avadios-tier"] == "1", directive


async def test_every_error_has_the_openai_shape(client: httpx.AsyncClient) -> None:
    url = "/v1/chat/completions"
    message = assert_error(
        await client.post(url, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid_request",
    )
    assert "not valid JSON" in message
    assert "max_tokens" in assert_error(await client.post(url, json={**CHAT, "max_tokens": -5}), 400, "invalid_request")
    assert "'nope'" in assert_error(await client.post(url, json={**CHAT, "model": "nope"}), 404, "model_not_found")
    assert_error(await client.post(url, content=b'{"model": "x"}'), 400, "invalid_request")  # not sent as JSON
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    assert_error(await client.post(url, json=huge), 413, "request_too_large")
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await client.delete("/v1/models"), 405, "method_not_allowed")
    # The wallet and peer routes answer in the same shape, with the domain's own reason as the code.
    assert "no wallet" in assert_error(await client.get("/api/wallet"), 404, "no_wallet")
    assert_error(await client.post("/api/wallet/send", json={"to": "nope", "amount": "1"}), 400, "malformed_address")
    assert_error(await client.post("/api/peers", json={}), 400, "invalid_request")
    metrics = (await client.get("/metrics")).text
    assert 'avadios_errors_total{code="model_not_found",route="/v1/chat/completions"}' in metrics
    assert 'avadios_requests_total{route="/v1/chat/completions",status="413",tier=""}' in metrics


async def test_a_failure_before_the_first_chunk_is_a_status_and_after_it_an_event(tmp_path: Path) -> None:
    from avadios.errors import Busy

    async with client_for(tmp_path, FakeInference(error=Busy("the inference queue is full"))) as client:
        assert_error(await client.post("/v1/chat/completions", json={**CHAT, "temperature": 0.5}), 429, "busy")
    async with client_for(tmp_path, FakeInference(pieces=("a", "b", "c"), fail_after=2)) as client:
        reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, "temperature": 0.5})
        assert reply.status_code == 200
        last = events(reply)[-1]
        assert last["error"]["message"] == "the model fell over" and last["error"]["type"] == "server_error"


async def test_off_loopback_every_route_but_the_probes_needs_the_key(tmp_path: Path) -> None:
    async with client_for(tmp_path, api_key="secret") as client:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/api/wallet"),
                             ("GET", "/api/peers"), ("GET", "/api/route/m"), ("GET", "/api/jobs")):  # fmt: skip
            assert_error(await client.request(method, path, json={"prompt": "x"}), 401, "invalid_api_key")
        # The dashboard's files are open (a browser cannot send the key for them) and hold nothing of the node:
        # the page asks for the key and sends it with every API call.
        page = await client.get("/")
        assert page.status_code == 200 and "key-dialog" in page.text and "node-under-test" not in page.text
        health = await client.get("/health")
        assert health.status_code == 503  # no heartbeats here: open, but not ready
        assert health.json()["missing"] == list(SERVICES)  # each service the node lacks is named
        assert (await client.get("/metrics")).status_code == 200
        wrong = await client.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        assert_error(wrong, 401, "invalid_api_key")
        models = await client.get("/v1/models", headers={"Authorization": "Bearer secret"})
        assert [m["id"] for m in models.json()["data"]] == [MODEL]


async def test_openapi_shows_a_request_body_schema_for_every_post(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    posts = {path: ops["post"] for path, ops in spec["paths"].items() if "post" in ops}
    assert {"/v1/chat/completions", "/v1/completions", "/api/wallet/send", "/api/peers"} <= set(posts)
    for path, op in posts.items():
        content = op.get("requestBody", {}).get("content", {})
        # an upload (POST /v1/audio/transcriptions, POST /api/files) is a multipart form, as OpenAI's is
        schema = (content.get("application/json") or content.get("multipart/form-data") or {}).get("schema")
        assert schema and "$ref" in schema, f"POST {path} has no request body schema"
    chat = posts["/v1/chat/completions"]["responses"]["200"]["content"]
    assert "text/event-stream" in chat and "$ref" in chat["application/json"]["schema"]


def test_the_documented_response_models_match_what_the_builders_send() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    ChatCompletionOut.model_validate(chat_completion("chatcmpl-1", "m", "hi", "stop", usage))
    TextCompletionOut.model_validate(text_completion("cmpl-1", "m", "hi", "length", usage))
    TextCompletionOut.model_validate(text_completion("cmpl-1", "m", "hi", None, None, 5))


async def test_the_dashboard_is_served_from_the_package_with_module_types_and_a_same_origin_policy(
    client: httpx.AsyncClient,
) -> None:
    from avadios.services.gateway.api.web import load_assets

    page = await client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]  # nothing from a CDN can load
    assets = load_assets()
    assert {"app.js", "api.js", "style.css", "favicon.svg", "pages/chat.js", "pages/voice.js"} <= set(assets)
    for name, asset in assets.items():
        reply = await client.get(f"/ui/{name}")
        assert reply.status_code == 200 and reply.content == asset.body, name
        if name.endswith(".js"):  # browsers refuse ES modules served as anything but JavaScript
            assert reply.headers["content-type"].startswith("text/javascript"), name
    # Every module the page imports is one the package serves.
    for name in (n for n in assets if n.endswith(".js")):
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', assets[name].body.decode()):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            assert resolved in assets, f"{name} imports {target}, which is not served"
    favicon = await client.get("/favicon.ico")
    assert favicon.status_code == 200 and favicon.headers["content-type"] == "image/svg+xml"
    assert_error(await client.get("/ui/nope.js"), 404, "not_found")
    assert_error(await client.get("/ui/../app.py"), 404, "not_found")
    assert_error(await client.get("/ui/%2e%2e/api/web.py"), 404, "not_found")


def test_every_dashboard_file_is_package_data_so_a_wheel_carries_it() -> None:
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "avadios.services.gateway"
    ]
    web = root / "src" / "avadios" / "services" / "gateway" / "web"
    files = [p.relative_to(web.parent).as_posix() for p in web.rglob("*") if p.is_file()]
    assert files
    left_out = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not left_out, f"not in [tool.setuptools.package-data]: {left_out}"


async def test_a_write_from_another_site_is_refused_and_the_node_answers_only_its_own_names(tmp_path: Path) -> None:
    """On loopback the node needs no key, so a page on another site must not be able to make the browser upload,
    send AUTOM or chat through it (cross-site form posts need no preflight), nor reach it by DNS rebinding."""
    async with client_for(tmp_path) as client:
        body = {"model": "default", "prompt": "hi", "max_tokens": 2}
        evil = await client.post("/v1/completions", json=body, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_origin_refused"
        upload = await client.post("/api/files", files={"file": ("a.txt", b"x")}, headers={"Origin": "null"})
        assert upload.status_code == 403
        rebound = await client.get("/health", headers={"Host": "evil.example:8740"})
        assert rebound.status_code == 403 and "loopback" in rebound.json()["error"]["message"]
        own = await client.post("/v1/completions", json=body, headers={"Origin": "http://127.0.0.1:8740"})
        assert own.status_code == 200  # the dashboard itself
        assert (await client.post("/v1/completions", json=body)).status_code == 200  # scripts send no Origin
        by_name = await client.post("/v1/completions", json=body, headers={"Host": "localhost:8740"})
        assert by_name.status_code == 200


async def test_a_file_upload_has_its_own_body_limit_and_other_routes_keep_theirs(tmp_path: Path) -> None:
    app = build_app(fake_gateway(tmp_path, FakeInference(), FakeCache()))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # no storage service runs behind it here
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8740") as client:
        big = b"x" * (2 << 20)  # over the 1 MiB limit of every other body
        upload = await client.post("/api/files", files={"file": ("big.bin", big)})
        assert upload.status_code == 500  # past the body limit, into the route (which has no NATS here)
        refused = await client.post("/api/peers", content=big, headers={"content-type": "application/json"})
        assert_error(refused, 413, "request_too_large")
