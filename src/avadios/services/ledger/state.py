"""The confirmed ledger in RocksDB: validate a block against it (a reason for every refusal) and apply a
confirmed block with all its balance effects in one write batch, so a crash never leaves half a block.
Blocks a solo representative has decided can be staged first and written together with their votes."""

from __future__ import annotations

import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias, cast

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from avadios.ledger.address import short
from avadios.ledger.amount import MAX_AMOUNT
from avadios.ledger.block import (
    HOLD,
    KIND_NAMES,
    MAX_CLOCK_SKEW_MS,
    RECEIVE,
    REFUND,
    SEND,
    SETTLE,
    ZERO_HASH,
    Block,
    Vote,
    verify_block,
)
from avadios.ledger.errors import (
    AlreadyReceived,
    BadAmount,
    BadGenesis,
    BadTimestamp,
    BalanceMismatch,
    HoldClosed,
    HoldNotExpired,
    InsufficientFunds,
    MalformedBlock,
    NothingPending,
    NotHolder,
    OverPriceCap,
    PayeeNotEligible,
    ReplayedBlock,
    SettleExceedsHold,
    SettleIncomplete,
    StalePredecessor,
    UnknownHold,
    UnknownPredecessor,
)
from avadios.ledger.genesis import Genesis
from avadios.v1 import ledger_pb2

log = logging.getLogger("avadios.ledger")

AccountRecord: TypeAlias = ledger_pb2.LedgerAccountRecord
PendingRecord: TypeAlias = ledger_pb2.LedgerPendingRecord
HoldRecord: TypeAlias = ledger_pb2.LedgerHoldRecord
# votes: block hash + representative -> the vote's signature; vote_bodies: signature -> the vote. One vote
# covers many blocks (up to MAX_VOTE_HASHES), so its body is stored once, not once per block it confirms.
COLUMN_FAMILIES = ("blocks", "chains", "accounts", "pending", "holds", "votes", "vote_bodies", "meta")
_HEIGHT = struct.Struct(">Q")
GENESIS_KEY = b"genesis"
CONFIRMED_KEY = b"confirmed"
_RECENT_VOTE_BODIES = 4096


class LedgerLocked(Exception):
    """Another process (or another Ledger object) has the database open: the ledger has one writer."""


@dataclass(slots=True)
class Checked:
    """A block that passed every check, and what applying it writes."""

    block: Block
    hash: bytes
    accounts: dict[bytes, AccountRecord] = field(default_factory=dict)
    pending_put: list[tuple[bytes, PendingRecord]] = field(default_factory=list)
    pending_delete: list[bytes] = field(default_factory=list)
    hold_put: list[tuple[bytes, HoldRecord]] = field(default_factory=list)

    @property
    def slot(self) -> tuple[bytes, bytes]:
        return self.block.account, self.block.previous


@dataclass(slots=True)
class Staged:
    """Blocks checked and decided but not written yet, in order: later checks see their effects (so a chain can
    grow, or a payee be paid twice, before the write), and one write batch stores them all with their votes."""

    checked: list[Checked] = field(default_factory=list)
    blocks: dict[bytes, Block] = field(default_factory=dict)
    chains: dict[bytes, bytes] = field(default_factory=dict)
    accounts: dict[bytes, AccountRecord] = field(default_factory=dict)
    pending: dict[bytes, PendingRecord | None] = field(default_factory=dict)  # None: deleted
    holds: dict[bytes, HoldRecord] = field(default_factory=dict)


def now_ms() -> int:
    return int(time.time() * 1000)


class Ledger:
    """One replica's confirmed state. Single writer: one process owns the RocksDB directory."""

    def __init__(self, path: Path, genesis: Genesis, sync: bool = False) -> None:
        self.genesis = genesis
        self.network = genesis.hash
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        try:
            self._db = Rdict(str(path), options, column_families={n: Options(raw_mode=True) for n in COLUMN_FAMILIES})
        except Exception as exc:  # rocksdict raises a bare Exception
            if "lock" in str(exc).lower():
                raise LedgerLocked(
                    f"the ledger database {path} is open in another process (one writer per ledger): {exc}"
                ) from None
            raise
        self._cf = {name: self._db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        # Without sync a batch is in the OS's page cache when write() returns: a killed process loses
        # nothing; a power cut may lose the last blocks, which peers still hold and bootstrap brings back.
        self._write_options = WriteOptions()
        self._write_options.sync = sync
        self._confirmed = 0
        self._staged = Staged()
        self._recent_bodies: OrderedDict[bytes, None] = OrderedDict()  # vote bodies written lately: not again
        # bumped by every stage and write: a Checked computed at an older version may be stale
        self.version = 0
        self._open_genesis()

    def close(self) -> None:
        self._cf.clear()
        self._handles.clear()
        self._db.close()

    # ---- genesis ---------------------------------------------------------------------------------------

    def _open_genesis(self) -> None:
        meta = self._cf["meta"]
        stored = meta.get(GENESIS_KEY)
        if stored is not None:
            if stored != self.network:
                raise BadGenesis(
                    f"this ledger database belongs to network {stored.hex()[:16]}, not to the genesis given "
                    f"({self.network.hex()[:16]}); use another directory for another network"
                )
            count = meta.get(CONFIRMED_KEY)
            self._confirmed = _HEIGHT.unpack(count)[0] if isinstance(count, bytes) else 0
            return
        batch = WriteBatch(raw_mode=True)
        for allocation in self.genesis.balances:
            record = AccountRecord(head=ZERO_HASH, balance=allocation.amount)
            batch.put(allocation.account, record.SerializeToString(), self._handles["accounts"])
        batch.put(CONFIRMED_KEY, _HEIGHT.pack(0), self._handles["meta"])
        batch.put(GENESIS_KEY, self.network, self._handles["meta"])  # last in the batch, but one atomic write
        self._db.write(batch, self._write_options)
        log.info("ledger created from genesis", extra={"network": self.network.hex(), "genesis": self.genesis.name})

    # ---- reads -----------------------------------------------------------------------------------------

    @property
    def confirmed_count(self) -> int:
        return self._confirmed

    def account(self, account: bytes) -> AccountRecord:
        raw = self._cf["accounts"].get(account)
        return AccountRecord.FromString(raw) if raw is not None else AccountRecord(head=ZERO_HASH)

    def accounts(self) -> Iterator[tuple[bytes, AccountRecord]]:
        for key, raw in self.scan("accounts"):
            yield key, AccountRecord.FromString(raw)

    def block(self, digest: bytes) -> Block | None:
        raw = self._cf["blocks"].get(digest)
        return Block.FromString(raw) if raw is not None else None

    def has_block(self, digest: bytes) -> bool:
        return self._cf["blocks"].get(digest) is not None

    def hash_at(self, account: bytes, height: int) -> bytes | None:
        value: bytes | None = self._cf["chains"].get(account + _HEIGHT.pack(height))
        return value

    def hold(self, digest: bytes) -> HoldRecord | None:
        raw = self._cf["holds"].get(digest)
        return HoldRecord.FromString(raw) if raw is not None else None

    def votes(self, digest: bytes) -> list[Vote]:
        """The stored votes that confirmed a block (each may also cover other blocks)."""
        bodies = self._cf["vote_bodies"]
        out = []
        for _, signature in self._prefix("votes", digest):
            raw = bodies.get(signature)
            if raw is not None:
                out.append(Vote.FromString(raw))
        return out

    def pending_of(self, account: bytes) -> list[tuple[bytes, PendingRecord]]:
        return [(key[32:], PendingRecord.FromString(raw)) for key, raw in self._prefix("pending", account)]

    def holds_of(self, account: bytes) -> list[tuple[bytes, HoldRecord]]:
        found = []
        for key, raw in self.scan("holds"):
            record = HoldRecord.FromString(raw)
            if record.holder == account:
                found.append((key, record))
        return found

    def chain(self, account: bytes, from_height: int = 1, limit: int = 1000) -> list[tuple[bytes, Block]]:
        out: list[tuple[bytes, Block]] = []
        for height in range(max(1, from_height), from_height + limit):
            digest = self.hash_at(account, height)
            if digest is None:
                break
            block = self.block(digest)
            assert block is not None, "chains index names a block the blocks column family lacks"
            out.append((digest, block))
        return out

    def history(self, account: bytes, limit: int = 100, below_height: int = 0) -> list[tuple[bytes, Block, int]]:
        """(hash, block, change of the spendable balance), newest first."""
        top = self.account(account).height if below_height == 0 else below_height - 1
        low = max(1, top - limit + 1)
        blocks = self.chain(account, low - 1 if low > 1 else 1, top - low + 2)
        by_height = {b.height: (h, b) for h, b in blocks}
        out = []
        for height in range(top, low - 1, -1):
            digest, block = by_height[height]
            before = by_height[height - 1][1].balance if height > 1 else self._genesis_balance(account)
            out.append((digest, block, block.balance - before))
        return out

    def _genesis_balance(self, account: bytes) -> int:
        return next((a.amount for a in self.genesis.balances if a.account == account), 0)

    def scan(self, cf: str, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        # raw_mode: keys and values are bytes (rocksdict's stubs allow any key type)
        return cast(Iterator[tuple[bytes, bytes]], iter(self._cf[cf].items(from_key=start)))

    def _prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, raw in self.scan(cf, prefix):
            if not key.startswith(prefix):
                break
            yield key, raw

    def frontiers(self, start: bytes = b"", limit: int = 1000) -> list[tuple[bytes, AccountRecord]]:
        out = []
        for key, raw in self.scan("accounts", start):
            record = AccountRecord.FromString(raw)
            if record.height:
                out.append((key, record))
                if len(out) >= limit:
                    break
        return out

    # ---- staged blocks ---------------------------------------------------------------------------------

    def knows(self, digest: bytes) -> bool:
        """Confirmed, or decided and staged for the next write."""
        return digest in self._staged.blocks or self.has_block(digest)

    def is_staged(self, digest: bytes) -> bool:
        return digest in self._staged.blocks

    @property
    def staged(self) -> list[Checked]:
        return self._staged.checked

    def stage(self, checked: Checked) -> None:
        """Hold a decided block's effects in memory until `commit`: checks made meanwhile see them."""
        staged, block = self._staged, checked.block
        staged.checked.append(checked)
        staged.blocks[checked.hash] = block
        staged.chains[block.account + _HEIGHT.pack(block.height)] = checked.hash
        staged.accounts.update(checked.accounts)
        for key, pending in checked.pending_put:
            staged.pending[key] = pending
        for key in checked.pending_delete:
            staged.pending[key] = None
        staged.holds.update(checked.hold_put)
        self.version += 1

    def commit(self, votes: Sequence[Vote]) -> list[Checked]:
        """Write every staged block, its effects, and the votes that cover it, in one batch; returns them."""
        staged = self._staged
        if not staged.checked:
            return []
        batch = WriteBatch(raw_mode=True)
        for checked in staged.checked:
            self._put_block(batch, checked)
        bodies = self._put_votes(batch, votes, staged.blocks)
        batch.put(CONFIRMED_KEY, _HEIGHT.pack(self._confirmed + len(staged.checked)), self._handles["meta"])
        self._db.write(batch, self._write_options)
        self._confirmed += len(staged.checked)
        self._staged = Staged()
        self._remember_bodies(bodies)
        self.version += 1
        return staged.checked

    def _record(self, account: bytes) -> AccountRecord:
        """An account as checks see it: staged effects over the confirmed record (a copy: checks mutate it)."""
        staged = self._staged.accounts.get(account)
        if staged is None:
            return self.account(account)
        record = AccountRecord()
        record.CopyFrom(staged)
        return record

    def _pending_raw(self, key: bytes) -> PendingRecord | None:
        if key in self._staged.pending:
            return self._staged.pending[key]
        raw = self._cf["pending"].get(key)
        return PendingRecord.FromString(raw) if raw is not None else None

    def _block_any(self, digest: bytes) -> Block | None:
        return self._staged.blocks.get(digest) or self.block(digest)

    def _hold_any(self, digest: bytes) -> HoldRecord | None:
        return self._staged.holds.get(digest) or self.hold(digest)

    def _hash_at_any(self, account: bytes, height: int) -> bytes | None:
        return self._staged.chains.get(account + _HEIGHT.pack(height)) or self.hash_at(account, height)

    # ---- validation ------------------------------------------------------------------------------------

    def check(self, block: Block, now_ms: int | None = None, digest: bytes | None = None) -> Checked:
        """Every rule a block must pass against the confirmed state. Raises a LedgerError with the reason.
        `now_ms=None` skips the clock check (blocks a quorum already confirmed, e.g. during bootstrap);
        `digest` skips the signature check for a block already verified at the door."""
        if digest is None:
            digest = verify_block(block, self.network)
        if self.knows(digest):
            raise ReplayedBlock(f"block {digest.hex()[:16]} is already in the ledger")
        account = block.account
        record = self._record(account)
        self._check_position(block, record)
        if block.timestamp_ms < record.timestamp_ms:
            raise BadTimestamp(f"block time {block.timestamp_ms} is before the previous block's {record.timestamp_ms}")
        if now_ms is not None and block.timestamp_ms > now_ms + MAX_CLOCK_SKEW_MS:
            raise BadTimestamp(f"block time {block.timestamp_ms} is more than {MAX_CLOCK_SKEW_MS} ms in the future")
        checked = Checked(block, digest)
        own = AccountRecord()
        own.CopyFrom(record)
        checked.accounts[account] = own
        kind = block.kind
        if kind == SEND:
            self._send(checked, own)
        elif kind == RECEIVE:
            self._receive(checked, own)
        elif kind == HOLD:
            self._hold(checked, own)
        elif kind in (SETTLE, REFUND):
            self._release(checked, own)
        else:  # check_shape refuses other kinds; kept so a new kind cannot slip through unhandled
            raise MalformedBlock(f"unknown block kind {kind}")
        if own.balance != block.balance:
            raise BalanceMismatch(
                f"the {KIND_NAMES[kind]} block claims a balance of {block.balance} micro-AUTOM but applying it "
                f"gives {own.balance}"
            )
        own.head, own.height, own.timestamp_ms = digest, block.height, block.timestamp_ms
        return checked

    def _check_position(self, block: Block, record: AccountRecord) -> None:
        if block.previous == record.head and block.height == record.height + 1:
            return
        if block.previous == record.head:
            raise MalformedBlock(f"height must be {record.height + 1} after the head, not {block.height}")
        if block.height <= record.height:
            taken = self._hash_at_any(block.account, block.height)
            below = self._hash_at_any(block.account, block.height - 1) if block.height > 1 else ZERO_HASH
            if below == block.previous and taken is not None:
                raise StalePredecessor(
                    f"account {short(block.account)} already has confirmed block {taken.hex()[:16]} at height "
                    f"{block.height}: this block is a fork of it (a double spend) and is refused"
                )
            raise StalePredecessor(
                f"block builds on height {block.height - 1} but account {short(block.account)} is already at "
                f"height {record.height}: its predecessor is stale"
            )
        raise UnknownPredecessor(
            f"block builds on {block.previous.hex()[:16]} at height {block.height - 1}, which this ledger has not "
            f"confirmed (the account's head is at height {record.height})"
        )

    def _payee(self, checked: Checked, account: bytes) -> AccountRecord:
        record = checked.accounts.get(account)
        if record is None:
            record = checked.accounts[account] = self._record(account)
        return record

    def _send(self, checked: Checked, own: AccountRecord) -> None:
        block = checked.block
        if block.amount > own.balance:
            raise InsufficientFunds(
                f"insufficient funds: sending {block.amount} micro-AUTOM but the spendable balance is {own.balance}"
            )
        own.balance -= block.amount
        destination = self._payee(checked, block.destination)
        destination.pending += block.amount
        checked.pending_put.append(
            (block.destination + checked.hash, PendingRecord(sender=block.account, amount=block.amount))
        )

    def _receive(self, checked: Checked, own: AccountRecord) -> None:
        block = checked.block
        key = block.account + block.source
        pending = self._pending_raw(key)
        if pending is None:
            source = self._block_any(block.source)
            if source is not None and self._pays(source, block.account):
                raise AlreadyReceived(f"the payment of block {block.source.hex()[:16]} was already received")
            raise NothingPending(f"no pending payment of block {block.source.hex()[:16]} to this account")
        if own.balance + pending.amount > MAX_AMOUNT:
            raise BadAmount("receiving this payment would overflow the balance")
        own.balance += pending.amount
        own.pending -= pending.amount
        checked.pending_delete.append(key)

    @staticmethod
    def _pays(source: Block, account: bytes) -> bool:
        if source.kind == SEND:
            return source.destination == account
        return source.kind == SETTLE and any(p.account == account and p.amount for p in source.payouts)

    def _hold(self, checked: Checked, own: AccountRecord) -> None:
        block = checked.block
        if block.amount > own.balance:
            raise InsufficientFunds(
                f"insufficient funds: holding {block.amount} micro-AUTOM but the spendable balance is {own.balance}"
            )
        own.balance -= block.amount
        own.held += block.amount
        record = HoldRecord(
            holder=block.account,
            amount=block.amount,
            expires_at_ms=block.expires_at_ms,
            price_cap=block.price_cap,
            request_id=block.request_id,
            state=HoldRecord.OPEN,
        )
        record.payees.extend(block.payees)
        checked.hold_put.append((checked.hash, record))

    def _release(self, checked: Checked, own: AccountRecord) -> None:
        """What a payee of a hold can count on (README, "Holds"): only the holder releases it, once; a settle
        names every payee, paid up to the price cap or unpaid with a reason; and money leaves the hold without
        paying anyone (a refund, or a settle that pays no one) only once the hold has expired by every clock the
        network allows, i.e. stamped MAX_CLOCK_SKEW_MS or more past the expiry."""
        block = checked.block
        hold = self._hold_any(block.source)
        if hold is None:
            raise UnknownHold(f"no hold {block.source.hex()[:16]} in the ledger")
        if hold.holder != block.account:
            raise NotHolder("only the account that made a hold can settle or refund it")
        if hold.state != HoldRecord.OPEN:
            state = HoldRecord.State.Name(hold.state).lower()
            raise HoldClosed(f"hold {block.source.hex()[:16]} is already {state}")
        free_from = hold.expires_at_ms + MAX_CLOCK_SKEW_MS
        paid = 0
        if block.kind == SETTLE:
            eligible = set(hold.payees)
            for payout in block.payouts:
                if payout.account not in eligible:
                    raise PayeeNotEligible(f"{short(payout.account)} is not an eligible payee of this hold")
            if [p.account for p in block.payouts] != list(hold.payees):
                raise SettleIncomplete(
                    f"a settle names all {len(hold.payees)} payees of hold {block.source.hex()[:16]} once, in the "
                    f"hold's order, each paid or unpaid with a reason; this one names {len(block.payouts)}"
                )
            for payout in block.payouts:
                if payout.amount > hold.price_cap:
                    raise OverPriceCap(
                        f"payout of {payout.amount} to {short(payout.account)} is over the hold's price cap "
                        f"of {hold.price_cap}"
                    )
                paid += payout.amount
            if paid > hold.amount:
                raise SettleExceedsHold(f"the settle pays {paid} micro-AUTOM but the hold is only {hold.amount}")
            if not paid and block.timestamp_ms < free_from:
                raise HoldNotExpired(
                    f"a settle that pays no one releases hold {block.source.hex()[:16]} like a refund: it is stamped "
                    f"{free_from} or later (expiry {hold.expires_at_ms} + {MAX_CLOCK_SKEW_MS} ms of clock skew), "
                    f"not {block.timestamp_ms}"
                )
            for payout in block.payouts:
                if payout.amount:
                    self._payee(checked, payout.account).pending += payout.amount
                    checked.pending_put.append(
                        (payout.account + checked.hash, PendingRecord(sender=block.account, amount=payout.amount))
                    )
        elif block.timestamp_ms < free_from:
            raise HoldNotExpired(
                f"hold {block.source.hex()[:16]} expires at {hold.expires_at_ms}; a refund is stamped {free_from} or "
                f"later (expiry + {MAX_CLOCK_SKEW_MS} ms of clock skew), not {block.timestamp_ms}"
            )
        own.held -= hold.amount
        own.balance += hold.amount - paid
        closed = HoldRecord()
        closed.CopyFrom(hold)
        closed.state = HoldRecord.SETTLED if block.kind == SETTLE else HoldRecord.REFUNDED
        closed.closed_by = checked.hash
        checked.hold_put.append((block.source, closed))

    # ---- apply -----------------------------------------------------------------------------------------

    def apply(self, checked: Checked, votes: Sequence[Vote] = ()) -> None:
        """Write a confirmed block, its index entries, every balance effect and its votes in one batch."""
        if self._staged.checked:
            raise RuntimeError("commit the staged blocks before applying another (they come first in the chain)")
        batch = WriteBatch(raw_mode=True)
        self._put_block(batch, checked)
        bodies = self._put_votes(batch, votes, (checked.hash,))
        batch.put(CONFIRMED_KEY, _HEIGHT.pack(self._confirmed + 1), self._handles["meta"])
        self._db.write(batch, self._write_options)
        self._confirmed += 1
        self._remember_bodies(bodies)
        self.version += 1

    def _put_block(self, batch: WriteBatch, checked: Checked) -> None:
        h = self._handles
        block = checked.block
        batch.put(checked.hash, block.SerializeToString(), h["blocks"])
        batch.put(block.account + _HEIGHT.pack(block.height), checked.hash, h["chains"])
        for account, record in checked.accounts.items():
            batch.put(account, record.SerializeToString(), h["accounts"])
        for key, pending in checked.pending_put:
            batch.put(key, pending.SerializeToString(), h["pending"])
        for key in checked.pending_delete:
            batch.delete(key, h["pending"])
        for key, hold in checked.hold_put:
            batch.put(key, hold.SerializeToString(), h["holds"])

    def _put_votes(self, batch: WriteBatch, votes: Sequence[Vote], blocks: Container[bytes]) -> list[bytes]:
        """Index each vote under every block of this write it covers; store its body once. Returns the
        signatures of the bodies written."""
        h = self._handles
        written = []
        for vote in votes:
            signature = vote.signature
            for digest in vote.block_hashes:
                if digest in blocks:
                    batch.put(digest + vote.representative, signature, h["votes"])
            if signature not in self._recent_bodies:
                batch.put(signature, vote.SerializeToString(), h["vote_bodies"])
                written.append(signature)
        return written

    def _remember_bodies(self, signatures: list[bytes]) -> None:
        # only after the write succeeded: a body remembered here is on disk
        recent = self._recent_bodies
        for signature in signatures:
            recent[signature] = None
        while len(recent) > _RECENT_VOTE_BODIES:
            recent.popitem(last=False)
