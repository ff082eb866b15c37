"""Paid network inference on a devnet of real nodes (real NATS, ledger, llama.cpp on a generated tiny GGUF, P2P
over TLS on 127.0.0.1): a request goes to N providers, their answers are verified by re-scoring, the agreeing
ones are paid exactly their quotes, and lying providers are rejected, unpaid and soon no longer routed to.

One devnet of seven nodes serves every test here, in order:
    node 1  requester that holds the model: it re-scores every answer itself
    node 2  requester that does not hold it (its only model is another tiny GGUF): its providers score each other
    node 3-5  honest providers (price 1,000 micro-AUTOM per 1k tokens)
    node 6  lies with another model's answer, node 7 with faked logprobs (both price 1: cheaper, so routing
            prefers them)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from avadios import devnet
from avadios.testing.tiny_gguf import write_tiny_gguf
from tests.helpers import eventually

pytestmark = pytest.mark.slow
MODEL = "devnet-tiny"
FAST = {
    "ping_interval_s": 1.0,
    "dht_rpc_timeout_s": 1.0,
    "dead_after_failures": 3,
    "network_timeout_s": 20.0,
    "network_hold_s": 30.0,
    "wallet_auto_receive_s": 1.0,
}
HONEST_PRICE = 1000
CHAT = [{"role": "user", "content": "Name a colour."}]


@dataclass
class Net:
    directory: Path
    nodes: list[devnet.DevnetNode]

    def node(self, index: int) -> devnet.DevnetNode:
        return self.nodes[index - 1]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    directory = tmp_path_factory.mktemp("paidnet")
    model = write_tiny_gguf(directory / f"{MODEL}.gguf")
    own = write_tiny_gguf(directory / "requester-own.gguf", seed=3)
    plans: list[dict[str, Any]] = [
        {},
        {"default_model_path": str(own)},
        {"price_micro_autom_per_1k": HONEST_PRICE},
        {"price_micro_autom_per_1k": HONEST_PRICE},
        {"price_micro_autom_per_1k": HONEST_PRICE},
        {"price_micro_autom_per_1k": 1, "devnet_fault": "wrong-model"},
        {"price_micro_autom_per_1k": 1, "devnet_fault": "fake-logprobs"},
    ]
    nodes: list[devnet.DevnetNode] = []
    for index, extra in enumerate(plans, 1):
        bootstrap = [nodes[-1].multiaddr] if nodes else []
        nodes.append(devnet.create_node(directory, index, model, bootstrap, {**FAST, **extra}))
    devnet.write_genesis(directory, nodes)
    try:
        for node in nodes:
            devnet.start(node)
        devnet.wait_healthy(nodes, timeout=240)
        yield Net(directory, nodes)
    finally:
        for node in nodes:
            devnet.stop(node)


def api(node: devnet.DevnetNode, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, node.api_url + path, timeout=120.0, **kwargs)


def wallet(node: devnet.DevnetNode) -> dict[str, int]:
    body = api(node, "GET", "/api/wallet").json()
    return {k: int(body[k]) for k in ("spendable", "held", "pending")}


def chat(node: devnet.DevnetNode, tier: str | None = None, **avadios: Any) -> httpx.Response:
    headers = {"X-Avadios-Tier": tier} if tier else {}
    body: dict[str, Any] = {"model": MODEL, "messages": CHAT, "temperature": 0, "max_tokens": 8}
    if avadios:
        body["avadios"] = avadios
    return api(node, "POST", "/v1/chat/completions", json=body, headers={**headers, "Cache-Control": "no-store"})


def p2p_sent(node: devnet.DevnetNode, body_type: str) -> float:
    """P2P messages of one body type this node has sent (the gateway's /metrics counts every one)."""
    prefix = f'avadios_p2p_messages_total{{direction="out",type="{body_type}"}}'
    lines = [line for line in api(node, "GET", "/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def route(node: devnet.DevnetNode) -> dict[str, Any]:
    body: dict[str, Any] = api(node, "GET", f"/api/route/{MODEL}").json()
    return body


def last_job(node: devnet.DevnetNode) -> dict[str, Any]:
    job: dict[str, Any] = api(node, "GET", "/api/jobs?limit=1").json()["jobs"][0]
    return job


def wait_for_providers(node: devnet.DevnetNode, count: int) -> None:
    eventually(lambda: len(route(node).get("ranked", [])) >= count, 90, f"{count} routable providers")


def test_a_local_model_is_answered_locally_and_nothing_leaves_the_node(net: Net) -> None:
    requester = net.node(1)
    wait_for_providers(requester, 5)
    verifier = api(requester, "GET", "/health").json()["services"]["verifier"]
    assert [v["status"] for v in verifier] == ["serving"]  # the node's network tier is one of its services
    pings = p2p_sent(requester, "avadios.v1.PingRequest")
    for _ in range(3):
        reply = chat(requester)
        assert reply.status_code == 200 and reply.headers["x-avadios-tier"] == "1"
        assert "x-avadios-job" not in reply.headers
    # the node talks to peers all along (discovery pings them: the counter counts), but no offer went out
    assert pings > 0
    assert p2p_sent(requester, "avadios.v1.JobOffer") == p2p_sent(requester, "avadios.v1.ScoreJob") == 0
    assert api(requester, "GET", "/api/jobs").json()["jobs"] == []


def test_a_liar_majority_fails_cleanly_and_the_liars_are_rejected_unpaid_and_unrouted(net: Net) -> None:
    requester = net.node(1)
    liars = {net.node(6).node_id, net.node(7).node_id}
    # The two liars are the cheapest providers, so they are asked, beside the best honest one.
    ranked = [c["node_id"] for c in route(requester)["ranked"]]
    assert set(ranked[:2]) == liars, ranked
    reply = chat(requester, "network", replicas=3)
    assert reply.status_code == 502 and reply.json()["error"]["code"] == "verification_failed"
    job = last_job(requester)
    outcomes = {p["node_id"]: p for p in job["providers"]}
    assert not job["accepted"] and job["scored_by"] == "requester"
    for liar in liars:
        assert outcomes[liar]["outcome"] == "rejected" and outcomes[liar]["paid_micro"] == 0
        assert outcomes[liar]["reason"]
    honest = [p for p in job["providers"] if p["node_id"] not in liars]
    # The honest answer passed its score: its work is paid even though no majority formed.
    assert len(honest) == 1 and honest[0]["outcome"] == "outvoted"
    assert honest[0]["paid_micro"] == honest[0]["quoted_micro"] == job["cost_micro"] > 0
    after = route(requester)
    excluded = {c["node_id"]: c["excluded"] for c in after["excluded"]}
    assert liars <= set(excluded) and all("below the floor" in excluded[n] for n in liars)
    assert not liars & {c["node_id"] for c in after["ranked"]}


def test_three_honest_providers_are_paid_exactly_their_quotes_and_money_is_conserved(net: Net) -> None:
    requester = net.node(1)
    providers = [net.node(i) for i in (3, 4, 5)]
    local = chat(requester).json()["choices"][0]["message"]["content"]
    # earlier tests' settles and payments have landed: no hold open, nothing a provider has yet to claim
    eventually(
        lambda: wallet(requester)["held"] == 0 and all(wallet(n)["pending"] == 0 for n in providers),
        30,
        "earlier payments settled and claimed",
    )
    before = {n.index: wallet(n) for n in (requester, *providers)}
    client = OpenAI(base_url=requester.api_url + "/v1", api_key="unused-on-loopback")
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=CHAT,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        extra_headers={"X-Avadios-Tier": "network", "Cache-Control": "no-store"},
        extra_body={"avadios": {"replicas": 3, "max_price": "0.01"}},
    )
    answer = raw.parse()
    assert raw.headers["x-avadios-tier"] == "network" and raw.headers["x-avadios-verdict"] == "accepted"
    # greedy decoding of the same GGUF: the verified network answer is the local one
    assert answer.choices[0].message.content == local
    job = last_job(requester)
    assert job["job_id"] == raw.headers["x-avadios-job"] and job["accepted"]
    assert {p["node_id"] for p in job["providers"]} == {n.node_id for n in providers}
    for p in job["providers"]:
        assert p["outcome"] == "agreed" and p["score"] > 0.5 and p["paid_micro"] == p["quoted_micro"] > 0
    cost = sum(p["paid_micro"] for p in job["providers"])
    assert cost == job["cost_micro"] == int(raw.headers["x-avadios-cost"])
    paid = {n.index: next(p["paid_micro"] for p in job["providers"] if p["node_id"] == n.node_id) for n in providers}

    def settled() -> bool:
        now = {n.index: wallet(n) for n in (requester, *providers)}
        lost = before[1]["spendable"] - now[1]["spendable"]
        earned = {i: now[i]["spendable"] - before[i]["spendable"] for i in paid}
        return now[1]["held"] == 0 and lost == cost and earned == paid  # auto-receive claimed every payment

    eventually(settled, 30, "the requester paid exactly the cost and each provider received its quote")


def test_a_streamed_network_request_gets_the_verified_answer_as_server_sent_events(net: Net) -> None:
    requester = net.node(1)
    client = OpenAI(base_url=requester.api_url + "/v1", api_key="unused-on-loopback")
    whole = chat(requester).json()["choices"][0]["message"]["content"]
    stream: Any = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        stream=True,
        extra_headers={"X-Avadios-Tier": "network", "Cache-Control": "no-store"},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == whole
    assert last_job(requester)["accepted"]


def test_a_request_no_one_can_be_paid_for_is_refused_before_any_autom_moves(net: Net) -> None:
    requester = net.node(1)
    before = wallet(requester)
    cheap = chat(requester, "network", replicas=3, max_price="0.000001")
    assert cheap.status_code == 402 and cheap.json()["error"]["code"] == "no_provider"
    assert "price cap" in cheap.json()["error"]["message"]
    assert wallet(requester) == before


def test_providers_score_each_other_for_a_requester_without_the_model(net: Net) -> None:
    requester = net.node(2)  # does not hold devnet-tiny: "auto" sends it to the network by itself
    wait_for_providers(requester, 6)
    reply = chat(requester, replicas=6)
    assert reply.status_code == 200 and reply.headers["x-avadios-tier"] == "network", reply.text
    job = last_job(requester)
    assert job["scored_by"] == "providers" and job["accepted"]
    outcomes = {p["node_id"]: p["outcome"] for p in job["providers"]}
    liars = {net.node(6).node_id, net.node(7).node_id}
    assert all(outcomes[n] == "rejected" for n in liars), outcomes
    assert sorted(o for n, o in outcomes.items() if n not in liars) == ["agreed"] * 4
    assert all(p["paid_micro"] == 0 for p in job["providers"] if p["node_id"] in liars)


def test_a_wallet_too_poor_to_hold_the_price_gets_402_insufficient_funds(net: Net) -> None:
    requester = net.node(1)
    eventually(lambda: wallet(requester)["held"] == 0 and wallet(requester)["pending"] == 0, 30, "settled")
    spendable = wallet(requester)["spendable"]
    keep = 5  # micro-AUTOM: far below what a hold for three providers needs
    to = api(net.node(3), "GET", "/api/wallet").json()["address"]
    sent = api(
        requester, "POST", "/api/wallet/send", json={"to": to, "amount_micro": spendable - keep, "wait_confirmed": True}
    )
    assert sent.status_code == 200, sent.text
    reply = chat(requester, "network", replicas=3)
    assert reply.status_code == 402 and reply.json()["error"]["code"] == "insufficient_funds"
    assert wallet(requester)["spendable"] == keep and wallet(requester)["held"] == 0
