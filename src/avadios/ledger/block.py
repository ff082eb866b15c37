"""Blocks and votes: the canonical signed byte form, hashes, signatures, and shape checks at the door."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias, TypeVar

import blake3
import nacl.bindings
import nacl.exceptions
from google.protobuf.message import Message
from nacl.signing import SigningKey

from avadios.ledger.amount import MAX_AMOUNT
from avadios.ledger.errors import BadSignature, BadVote, MalformedBlock, NonCanonical
from avadios.v1 import ledger_pb2

Block: TypeAlias = ledger_pb2.LedgerBlock
Vote: TypeAlias = ledger_pb2.LedgerVote
Kind = ledger_pb2.LedgerBlockKind

SEND = ledger_pb2.BLOCK_KIND_SEND
RECEIVE = ledger_pb2.BLOCK_KIND_RECEIVE
HOLD = ledger_pb2.BLOCK_KIND_HOLD
SETTLE = ledger_pb2.BLOCK_KIND_SETTLE
REFUND = ledger_pb2.BLOCK_KIND_REFUND
KIND_NAMES = {SEND: "send", RECEIVE: "receive", HOLD: "hold", SETTLE: "settle", REFUND: "refund"}

HASH_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
ZERO_HASH = bytes(HASH_BYTES)
MAX_REQUEST_ID = 64
MAX_PAYEES = 32
# A block may be stamped this far in a replica's future (clocks differ), and no more. Every rule that turns on
# time allows for it: a release that needs a hold to have expired is stamped at least this far past the expiry,
# so no replica accepts it before the expiry by its own clock.
MAX_CLOCK_SKEW_MS = 60_000
# A hold binds its holder for at least this long (a shorter promise is worth nothing to a payee) and at most this
# long (a hold is not a savings account: held money always comes back within a week).
MIN_HOLD_MS = 10_000
MAX_HOLD_MS = 7 * 24 * 3600 * 1000
# The largest valid block (a settle of 32 payees) encodes in about 1.7 kB and the largest vote (32 hashes) in
# about 1.2 kB: anything larger carries bytes no rule reads.
MAX_BLOCK_BYTES = 2048
MAX_VOTE_BYTES = 1536
UnpaidReason = ledger_pb2.LedgerUnpaidReason
UNPAID_REASONS = frozenset(v for v in ledger_pb2.LedgerUnpaidReason.values() if v)
# The hash covers a domain tag and the network (genesis hash): a block signed for one network is
# meaningless on another, and a vote signature can never pass as a block signature.
BLOCK_DOMAIN = b"avadios-ledger-block-v1\x00"
VOTE_DOMAIN = b"avadios-ledger-vote-v2\x00"  # v2: one vote covers a list of block hashes

_FIXED = struct.Struct(">B32s32sQQQ")
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")


def _var(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data


def canonical_bytes(block: Block, network: bytes) -> bytes:
    """The exact bytes the block hash covers: every field but the signature, fixed order, length-prefixed.
    Protobuf serialisation is not canonical, so the hash never depends on it."""
    parts = [
        BLOCK_DOMAIN,
        network,
        _FIXED.pack(block.kind, block.account, block.previous, block.height, block.balance, block.timestamp_ms),
        _var(block.destination),
        _U64.pack(block.amount),
        _var(block.source),
        _var(block.request_id),
        _U64.pack(block.expires_at_ms),
        _U16.pack(len(block.payees)),
        *(_var(p) for p in block.payees),
        _U64.pack(block.price_cap),
        _U16.pack(len(block.payouts)),
        *(_var(p.account) + _U64.pack(p.amount) + _U16.pack(p.reason) for p in block.payouts),
    ]
    return b"".join(parts)


def block_hash(block: Block, network: bytes) -> bytes:
    return blake3.blake3(canonical_bytes(block, network)).digest()


def sign_block(block: Block, key: SigningKey, network: bytes) -> bytes:
    """Sign `block` in place with the owner's key; returns its hash."""
    if bytes(key.verify_key) != block.account:
        raise MalformedBlock("a block can only be signed by the key of its account")
    digest = block_hash(block, network)
    block.signature = key.sign(digest).signature
    return digest


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


_M = TypeVar("_M", bound=Message)


def canonical(message: _M, limit: int, what: str) -> _M:
    """`message` as we store and send it: refused when it carries protobuf unknown fields (at any depth) or is
    larger than `limit` bytes, else a copy that is re-encoded from its fields alone. Neither the block hash nor
    the vote signature covers unknown fields, so anyone could add them to anyone's block or vote."""
    size = message.ByteSize()
    if size > limit:
        raise NonCanonical(f"{what} of {size} bytes is over the limit of {limit}")
    clean = type(message)()
    clean.CopyFrom(message)
    clean.DiscardUnknownFields()
    if clean.ByteSize() != size:
        raise NonCanonical(f"{what} carries {size - clean.ByteSize()} bytes of fields no rule reads")
    return clean


def canonical_block(block: Block) -> Block:
    return canonical(block, MAX_BLOCK_BYTES, "a block")


def canonical_vote(vote: Vote) -> Vote:
    return canonical(vote, MAX_VOTE_BYTES, "a vote")


def verify_block(block: Block, network: bytes) -> bytes:
    """Check the shape and the owner's signature; returns the block hash. A block with unknown fields is refused:
    its hash would not cover them."""
    check_shape(block)
    digest = block_hash(block, network)
    if not verify_signature(block.account, digest, block.signature):
        raise BadSignature(
            f"block {digest.hex()[:16]} is not signed by its account's key (or was signed for another network)"
        )
    return digest


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise MalformedBlock(what)


def _unused(block: Block, fields: Iterable[str]) -> None:
    for name in fields:
        if getattr(block, name):
            raise MalformedBlock(f"a {KIND_NAMES[block.kind]} block must leave '{name}' empty")


_ALL_OPTIONAL = ("destination", "amount", "source", "request_id", "expires_at_ms", "payees", "price_cap", "payouts")
_USES = {
    SEND: {"destination", "amount"},
    RECEIVE: {"source"},
    HOLD: {"amount", "request_id", "expires_at_ms", "payees", "price_cap"},
    SETTLE: {"source", "payouts"},
    REFUND: {"source"},
}
# computed once: check_shape runs for every block at the door
_UNUSED = {kind: tuple(f for f in _ALL_OPTIONAL if f not in uses) for kind, uses in _USES.items()}


def check_shape(block: Block) -> None:
    """Everything that can be checked without the ledger's state: sizes, ranges, which fields a kind uses, no
    unknown fields. Fields a kind does not use must be empty, so one payment has exactly one valid encoding."""
    canonical(block, MAX_BLOCK_BYTES, "a block")
    _need(block.kind in KIND_NAMES, f"unknown block kind {block.kind}")
    _need(len(block.account) == KEY_BYTES, f"account must be {KEY_BYTES} bytes, got {len(block.account)}")
    _need(len(block.previous) == HASH_BYTES, f"previous must be {HASH_BYTES} bytes, got {len(block.previous)}")
    _need(len(block.signature) == SIGNATURE_BYTES, f"signature must be {SIGNATURE_BYTES} bytes")
    _need(block.height >= 1, "height starts at 1")
    _need((block.height == 1) == (block.previous == ZERO_HASH), "only the first block (height 1) has no previous")
    _need(block.balance <= MAX_AMOUNT, f"balance {block.balance} overflows the ledger's limit")
    _need(block.timestamp_ms > 0, "timestamp_ms is required")
    uses = _USES[block.kind]
    _unused(block, _UNUSED[block.kind])
    if "amount" in uses:
        _need(0 < block.amount <= MAX_AMOUNT, f"amount must be between 1 and {MAX_AMOUNT} micro-AUTOM")
    if block.kind == SEND:
        _need(len(block.destination) == KEY_BYTES, "destination must be a 32-byte account key")
    if "source" in uses:
        _need(len(block.source) == HASH_BYTES, f"source must be a {HASH_BYTES}-byte block hash")
    if block.kind == HOLD:
        _need(0 < len(block.request_id) <= MAX_REQUEST_ID, f"request_id must be 1 to {MAX_REQUEST_ID} bytes")
        life = block.expires_at_ms - block.timestamp_ms
        _need(
            MIN_HOLD_MS <= life <= MAX_HOLD_MS,
            f"a hold must expire {MIN_HOLD_MS} ms to {MAX_HOLD_MS} ms after it is made, not {life} ms",
        )
        _need(0 < len(block.payees) <= MAX_PAYEES, f"a hold names 1 to {MAX_PAYEES} eligible payees")
        _need(all(len(p) == KEY_BYTES for p in block.payees), "every payee must be a 32-byte account key")
        _need(len(set(block.payees)) == len(block.payees), "a payee is listed twice")
        _need(block.account not in block.payees, "the holder cannot be a payee of its own hold")
        _need(0 < block.price_cap <= block.amount, "price_cap must be between 1 and the held amount")
    if block.kind == SETTLE:
        _need(0 < len(block.payouts) <= MAX_PAYEES, f"a settle names 1 to {MAX_PAYEES} payees")
        for p in block.payouts:
            _need(len(p.account) == KEY_BYTES, "every payout needs a 32-byte account key")
            if p.amount:
                _need(p.amount <= MAX_AMOUNT, f"a payout must be at most {MAX_AMOUNT} micro-AUTOM")
                _need(p.reason == 0, "a paid entry carries no unpaid reason")
            else:
                _need(p.reason in UNPAID_REASONS, "an unpaid entry (amount 0) needs a known reason")
        _need(len({p.account for p in block.payouts}) == len(block.payouts), "a payee is named twice in one settle")


# ---- votes -------------------------------------------------------------------------------------------------

# A vote signs many hashes at once: Ed25519 signing costs about 40 % of a verification, so one signature per
# block would cost a replica most of its throughput; Nano batches the same way. 32 keeps a vote under 1.2 kB:
# catch-up pages repeat a block's votes with it, and past ~30 hashes the signature's share per block (< 1 us)
# no longer shows against the owner's signature check (~55 us).
MAX_VOTE_HASHES = 32
_VOTE = struct.Struct(">32sBQH")


def vote_bytes(vote: Vote, network: bytes) -> bytes:
    """What a vote's signature covers: domain, network (genesis hash), representative, phase, time and the full
    ordered hash list, so no hash can be added, dropped or moved to another network or phase."""
    head = _VOTE.pack(vote.representative, vote.final, vote.timestamp_ms, len(vote.block_hashes))
    return b"".join((VOTE_DOMAIN, network, head, *vote.block_hashes))


def make_vote(key: SigningKey, hashes: Sequence[bytes], final: bool, timestamp_ms: int, network: bytes) -> Vote:
    """One signed vote for every block in `hashes` (1 to MAX_VOTE_HASHES of them)."""
    if not 0 < len(hashes) <= MAX_VOTE_HASHES:
        raise ValueError(f"a vote covers 1 to {MAX_VOTE_HASHES} block hashes, not {len(hashes)}")
    vote = Vote(representative=bytes(key.verify_key), block_hashes=hashes, final=final, timestamp_ms=timestamp_ms)
    vote.signature = key.sign(vote_bytes(vote, network)).signature
    return vote


def verify_vote(vote: Vote, network: bytes) -> None:
    try:
        canonical(vote, MAX_VOTE_BYTES, "a vote")
    except NonCanonical as exc:
        raise BadVote(exc.message) from None
    hashes = vote.block_hashes
    if len(vote.representative) != KEY_BYTES:
        raise BadVote("a vote names a 32-byte representative key")
    if not 0 < len(hashes) <= MAX_VOTE_HASHES or any(len(h) != HASH_BYTES for h in hashes):
        raise BadVote(f"a vote covers 1 to {MAX_VOTE_HASHES} block hashes of {HASH_BYTES} bytes each")
    if len(set(hashes)) != len(hashes):
        raise BadVote("a vote names a block twice")
    if len(vote.signature) != SIGNATURE_BYTES or not verify_signature(
        vote.representative, vote_bytes(vote, network), vote.signature
    ):
        first = hashes[0].hex()[:16]
        raise BadVote(f"vote for {first} (+{len(hashes) - 1} more) is not signed by its representative")


def final_vote_weight(
    votes: Iterable[Vote], digest: bytes, network: bytes, weight_of: Callable[[bytes], int], verified: set[bytes]
) -> int:
    """The weight of distinct representatives whose valid final votes cover `digest`. `verified` holds the
    serialised votes already checked: one vote covers many blocks, so it is verified once; the key is the whole
    vote, so a signature copied onto other hashes is no hit."""
    reps: set[bytes] = set()
    weight = 0
    for vote in votes:
        if not vote.final or vote.representative in reps or digest not in vote.block_hashes:
            continue
        rep_weight = weight_of(vote.representative)
        if not rep_weight:
            continue
        key = vote.SerializeToString()
        if key not in verified:
            try:
                verify_vote(vote, network)
            except BadVote:
                continue
            verified.add(key)
        reps.add(vote.representative)
        weight += rep_weight
    return weight


def proves_quorum(weight: int, total_weight: int, online_floor_percent: int) -> bool:
    """More than 2/3 of the least online weight a quorum is ever computed from (the floor share of all weight)."""
    return 3 * weight * 100 > 2 * total_weight * online_floor_percent
