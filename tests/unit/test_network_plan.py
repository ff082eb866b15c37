"""Planning a network request (who is asked, what is held), pricing in integer micro-AUTOM, the rule that stops a
lying scorer's reports from counting, and the verifier's job book across a restart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avadios.config import NodeConfig
from avadios.errors import NotFound, PaymentRequired
from avadios.services.verifier import pricing
from avadios.services.verifier.book import JobBook
from avadios.services.verifier.requester import Chosen, discredited, plan
from avadios.services.verifier.verdict import Vote
from avadios.v1 import discovery_pb2, inference_pb2, jobs_pb2, ledger_pb2, verifier_pb2

HASH = b"h" * 32


def _candidate(n: int, price: int, model_hash: bytes = HASH, streak: int = 0) -> discovery_pb2.RouteCandidate:
    return discovery_pb2.RouteCandidate(
        node_id=f"{n:064x}",
        address=f"/ip4/127.0.0.1/tcp/{4000 + n}/p2p/{n:064x}",
        price_micro_autom_per_1k=price,
        model_blake3=model_hash,
        payee=bytes([n]) * 32,
        verified_streak=streak,
    )


def _request(max_tokens: int = 16) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(model="m", prompt="What is the capital of France?")
    request.sampling.max_tokens = max_tokens
    return request


def _route(*candidates: discovery_pb2.RouteCandidate) -> discovery_pb2.RouteReply:
    return discovery_pb2.RouteReply(model="m", ranked=candidates)


@given(tokens=st.integers(0, 10**6), price=st.integers(0, 10**9))
def test_prices_are_whole_micro_autom_rounded_up_and_never_zero(tokens: int, price: int) -> None:
    paid = pricing.price_of(tokens, price)
    assert isinstance(paid, int) and paid >= 1
    assert paid * 1000 >= tokens * price  # never under the advertised price
    assert paid == 1 or (paid - 1) * 1000 < tokens * price  # and never a whole micro-AUTOM over it


def test_a_quote_never_exceeds_the_cap_that_was_held() -> None:
    request = _request(max_tokens=8)
    cap = pricing.cap(request, 8, 1000)
    assert pricing.quote(inference_pb2.Usage(prompt_tokens=10, completion_tokens=8), 1000, cap) == 18
    assert pricing.quote(inference_pb2.Usage(prompt_tokens=10**6, completion_tokens=8), 1000, cap) == cap


def test_the_best_providers_within_the_price_cap_are_asked_and_the_hold_covers_each() -> None:
    route = _route(_candidate(1, 100), _candidate(2, 5000), _candidate(3, 100), _candidate(4, 100))
    request = _request()
    cap = pricing.cap(request, 16, 100)
    chosen = plan(route, request, 3, max_price=3 * cap, holder=b"me" * 16, config=NodeConfig(), rng=random.Random(1))
    assert [c.node_id[-1] for c in chosen.chosen] == ["1", "3", "4"]  # node 2 would make the hold too big
    assert chosen.price_cap == cap and chosen.model_hash == HASH and chosen.verify


def test_no_provider_within_the_price_or_of_the_model_is_a_402_before_anything_moves() -> None:
    with pytest.raises(PaymentRequired, match="price cap") as info:
        plan(_route(_candidate(1, 10**6)), _request(), 3, 10, b"me" * 16, NodeConfig(), random.Random(1))
    assert info.value.reason == "no_provider"
    with pytest.raises(NotFound, match="no node on the network serves it") as unknown:
        plan(discovery_pb2.RouteReply(model="m"), _request(), 3, 10**6, b"me" * 16, NodeConfig(), random.Random(1))
    assert unknown.value.reason == "model_not_found"  # the same 404 as a model unknown on this node
    empty = discovery_pb2.RouteReply(
        model="m", excluded=[discovery_pb2.RouteCandidate(node_id="ab" * 32, excluded="did not answer a ping")]
    )
    with pytest.raises(PaymentRequired, match="did not answer a ping"):
        plan(empty, _request(), 3, 10**6, b"me" * 16, NodeConfig(), random.Random(1))


def test_only_providers_of_the_pinned_gguf_and_distinct_payees_are_asked() -> None:
    twin = _candidate(3, 100)
    twin.payee = _candidate(1, 100).payee  # the same wallet behind two nodes is paid once: asked once
    route = _route(_candidate(1, 100), _candidate(2, 100, model_hash=b"x" * 32), twin, _candidate(4, 100))
    chosen = plan(route, _request(), 3, 10**6, b"me" * 16, NodeConfig(), random.Random(1))
    assert [c.node_id[-1] for c in chosen.chosen] == ["1", "4"]


def test_a_trusted_provider_may_answer_alone_and_is_spot_checked_at_the_configured_rate() -> None:
    config = NodeConfig(network_trusted_streak=20, network_spot_check_rate=0.25)
    route = _route(_candidate(1, 100, streak=25), _candidate(2, 100))
    checks = [plan(route, _request(), 3, 10**6, b"me" * 16, config, random.Random(i)).verify for i in range(400)]
    assert len(plan(route, _request(), 3, 10**6, b"me" * 16, config, random.Random(0)).chosen) == 1
    untrusted = _route(_candidate(1, 100, streak=19), _candidate(2, 100))
    assert len(plan(untrusted, _request(), 3, 10**6, b"me" * 16, config, random.Random(0)).chosen) == 2
    assert 0.15 < sum(checks) / len(checks) < 0.35


def test_a_scorer_whose_own_answer_most_scorers_failed_is_not_believed() -> None:
    def chosen(key: bytes, votes: list[tuple[bytes, bool]]) -> Chosen:
        c = Chosen(_candidate(key[0], 1), 1, outcome="answered")
        c.result = _result(key)
        c.votes = [Vote(scorer, passed, 1.0 if passed else 0.0) for scorer, passed in votes]
        return c

    h1, h2, h3, liar = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x09" * 32
    answered = [
        chosen(h1, [(h2, True), (h3, True), (liar, False)]),
        chosen(h2, [(h1, True), (h3, True), (liar, False)]),
        chosen(h3, [(h1, True), (h2, True), (liar, False)]),
        chosen(liar, [(h1, False), (h2, False), (h3, False)]),
    ]
    assert discredited(answered) == {liar}


def _result(key: bytes) -> verifier_pb2.ProviderResult:
    return verifier_pb2.ProviderResult(provider_key=key, token_ids=[1, 2])


def test_the_job_book_keeps_jobs_and_waiting_refunds_across_a_restart(tmp_path: Path) -> None:
    book = JobBook(tmp_path / "verifier")
    for i in range(3):
        book.put(jobs_pb2.JobRecord(job_id=f"job-{i}", model="m", cost=i))
    book.put(jobs_pb2.JobRecord(job_id="job-1", model="m", cost=7))  # written again: the last copy wins
    hold = ledger_pb2.LedgerBlock(kind=ledger_pb2.BLOCK_KIND_HOLD, amount=30, expires_at_ms=5)
    book.keep_for_refund(hold, b"\x0a" * 32)
    with (tmp_path / "verifier" / "jobs.bin").open("ab") as f:
        f.write(b"\x00\x00\x01\x00half a record")  # a crash mid-write
    again = JobBook(tmp_path / "verifier")
    assert [(r.job_id, r.cost) for r in again.recent(10)] == [("job-1", 7), ("job-2", 2), ("job-0", 0)]
    assert again.refunds_waiting() == [(b"\x0a" * 32, hold)]
    again.refunded(b"\x0a" * 32)
    assert JobBook(tmp_path / "verifier").refunds_waiting() == []


def test_the_liar_knob_is_refused_outside_a_devnet_and_names_its_kinds(tmp_path: Path) -> None:
    from avadios import devnet
    from avadios.config import DEVNET_FAULTS, DEVNET_MARKER, load_config
    from avadios.services.verifier import liars
    from avadios.services.verifier.fault import FaultRefused, check_fault

    assert DEVNET_FAULTS == liars.KINDS  # the config's list is the liars' own
    with pytest.raises(FaultRefused, match="devnet nodes only"):
        check_fault("random", tmp_path)
    (tmp_path / DEVNET_MARKER).write_text("")
    assert check_fault("random", tmp_path) == "random" and check_fault("", tmp_path) == ""
    with pytest.raises(ValueError, match=r"bad value for devnet_fault .*must be one of"):
        load_config({"home": tmp_path, "devnet_fault": "sometimes"}, env={})
    assert devnet.parse_liars("random:1,wrong-model:1", 5) == {4: "random", 5: "wrong-model"}
    with pytest.raises(devnet.DevnetError, match="at least one node must be honest"):
        devnet.parse_liars("random:3", 3)
    with pytest.raises(devnet.DevnetError, match="KIND:N"):
        devnet.parse_liars("lazy:1", 3)


def test_devnet_nodes_never_share_a_port_though_none_is_bound_before_they_start(tmp_path: Path, monkeypatch) -> None:
    from avadios import devnet
    from avadios.testing.tiny_gguf import write_tiny_gguf

    model = write_tiny_gguf(tmp_path / "m.gguf")
    offers = iter(list(range(20_000, 20_004)) * 2 + list(range(20_004, 20_100)))  # every node is offered 20000+ first
    monkeypatch.setattr(random, "randrange", lambda low, high: next(offers))
    first = devnet.create_node(tmp_path, 1, model, [], {})
    second = devnet.create_node(tmp_path, 2, model, [], {})
    ports = [(n.api_port, n.nats_port, n.p2p_port, n.dht_port) for n in (first, second)]
    assert not set(ports[0]) & set(ports[1]), ports
