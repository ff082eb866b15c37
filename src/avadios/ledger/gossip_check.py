"""The shape a peer's ledger gossip must have before any item is used: counts, one block or vote per item, sizes.
Signatures need the network id and are checked next, by the ledger service."""

from __future__ import annotations

from avadios.errors import AvadiosError, InvalidArgument
from avadios.ledger.block import HASH_BYTES, KEY_BYTES, MAX_VOTE_HASHES, SIGNATURE_BYTES, check_shape
from avadios.v1 import ledger_pb2

MAX_GOSSIP_ITEMS = 256


def check_gossip_batch(batch: ledger_pb2.LedgerGossipBatch) -> None:
    """Raise InvalidArgument naming the first item that is malformed (an honest peer never sends one)."""
    if not 0 < len(batch.items) <= MAX_GOSSIP_ITEMS:
        raise InvalidArgument(f"a gossip batch holds 1 to {MAX_GOSSIP_ITEMS} items, not {len(batch.items)}")
    for index, item in enumerate(batch.items):
        try:
            which = item.WhichOneof("item")
            if which == "block":
                check_shape(item.block)
            elif which == "vote":
                vote = item.vote
                if len(vote.representative) != KEY_BYTES or len(vote.signature) != SIGNATURE_BYTES:
                    raise InvalidArgument("a vote needs a 32-byte representative and a 64-byte signature")
                hashes = vote.block_hashes
                if not 0 < len(hashes) <= MAX_VOTE_HASHES or any(len(h) != HASH_BYTES for h in hashes):
                    raise InvalidArgument(f"a vote covers 1 to {MAX_VOTE_HASHES} hashes of {HASH_BYTES} bytes")
            else:
                raise InvalidArgument("the item holds neither a block nor a vote")
        except AvadiosError as exc:
            raise InvalidArgument(f"gossip item {index}: {exc.message}") from None
