"""What a requester does with bad results: each is refused with a reason, counts against its sender, and nothing is
paid for it. The providers here are scripted peers behind a stand-in door (the devnet tests run real ones)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from avadios.config import NodeConfig
from avadios.errors import DeadlineExceeded
from avadios.identity import Identity
from avadios.ledger.client import BlockResult
from avadios.ledger.wallet import Wallet
from avadios.services.verifier.book import JobBook
from avadios.services.verifier.requester import Requester
from avadios.services.verifier.signing import sign_result
from avadios.v1 import discovery_pb2, inference_pb2, jobs_pb2, ledger_pb2, verifier_pb2

MODEL_HASH = b"m" * 32


class Peer:
    def __init__(self, index: int) -> None:
        self.identity = Identity(SigningKey.generate())
        self.index = index

    @property
    def candidate(self) -> discovery_pb2.RouteCandidate:
        return discovery_pb2.RouteCandidate(
            node_id=self.identity.node_id,
            address=f"/ip4/127.0.0.1/tcp/{4000 + self.index}/p2p/{self.identity.node_id}",
            price_micro_autom_per_1k=100,
            model_blake3=MODEL_HASH,
            payee=bytes([self.index]) * 32,
        )

    def answer(self, request_id: str, **changes: Any) -> verifier_pb2.ProviderResult:
        result = verifier_pb2.ProviderResult(
            request_id=request_id,
            model_hash=MODEL_HASH,
            token_ids=[5, 6, 7],
            text="abc",
            logprobs=[-0.1, -0.2, -0.3],
            finish_reason="length",
            price=3,
        )
        result.usage.prompt_tokens, result.usage.completion_tokens = 10, 3
        for name, value in changes.items():
            if isinstance(value, list):
                del getattr(result, name)[:]
                getattr(result, name).extend(value)
            else:
                setattr(result, name, value)
        return sign_result(self.identity, result)


class Door:
    """Answers each offer the way the test scripted that peer to."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.offers: list[jobs_pb2.JobOffer] = []

    async def send(self, peer: str, body: Any, reply_class: Any, timeout: float = 10.0) -> Any:
        assert isinstance(body, jobs_pb2.JobOffer)
        self.offers.append(body)
        answer = self.answers[peer.rsplit("/", 1)[-1]]
        outcome = answer(body)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


class Discovery:
    def __init__(self, peers: list[Peer]) -> None:
        self.peers = peers
        self.verdicts: list[discovery_pb2.Verdict] = []

    async def Route(self, request: Any, timeout: float = 30.0) -> discovery_pb2.RouteReply:
        return discovery_pb2.RouteReply(model=request.model, ranked=[p.candidate for p in self.peers])

    async def RecordVerdicts(self, request: discovery_pb2.RecordVerdictsRequest) -> Any:
        self.verdicts.extend(request.verdicts)


class WalletClientStandIn:
    def __init__(self) -> None:
        self.wallet = Wallet.generate()
        self.settles: list[Any] = []

    async def hold(self, request_id: bytes, payees: Any, price_cap: int, ttl_ms: int) -> BlockResult:
        block = ledger_pb2.LedgerBlock(kind=ledger_pb2.BLOCK_KIND_HOLD, amount=price_cap * len(payees))
        block.expires_at_ms = 1_000 + ttl_ms
        return BlockResult(b"H" * 32, block, True)

    async def settle(self, hold: Any, paid: Any, unpaid: Any) -> BlockResult:
        self.settles.append((paid, unpaid))
        return BlockResult(b"S" * 32, ledger_pb2.LedgerBlock(), True)


def test_bad_results_are_refused_with_a_reason_count_against_their_senders_and_are_not_paid(tmp_path: Path) -> None:
    peers = [Peer(i) for i in range(1, 6)]
    stranger = Peer(9)
    earlier = peers[0].answer("an-earlier-request")
    scripts = {
        # a malformed result: one logprob for three tokens
        peers[0].identity.node_id: lambda offer: peers[0].answer(offer.request_id, logprobs=[-0.1]),
        # an answer to another request, replayed as it was signed
        peers[1].identity.node_id: lambda offer: earlier,
        # a result signed by a node that was not asked
        peers[2].identity.node_id: lambda offer: stranger.answer(offer.request_id),
        # a quote above the hold's price cap
        peers[3].identity.node_id: lambda offer: peers[3].answer(offer.request_id, price=offer.price_cap + 1),
        # silence until the deadline
        peers[4].identity.node_id: lambda offer: DeadlineExceeded("Peer.Send did not answer within 20 s"),
    }
    discovery, door, wallet = Discovery(peers), Door(scripts), WalletClientStandIn()
    book = JobBook(tmp_path / "verifier")
    requester = Requester(
        NodeConfig(home=tmp_path),
        Identity(SigningKey.generate()),
        wallet,  # type: ignore[arg-type]
        discovery,  # type: ignore[arg-type]
        door,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # never reached: no result is valid enough to be scored
        book,
    )
    request = inference_pb2.GenerateRequest(model="m", prompt="hi")
    request.sampling.max_tokens = 3
    reply = asyncio.run(requester.run(jobs_pb2.JobRequest(request=request, replicas=5, max_price=10**6)))

    job = reply.job
    assert not job.accepted and job.cost == 0 and wallet.settles == []  # nothing paid
    reasons = {p.node_id: (p.outcome, p.reason) for p in job.providers}
    assert reasons[peers[0].identity.node_id][0] == "rejected" and "logprobs" in reasons[peers[0].identity.node_id][1]
    assert "answers request" in reasons[peers[1].identity.node_id][1]
    assert "another node than the one asked" in reasons[peers[2].identity.node_id][1]
    assert "outside 1.." in reasons[peers[3].identity.node_id][1]
    assert reasons[peers[4].identity.node_id] == ("no answer", "Peer.Send did not answer within 20 s")
    # every one of them counts against its sender; the hold waits on disk for its refund at expiry
    assert {v.node_id for v in discovery.verdicts if not v.accepted} == {p.identity.node_id for p in peers}
    assert [digest for digest, _ in book.refunds_waiting()] == [b"H" * 32]
    assert job.refund_at_unix_ms > 0 and book.recent(1)[0].job_id == job.job_id
    # every provider got the same offer, pinned to the model's hash and the hold
    assert {o.hold for o in door.offers} == {b"H" * 32} and {o.model_hash for o in door.offers} == {MODEL_HASH}


def test_a_request_cut_short_after_its_hold_keeps_the_hold_for_its_refund(tmp_path: Path) -> None:
    peer = Peer(1)

    def crash(offer: jobs_pb2.JobOffer) -> Exception:
        raise RuntimeError("the gateway's deadline cancelled the request")

    book = JobBook(tmp_path / "verifier")
    requester = Requester(
        NodeConfig(home=tmp_path),
        Identity(SigningKey.generate()),
        WalletClientStandIn(),  # type: ignore[arg-type]
        Discovery([peer]),  # type: ignore[arg-type]
        Door({peer.identity.node_id: crash}),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        book,
    )
    request = inference_pb2.GenerateRequest(model="m", prompt="hi")
    request.sampling.max_tokens = 3
    with pytest.raises(RuntimeError, match="deadline"):
        asyncio.run(requester.run(jobs_pb2.JobRequest(request=request, replicas=1, max_price=10**6)))
    assert [digest for digest, _ in book.refunds_waiting()] == [b"H" * 32]  # the money is not stuck in the hold
