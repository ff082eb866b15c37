"""Several replicas in one process, exchanging blocks and votes through the in-memory gossip hub."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from avadios.ledger.block import MAX_VOTE_HASHES, Block, block_hash, make_vote, verify_vote
from avadios.ledger.errors import BadVote
from avadios.ledger.wallet import Wallet
from avadios.services.ledger.audit import audit
from avadios.services.ledger.replica import LedgerChainSource, Replica
from avadios.v1 import ledger_pb2
from tests.ledger_support import FUNDS, Network, tip_of


@pytest.fixture
def net3(tmp_path: Path) -> Iterator[Network]:
    n = Network(tmp_path, 3, [Wallet.generate(), Wallet.generate()])
    yield n
    n.close()


def send(net: Network, at: Replica, sender: Wallet, to: Wallet, amount: int) -> Block:
    return sender.send(tip_of(at.ledger, sender.account), to.account, amount, net.network, net.clock())


def test_transfer_confirms_on_every_replica(net3: Network) -> None:
    a, b = net3.wallets
    block = send(net3, net3.replicas[0], a, b, 10)
    digest, confirmed = net3.replicas[0].submit(block)
    assert not confirmed  # one vote of three is not a quorum
    net3.hub.run()
    for replica in net3:
        assert replica.ledger.has_block(digest)
        assert replica.ledger.account(b.account).pending == 10
        assert not replica.unconfirmed()
        assert audit(replica.ledger).ok


def test_double_spend_ends_with_exactly_one_confirmed_everywhere(tmp_path: Path) -> None:
    net = Network(tmp_path, 5, [Wallet.generate(), Wallet.generate(), Wallet.generate()])
    try:
        a, b, c = net.wallets
        tip = tip_of(net.replicas[0].ledger, a.account)
        # Three conflicting blocks on one predecessor reach different replicas first: the votes split.
        blocks = [a.send(tip, to.account, FUNDS // 2, net.network, net.clock()) for to in (b, c, a)]
        for replica, block in zip(net.replicas, blocks, strict=False):
            replica.submit(block)
        net.settle(rounds=6)
        winners = {r.ledger.account(a.account).head for r in net}
        assert len(winners) == 1
        (winner,) = winners
        for replica in net:
            assert replica.ledger.account(a.account).height == 1
            assert not replica.unconfirmed(), "the losers are dropped everywhere"
            assert audit(replica.ledger).ok
            assert replica.ledger.votes(winner)
    finally:
        net.close()


def test_below_quorum_blocks_stay_unconfirmed_until_representatives_return(net3: Network) -> None:
    a, b = net3.wallets
    net3.hub.set_online("node1", False)
    net3.hub.set_online("node2", False)
    digest, confirmed = net3.replicas[0].submit(send(net3, net3.replicas[0], a, b, 10))
    net3.settle(rounds=2)
    assert not confirmed and not net3.replicas[0].ledger.has_block(digest)
    assert net3.replicas[0].is_unconfirmed(digest)
    net3.hub.set_online("node1", True)
    net3.settle(rounds=2)  # the election re-broadcasts its block and votes; two of three is a quorum
    assert net3.replicas[0].ledger.has_block(digest)
    assert net3.replicas[1].ledger.has_block(digest)


def test_a_lost_final_vote_is_repeated_until_the_block_confirms(net3: Network) -> None:
    # node1 casts its final vote while the network cannot hear it (on a devnet: its gateway was still starting);
    # a final vote never changes, so unless node1 repeats it, node0 waits one final vote short forever
    a, b = net3.wallets
    n0, n1 = net3.replicas[0], net3.replicas[1]
    net3.hub.set_online("node2", False)
    digest, _ = n0.submit(send(net3, n0, a, b, 10))
    delivered = [ledger_pb2.LedgerGossip.FromString(data) for _, target, data in net3.hub.queue if target == "node1"]
    net3.hub.queue.clear()
    for item in delivered:
        n1.on_gossip(item)
    assert n1.elections[(a.account, n0.ledger.account(a.account).head)].own_final == digest
    net3.hub.queue.clear()  # node1's votes are lost
    net3.hub.run()
    assert n0.is_unconfirmed(digest)
    net3.settle(rounds=2)
    assert n0.ledger.has_block(digest) and n1.ledger.has_block(digest)


def test_an_offline_node_catches_up_verifying_every_block(net3: Network) -> None:
    a, b = net3.wallets
    net3.hub.set_online("node2", False)
    n0 = net3.replicas[0]
    for amount in (1, 2, 3):
        n0.submit(send(net3, n0, a, b, amount))
        net3.hub.run()
    source = n0.ledger.account(a.account).head
    n0.submit(b.receive(tip_of(n0.ledger, b.account), source, 3, net3.network, net3.clock()))
    net3.hub.run()
    assert n0.ledger.confirmed_count == 4
    late = net3.replicas[2]
    assert late.ledger.confirmed_count == 0
    report = late.catch_up(LedgerChainSource(n0.ledger))
    assert (report.applied, report.rejected) == (4, 0)
    assert late.ledger.account(a.account).SerializeToString() == n0.ledger.account(a.account).SerializeToString()
    assert late.ledger.account(b.account).balance == FUNDS + 3
    assert audit(late.ledger).ok


class ForgedSource:
    """A peer that serves a chain with the votes stripped, or a block altered after signing."""

    def __init__(self, honest: LedgerChainSource, mode: str) -> None:
        self.honest, self.mode = honest, mode

    def frontiers(self) -> list[ledger_pb2.LedgerFrontier]:
        return self.honest.frontiers()

    def chain(self, account: bytes, from_height: int, limit: int) -> list[ledger_pb2.LedgerConfirmedBlock]:
        items = self.honest.chain(account, from_height, limit)
        for item in items:
            if self.mode == "no_votes":
                del item.votes[:]
            else:
                item.block.amount += 1
        return items


@pytest.mark.parametrize("mode", ["no_votes", "tampered"])
def test_catch_up_refuses_a_forged_chain(net3: Network, mode: str) -> None:
    a, b = net3.wallets
    net3.hub.set_online("node2", False)
    n0 = net3.replicas[0]
    n0.submit(send(net3, n0, a, b, 5))
    net3.hub.run()
    late = net3.replicas[2]
    report = late.catch_up(ForgedSource(LedgerChainSource(n0.ledger), mode))
    assert report.applied == 0 and report.rejected == 1
    assert late.ledger.account(a.account).balance == FUNDS


def test_votes_from_strangers_and_bad_signatures_are_ignored(net3: Network) -> None:
    from nacl.signing import SigningKey

    a, b = net3.wallets
    n0 = net3.replicas[0]
    digest, _ = n0.submit(send(net3, n0, a, b, 5))
    stranger = make_vote(SigningKey.generate(), [digest], True, net3.clock(), net3.network)
    forged = make_vote(SigningKey.generate(), [digest], True, net3.clock(), net3.network)
    forged.representative = net3.replicas[1].self_rep  # claims a real representative, signed by another key
    for vote in (stranger, forged):
        n0.on_gossip(ledger_pb2.LedgerGossip(vote=vote))
    assert not n0.ledger.has_block(digest)


def test_a_representative_cannot_sign_two_final_votes_in_one_slot(net3: Network) -> None:
    a, b = net3.wallets
    n0 = net3.replicas[0]
    tip = tip_of(n0.ledger, a.account)
    one, two = (a.send(tip, b.account, x, net3.network, net3.clock()) for x in (1, 2))
    d1, _ = n0.submit(one)
    n0.on_gossip(ledger_pb2.LedgerGossip(block=two))
    d2 = next(d for d in n0.elections[(a.account, tip.head)].candidates if d != d1)
    key = net3.keys[1]
    n0.on_gossip(ledger_pb2.LedgerGossip(vote=make_vote(key, [d2], True, net3.clock(), net3.network)))
    n0.on_gossip(ledger_pb2.LedgerGossip(vote=make_vote(key, [d1], True, net3.clock(), net3.network)))
    assert n0.equivocations == 1
    assert not n0.ledger.has_block(d1), "the second final vote does not count"


# ---- batched votes -----------------------------------------------------------------------------------------


def two_payments(net: Network, at: Replica) -> tuple[Block, Block]:
    a, b = net.wallets
    return send(net, at, a, b, 7), send(net, at, b, a, 9)


def test_a_batched_vote_counts_for_each_of_its_blocks(net3: Network) -> None:
    n0 = net3.replicas[0]
    one, two = two_payments(net3, n0)
    d1, _ = n0.submit(one)
    d2, _ = n0.submit(two)
    for key in net3.keys[1:]:
        n0.on_gossip(ledger_pb2.LedgerGossip(vote=make_vote(key, [d1, d2], True, net3.clock(), net3.network)))
    assert n0.ledger.has_block(d1) and n0.ledger.has_block(d2)
    assert audit(n0.ledger).ok
    batched = [v for v in n0.ledger.votes(d2) if len(v.block_hashes) == 2]
    assert len(batched) == 2, "each block keeps the batched votes that confirmed it"


def test_a_tampered_hash_list_fails_verification(net3: Network) -> None:
    import os

    n0 = net3.replicas[0]
    d1, _ = n0.submit(two_payments(net3, n0)[0])
    key, other = net3.keys[1], os.urandom(32)
    good = make_vote(key, [d1, other], True, net3.clock(), net3.network)
    verify_vote(good, net3.network)

    def tampered(change: Callable[[ledger_pb2.LedgerVote], object]) -> ledger_pb2.LedgerVote:
        vote = ledger_pb2.LedgerVote()
        vote.CopyFrom(good)
        change(vote)
        return vote

    variants = [
        tampered(lambda v: v.block_hashes.pop()),  # a hash dropped
        tampered(lambda v: v.block_hashes.append(os.urandom(32))),  # a hash added
        tampered(lambda v: v.block_hashes.reverse()),  # reordered
        tampered(lambda v: v.block_hashes.__setitem__(1, os.urandom(32))),  # one replaced
        tampered(lambda v: v.block_hashes.append(d1)),  # a block named twice
        tampered(lambda v: setattr(v, "final", False)),  # another phase
    ]
    for vote in variants:
        with pytest.raises(BadVote):
            verify_vote(vote, net3.network)
    with pytest.raises(BadVote):
        verify_vote(good, bytes(32))  # another network
    with pytest.raises(ValueError):
        make_vote(key, [os.urandom(32) for _ in range(MAX_VOTE_HASHES + 1)], True, net3.clock(), net3.network)
    for vote in variants:
        n0.on_gossip(ledger_pb2.LedgerGossip(vote=vote))
    assert not n0.ledger.has_block(d1)


def test_a_batch_mixing_a_known_and_an_unknown_block_counts_for_the_known_one(net3: Network) -> None:
    n0 = net3.replicas[0]
    one, two = two_payments(net3, n0)
    d1, _ = n0.submit(one)
    d2 = block_hash(two, net3.network)  # not seen by n0 yet
    for key in net3.keys[1:]:
        n0.on_gossip(ledger_pb2.LedgerGossip(vote=make_vote(key, [d2, d1], True, net3.clock(), net3.network)))
    assert n0.ledger.has_block(d1)
    assert not n0.ledger.has_block(d2)
    n0.on_gossip(ledger_pb2.LedgerGossip(block=two))  # the votes kept for it count when it arrives
    assert n0.ledger.has_block(d2)
    assert audit(n0.ledger).ok


def test_blocks_of_one_turn_share_one_vote_and_confirm_everywhere(net3: Network) -> None:
    scheduled: list[int] = []
    old = net3.replicas[0]
    n0 = Replica(old.ledger, net3.keys[0], clock=net3.clock, schedule_flush=lambda: scheduled.append(1))
    n0.gossip = net3.hub.join("node0", n0.on_gossip)
    net3.replicas[0] = n0
    d1, c1 = n0.submit(two_payments(net3, n0)[0])
    d2, c2 = n0.submit(two_payments(net3, n0)[1])
    assert not (c1 or c2) and n0.votes_signed == 0 and scheduled == [1], "one flush asked for, none signed yet"
    while n0.has_unsigned():
        n0.flush()
        net3.hub.run()
    assert n0.votes_signed == 2, "one normal and one final vote, each covering both blocks"
    for replica in net3:
        assert replica.ledger.has_block(d1) and replica.ledger.has_block(d2)
        assert audit(replica.ledger).ok
    assert any(list(v.block_hashes) == [d1, d2] for v in net3.replicas[1].ledger.votes(d1))
