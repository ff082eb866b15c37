"""The ledger's door for what peers send: gossip batches and catch-up pages are checked (counts, shapes, sizes, no
protobuf unknown fields, signatures) and re-encoded to their canonical form before the ledger uses any item.

A peer is anyone on the network, with no key we know and no funds. What it sends is refused whole, with the first
bad item's reason, when any item is malformed: an honest peer never sends one. Nothing a peer sent is kept or sent
on as it came: only the fields we read, re-encoded (a copy made after the checks), so bytes a third party added to
someone's block or vote (the hash and the signature do not cover unknown fields) never reach the store.

Catch-up pages come back from a peer we asked; a page that breaks the protocol (more than asked, out of order,
another account, a gap) raises `BadPeerReply`, and the caller stops asking that peer for a while.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import blake3

from avadios.ledger.block import (
    HASH_BYTES,
    KEY_BYTES,
    MAX_BLOCK_BYTES,
    MAX_VOTE_BYTES,
    MAX_VOTE_HASHES,
    SIGNATURE_BYTES,
    canonical,
    check_shape,
    verify_block,
    verify_vote,
)
from avadios.ledger.errors import BadGossip, BadPeerReply, BadVote, LedgerError, NonCanonical
from avadios.v1 import ledger_pb2

MAX_GOSSIP_ITEMS = 256
# The most a batch can weigh with every item at its largest; a bigger one carries bytes no rule reads.
MAX_BATCH_BYTES = MAX_GOSSIP_ITEMS * (MAX_BLOCK_BYTES + 8)
MAX_PAGE = 1000  # frontiers or blocks one catch-up page may hold (what GetFrontiers and GetChain serve at most)
RECENTLY_PASSED = 16384  # items whose canonical bytes passed the signature checks lately (32 bytes each)

Gossiped = ledger_pb2.LedgerGossip


def _check_vote_shape(vote: ledger_pb2.LedgerVote) -> None:
    if len(vote.representative) != KEY_BYTES or len(vote.signature) != SIGNATURE_BYTES:
        raise BadVote("a vote needs a 32-byte representative and a 64-byte signature")
    hashes = vote.block_hashes
    if not 0 < len(hashes) <= MAX_VOTE_HASHES or any(len(h) != HASH_BYTES for h in hashes):
        raise BadVote(f"a vote covers 1 to {MAX_VOTE_HASHES} hashes of {HASH_BYTES} bytes")


def check_item(item: Gossiped) -> Gossiped:
    """One gossip item's shape, size and fields; returns its canonical copy."""
    which = item.WhichOneof("item")
    if which == "block":
        clean = canonical(item, MAX_BLOCK_BYTES + 8, "a block item")
        check_shape(clean.block)
    elif which == "vote":
        clean = canonical(item, MAX_VOTE_BYTES + 8, "a vote item")
        _check_vote_shape(clean.vote)
    else:
        raise BadGossip("the item holds neither a block nor a vote")
    return clean


def check_gossip_batch(batch: ledger_pb2.LedgerGossipBatch) -> list[Gossiped]:
    """Everything a gossip batch must satisfy before its signatures are checked: an item count, one block or vote
    per item, every field's size, each block's shape, no unknown fields anywhere. Returns the canonical items."""
    count = len(batch.items)
    if not 0 < count <= MAX_GOSSIP_ITEMS:
        raise BadGossip(f"a gossip batch holds 1 to {MAX_GOSSIP_ITEMS} items, not {count}")
    size = batch.ByteSize()
    if size > MAX_BATCH_BYTES:
        raise NonCanonical(f"a gossip batch of {size} bytes is over the limit of {MAX_BATCH_BYTES}")
    items = []
    for index, item in enumerate(batch.items):
        try:
            items.append(check_item(item))
        except LedgerError as exc:
            raise type(exc)(f"gossip item {index}: {exc.message}") from None
    # the batch message itself may carry unknown fields too: they are dropped with it (only items go on)
    return items


class GossipDoor:
    """The checks that need the network: signatures (block hashes and votes sign for one network) and whether a
    voter is a representative of the genesis. An item whose exact canonical bytes passed lately is not verified
    again: peers repeat open elections every 2 s, and a replayed item then costs a hash, not a signature check."""

    def __init__(self, network: bytes, weight_of: Callable[[bytes], int], representatives: int) -> None:
        self.network = network
        self.weight_of = weight_of
        self.representatives = representatives
        self._passed: OrderedDict[bytes, None] = OrderedDict()

    def admit(self, batch: ledger_pb2.LedgerGossipBatch) -> list[Gossiped]:
        """The batch's items in canonical form, each signature checked; one bad item refuses the whole batch."""
        items = check_gossip_batch(batch)
        fresh = []
        for index, item in enumerate(items):
            key = blake3.blake3(item.SerializeToString()).digest()
            if key in self._passed:
                continue
            try:
                if item.HasField("block"):
                    verify_block(item.block, self.network)
                else:
                    if not self.weight_of(item.vote.representative):
                        raise BadVote("the vote's representative is not listed in this network's genesis")
                    verify_vote(item.vote, self.network)
            except LedgerError as exc:
                raise type(exc)(f"gossip item {index}: {exc.message}") from None
            fresh.append(key)
        for key in fresh:  # only once the whole batch passed
            self._passed[key] = None
        while len(self._passed) > RECENTLY_PASSED:
            self._passed.popitem(last=False)
        return items

    # ---- catch-up pages ------------------------------------------------------------------------------------

    def frontiers_page(
        self, reply: ledger_pb2.LedgerFrontiersReply, start: bytes, limit: int
    ) -> list[ledger_pb2.LedgerFrontier]:
        """A page of a peer's account heads: at most `limit`, accounts ascending from `start` (inclusive)."""
        fronts = reply.frontiers
        if len(fronts) > limit:
            raise BadPeerReply(f"asked for {limit} frontiers, got {len(fronts)}")
        out, last = [], start
        for index, front in enumerate(fronts):
            clean = _canonical_page_item(front, 128, f"frontier {index}")
            if len(clean.account) != KEY_BYTES or len(clean.head) != HASH_BYTES or clean.height < 1:
                raise BadPeerReply(f"frontier {index} is not a 32-byte account with a head and a height")
            if clean.account < last or (clean.account == last and index > 0):
                raise BadPeerReply(f"frontier {index} is out of order (accounts ascend from the page's start)")
            last = clean.account
            out.append(clean)
        return out

    def chain_page(
        self, reply: ledger_pb2.LedgerChainReply, account: bytes, from_height: int, limit: int
    ) -> list[ledger_pb2.LedgerConfirmedBlock]:
        """A page of one confirmed chain: at most `limit` blocks of `account`, heights from `from_height` without a
        gap, each block canonical and well formed, with at most one vote per representative. Signatures, the link
        to our head and the quorum are the replica's to check, block by block, when it applies them."""
        items = reply.blocks
        if len(items) > limit:
            raise BadPeerReply(f"asked for {limit} blocks, got {len(items)}")
        out = []
        most = MAX_BLOCK_BYTES + self.representatives * (MAX_VOTE_BYTES + 8) + 16
        for index, item in enumerate(items):
            height = from_height + index
            clean = _canonical_page_item(item, most, f"block {index}")
            block = clean.block
            if block.account != account or block.height != height:
                raise BadPeerReply(f"block {index} of the page is not {account.hex()[:16]}@{height}")
            if len(clean.votes) > self.representatives:
                raise BadPeerReply(f"block {index} comes with more votes than there are representatives")
            try:
                check_shape(block)
                for vote in clean.votes:
                    _check_vote_shape(vote)
            except LedgerError as exc:
                raise BadPeerReply(f"block {index} of the page: {exc.message}") from None
            if len({v.representative for v in clean.votes}) != len(clean.votes):
                raise BadPeerReply(f"block {index} comes with two votes of one representative")
            out.append(clean)
        return out


_M = TypeVar("_M", ledger_pb2.LedgerFrontier, ledger_pb2.LedgerConfirmedBlock)


def _canonical_page_item(message: _M, limit: int, what: str) -> _M:
    try:
        return canonical(message, limit, what)
    except NonCanonical as exc:
        raise BadPeerReply(exc.message) from None
