"""What a peer's ledger gossip must look like before the ledger uses any item of it."""

from __future__ import annotations

import pytest

from avadios.ledger.block import make_vote
from avadios.ledger.errors import LedgerError
from avadios.ledger.gossip_check import MAX_GOSSIP_ITEMS, check_gossip_batch
from avadios.ledger.wallet import ChainTip, Wallet
from avadios.v1 import ledger_pb2

NETWORK = bytes(32)


def _block() -> ledger_pb2.LedgerBlock:
    sender = Wallet.generate()
    return sender.send(ChainTip(balance=10), Wallet.generate().account, 5, NETWORK)


def _vote(count: int = 1) -> ledger_pb2.LedgerVote:
    return make_vote(Wallet.generate().signing_key, [bytes([i]) * 32 for i in range(count)], False, 1, NETWORK)


def test_a_well_formed_batch_passes_the_door() -> None:
    check_gossip_batch(ledger_pb2.LedgerGossipBatch(items=[{"block": _block()}, {"vote": _vote(32)}]))


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([], "1 to 256 items"),
        ([ledger_pb2.LedgerGossip()], "neither a block nor a vote"),
        ([{"vote": _vote()}] * (MAX_GOSSIP_ITEMS + 1), "1 to 256 items"),
    ],
)
def test_malformed_batches_are_refused_with_a_reason(items: list, reason: str) -> None:
    with pytest.raises(LedgerError, match=reason):
        check_gossip_batch(ledger_pb2.LedgerGossipBatch(items=items))


def test_oversized_votes_and_misshapen_blocks_are_refused_naming_the_item() -> None:
    vote = _vote()
    vote.block_hashes.extend([bytes([200 + i]) * 32 for i in range(32)])
    with pytest.raises(LedgerError, match="item 1: a vote covers 1 to 32"):
        check_gossip_batch(ledger_pb2.LedgerGossipBatch(items=[{"vote": _vote()}, {"vote": vote}]))
    block = _block()
    block.account = b"short"
    with pytest.raises(LedgerError, match="item 0: account must be 32 bytes"):
        check_gossip_batch(ledger_pb2.LedgerGossipBatch(items=[{"block": block}]))
