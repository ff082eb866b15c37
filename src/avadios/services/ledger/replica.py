"""One replica's elections: representatives vote on the first valid block of each (account, previous) slot,
a block is confirmed by final votes over 2/3 of online representative weight, a fork's loser is dropped,
and a node that was away catches up from a peer by verifying every block and its quorum of votes.

Pure of I/O: blocks and votes come in through `submit`, `on_gossip` and `catch_up`, go out through a
`Gossip` (the in-memory hub in tests, the P2P protocol later), and time comes from an injected clock.

Voting (Nano's open representative voting, two-phase):
- a representative casts a normal vote for the first valid block it sees in a slot;
- when normal votes for one candidate reach quorum, it casts a final vote for it, and never changes it;
- a block with final votes over quorum is confirmed and applied; every other candidate of its slot is dropped;
- an election stuck without quorum (a fork split the votes) re-votes after a while: a representative moves its
  normal vote to the candidate with the most weight (ties: lowest hash), so the split converges.
Two final quorums of one slot would need a representative to sign two final votes: an honest one never does.
Quorum: weight > 2/3 of max(online weight, floor% of all weight), online = signed a vote whose own timestamp lies
within the online window of our clock (ONLINE_WINDOW_MS by default; an old vote replayed proves nothing). Any window
is safe: the floor keeps every quorum over half of all weight.

Against hostile peers: a slot keeps at most MAX_CANDIDATES forks (the first and those with votes); blocks and votes
that wait for a missing block are deduplicated and capped per missing block, in count and in bytes; catch-up
applies a peer's chain a page at a time (`apply_confirmed`), never more than one page held.

One vote signs up to MAX_VOTE_HASHES block hashes and counts for each of them on its own (a `Ballot`). Our own
votes wait in an outbox until `flush` signs them: a replica under load signs one vote per batch of blocks, not
one per block. A node whose own weight is a quorum stages each valid block in the ledger (later blocks may build
on it at once) and `flush` writes the staged blocks with one final vote in one write batch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

import blake3
from nacl.signing import SigningKey

from avadios.ledger.address import short
from avadios.ledger.block import (
    MAX_CLOCK_SKEW_MS,
    MAX_VOTE_HASHES,
    RECEIVE,
    Block,
    Vote,
    block_hash,
    check_shape,
    final_vote_weight,
    make_vote,
    proves_quorum,
    verify_block,
    verify_signature,
    verify_vote,
)
from avadios.ledger.errors import (
    BadSignature,
    BadVote,
    ForkLimit,
    LedgerError,
    NothingPending,
    StalePredecessor,
    UnknownHold,
    UnknownPredecessor,
)
from avadios.services.ledger.state import Checked, Ledger, now_ms
from avadios.v1 import ledger_pb2

log = logging.getLogger("avadios.ledger")

Gossiped: TypeAlias = ledger_pb2.LedgerGossip
ONLINE_WINDOW_MS = 60_000
REVOTE_AFTER_MS = 2_000
# Blocks whose predecessor (or source) is not here yet, and votes for blocks not here yet, wait in bounded rooms:
# deduplicated (by block hash; by representative and phase), a few per missing block, and capped in total count
# and bytes. Past a cap the oldest missing block's waiters go: peers repeat open elections every 2 s.
MAX_ORPHANS = 4096
MAX_ORPHANS_PER_KEY = 16
MAX_ORPHAN_BYTES = 8 << 20
MAX_STRAY_VOTES = 16384
MAX_STRAY_VOTE_BYTES = 8 << 20
# Forks of one slot an election keeps: the first candidate and those with votes stay; a newcomer without votes is
# refused once the slot is full (each candidate is checked and re-evaluated on every vote).
MAX_CANDIDATES = 8
RECENT_VOTES = 16384  # also: blocks remembered as refused for good (a fork of a confirmed block)
# A catch-up page stays well under the 1 MiB P2P envelope whatever the number of representatives (their votes
# travel with each block).
CHAIN_PAGE_BYTES = 512 << 10


class Gossip(Protocol):
    """Where a replica's blocks and votes go: every other replica, eventually, maybe more than once."""

    def broadcast(self, item: Gossiped) -> None: ...


class ChainSource(Protocol):
    """A peer's confirmed chains, for catching up."""

    def frontiers(self) -> Sequence[ledger_pb2.LedgerFrontier]: ...

    def chain(self, account: bytes, from_height: int, limit: int) -> Sequence[ledger_pb2.LedgerConfirmedBlock]: ...


class NoGossip:
    """A replica alone: nothing to tell anyone."""

    def broadcast(self, item: Gossiped) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Ballot:
    """One block's share of a vote: a vote may cover many blocks and counts for each on its own."""

    block_hash: bytes
    vote: Vote


@dataclass(slots=True)
class Parking:
    """Items waiting for a missing block, bounded: at most `per_key` items under one missing hash, `max_items` and
    `max_bytes` in all. An item already waiting under its key is not added again (keyed by `item_id`); past a
    total cap, the keys that waited longest go first."""

    max_items: int
    max_bytes: int
    per_key: int
    _keys: OrderedDict[bytes, dict[bytes, tuple[object, int]]] = field(default_factory=OrderedDict)
    _ids: dict[bytes, int] = field(default_factory=dict)  # item id -> under how many keys it waits
    items: int = 0
    size: int = 0  # bytes in all

    def count(self, key: bytes) -> int:
        return len(self._keys.get(key, ()))

    def holds(self, item_id: bytes) -> bool:
        return item_id in self._ids

    def get(self, key: bytes, item_id: bytes) -> object | None:
        entry = self._keys.get(key, {}).get(item_id)
        return None if entry is None else entry[0]

    def add(self, key: bytes, item_id: bytes, item: object, size: int) -> bool:
        """Park `item` (replacing one with the same id); False when the key is full."""
        waiting = self._keys.get(key)
        if waiting is None:
            waiting = self._keys[key] = {}
        old = waiting.get(item_id)
        if old is None and len(waiting) >= self.per_key:
            return False
        if old is not None:
            self.items -= 1
            self.size -= old[1]
        else:
            self._ids[item_id] = self._ids.get(item_id, 0) + 1
        waiting[item_id] = (item, size)
        self.items += 1
        self.size += size
        self._keys.move_to_end(key)
        while (self.items > self.max_items or self.size > self.max_bytes) and len(self._keys) > 1:
            self._drop(next(iter(self._keys)))
        return True

    def pop(self, key: bytes) -> list[object]:
        waiting = self._keys.get(key)
        if waiting is None:
            return []
        self._drop(key)
        return [item for item, _ in waiting.values()]

    def _drop(self, key: bytes) -> None:
        waiting = self._keys.pop(key)
        self.items -= len(waiting)
        self.size -= sum(size for _, size in waiting.values())
        for item_id in waiting:
            left = self._ids.pop(item_id) - 1
            if left:
                self._ids[item_id] = left

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(slots=True)
class Election:
    account: bytes
    previous: bytes
    started_ms: int
    candidates: dict[bytes, Block] = field(default_factory=dict)
    # each candidate's checked effects and the ledger version they were computed at: reused when nothing was
    # written or staged since, recomputed otherwise (another account's block may have changed a payee's record)
    checked: dict[bytes, tuple[int, Checked]] = field(default_factory=dict)
    normal: dict[bytes, Ballot] = field(default_factory=dict)  # representative -> latest normal vote
    final: dict[bytes, Ballot] = field(default_factory=dict)  # representative -> its one final vote
    own_vote: bytes | None = None
    own_final: bytes | None = None
    voted_ms: int = 0


@dataclass(frozen=True, slots=True)
class CatchUpReport:
    applied: int
    rejected: int
    reasons: tuple[str, ...]
    more: bool = False  # stopped at a cap of the round: the next round continues


@dataclass(frozen=True, slots=True)
class PageOutcome:
    """What applying one page of a peer's confirmed chain did: blocks applied, whether it stopped at a block that
    needs another chain first (`waiting`), or the reason a block was refused (the peer served something false)."""

    applied: int
    waiting: bool = False
    refused: str | None = None


class Replica:
    def __init__(
        self,
        ledger: Ledger,
        representative: SigningKey | None,
        gossip: Gossip | None = None,
        clock: Callable[[], int] = now_ms,
        schedule_flush: Callable[[], None] | None = None,
        online_window_ms: int = ONLINE_WINDOW_MS,
    ) -> None:
        self.ledger = ledger
        self.online_window_ms = online_window_ms
        self.genesis = ledger.genesis
        self.network = ledger.network
        self.gossip: Gossip = gossip or NoGossip()
        self.clock = clock
        self._weights = {r.account: r.weight for r in self.genesis.representatives}
        self._total_weight = self.genesis.total_weight
        weight = 0 if representative is None else self._weights.get(bytes(representative.verify_key), 0)
        self.key = representative if weight else None  # a key the genesis does not list has nothing to vote with
        self.self_rep = bytes(self.key.verify_key) if self.key else b""
        self.elections: dict[tuple[bytes, bytes], Election] = {}
        self._by_hash: dict[bytes, Election] = {}
        self._last_seen: dict[bytes, int] = {}
        self._orphans = Parking(MAX_ORPHANS, MAX_ORPHAN_BYTES, MAX_ORPHANS_PER_KEY)
        # per missing block: one final and the newest normal vote of each representative
        self._stray_votes = Parking(MAX_STRAY_VOTES, MAX_STRAY_VOTE_BYTES, 2 * len(self._weights))
        # votes verified lately: peers repeat open elections' votes every 2 s, and a replayed vote costs a hash
        self._verified_votes: OrderedDict[bytes, None] = OrderedDict()
        self._stale: OrderedDict[bytes, None] = OrderedDict()  # blocks refused as forks of a confirmed block
        self._listeners: list[Callable[[bytes, bool], None]] = []
        self.equivocations = 0
        # Own votes wait here until `flush` signs them. Without a scheduler every entry point flushes before it
        # returns (tests and tools: one signature per call). The service passes one that runs `flush` at the
        # event loop's next turn instead: every block that arrived during a turn shares one signature, and a
        # lone block still gets its vote in the very next turn. No timer: a batching window would add its whole
        # length to an idle node's latency, while the loop turn costs microseconds and grows with the load.
        self._schedule = schedule_flush
        self._flush_scheduled = False
        self._flushing = False
        self._outbox_normal: dict[tuple[bytes, bytes], tuple[Election, bytes]] = {}
        self._outbox_final: dict[tuple[bytes, bytes], tuple[Election, bytes]] = {}
        self.votes_signed = 0

    # ---- weights and quorum ----------------------------------------------------------------------------

    def online_representatives(self) -> set[bytes]:
        now = self.clock()
        online = {rep for rep, seen in self._last_seen.items() if now - seen <= self.online_window_ms}
        if self.self_rep:
            online.add(self.self_rep)
        return online

    def online_weight(self) -> int:
        return sum(self._weights_of(rep) for rep in self.online_representatives())

    def _basis_x100(self) -> int:
        return max(self.online_weight() * 100, self._total_weight * self.genesis.online_floor_percent)

    def has_quorum(self, weight: int, basis_x100: int | None = None) -> bool:
        """weight > 2/3 of max(online weight, floor% of total), in exact integers. `basis_x100`: the basis already
        computed for this evaluation (it is the same for every candidate)."""
        return 3 * weight * 100 > 2 * (self._basis_x100() if basis_x100 is None else basis_x100)

    def quorum_weight(self) -> int:
        """The smallest weight that confirms now."""
        return (2 * self._basis_x100()) // 300 + 1

    def _weight(self, reps: Iterable[bytes]) -> int:
        return sum(self._weights.get(r, 0) for r in reps)

    def _weights_of(self, rep: bytes) -> int:
        return self._weights.get(rep, 0)

    # ---- entry points ----------------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[bytes, bool], None]) -> None:
        """Called with (block hash, confirmed?) when a block is confirmed (True) or dropped as a fork's loser."""
        self._listeners.append(listener)

    def submit(self, block: Block) -> tuple[bytes, bool]:
        """A block from a local client: validated (raising the reason), voted on, gossiped.
        Returns (hash, confirmed)."""
        digest = verify_block(block, self.network)
        if self.is_unconfirmed(digest):
            return digest, False
        try:
            self._admit(block, digest)  # the ledger's check refuses a block it already has (ReplayedBlock)
        finally:
            self._settle()
        return digest, not self.is_unconfirmed(digest) and self.ledger.has_block(digest)

    def on_gossip(self, item: Gossiped) -> None:
        """A peer's block or vote: bad ones are logged and dropped, never raised to the transport."""
        try:
            if item.HasField("block"):
                self.on_block(item.block)
            elif item.HasField("vote"):
                self.on_vote(item.vote)
        except LedgerError as exc:
            log.info("refused gossip: %s", exc.message, extra={"reason": exc.reason})
        finally:
            self._settle()

    def on_block(self, block: Block) -> None:
        # The hash covers every field but the signature: a block we already hold (peers repeat open elections every
        # 2 s) is recognised before its signature costs a verification.
        check_shape(block)
        digest = block_hash(block, self.network)
        if digest in self._by_hash or digest in self._stale or self._orphans.holds(digest) or self.ledger.knows(digest):
            return
        if not verify_signature(block.account, digest, block.signature):
            raise BadSignature(f"block {digest.hex()[:16]} is not signed by its account's key")
        try:
            self._admit(block, digest)
        except StalePredecessor:
            # for good: a confirmed chain never shrinks. Remembered, so a replay costs a hash, not a verification.
            self._stale[digest] = None
            if len(self._stale) > RECENT_VOTES:
                self._stale.popitem(last=False)
            raise
        except (UnknownPredecessor, UnknownHold) as exc:
            self._park(block, digest, block.previous if isinstance(exc, UnknownPredecessor) else block.source)
        except NothingPending:
            if block.kind == RECEIVE and not self.ledger.has_block(block.source):
                self._park(block, digest, block.source)  # the payment is not confirmed here yet
            else:
                raise

    def on_vote(self, vote: Vote) -> None:
        if not self._weights_of(vote.representative):
            raise BadVote(f"{short(vote.representative)} is not a representative of this network")
        key = blake3.blake3(vote.SerializeToString()).digest()  # the whole vote: signature and what it signs
        if key not in self._verified_votes:
            verify_vote(vote, self.network)  # once for the whole batch; every hash in it is then one ballot
            self._verified_votes[key] = None
            if len(self._verified_votes) > RECENT_VOTES:
                self._verified_votes.popitem(last=False)
        self._seen(vote)
        touched: dict[tuple[bytes, bytes], Election] = {}
        for digest in vote.block_hashes:
            election = self._by_hash.get(digest)
            if election is None:
                if not self.ledger.knows(digest):  # not here yet: kept until the block arrives
                    self._park_vote(digest, vote)
                continue
            self._record_vote(election, Ballot(digest, vote))
            touched[(election.account, election.previous)] = election
        for election in touched.values():
            if self._live(election):
                self._evaluate(election)

    def _seen(self, vote: Vote) -> None:
        """A representative is online while its latest vote is recent by its own signed time: a vote signed outside
        the online window of our clock (an old one replayed by anyone) proves nothing about now. Counting replayed
        votes would raise the online weight, and with it the quorum, over what the live representatives hold."""
        now = self.clock()
        signed = vote.timestamp_ms
        if not now - self.online_window_ms <= signed <= now + MAX_CLOCK_SKEW_MS:
            return
        signed = min(signed, now)
        if signed > self._last_seen.get(vote.representative, 0):
            self._last_seen[vote.representative] = signed

    def tick(self) -> None:
        """Called now and then: re-vote in elections a fork has stalled, and repeat our votes for peers
        that may have missed them."""
        now = self.clock()
        try:
            for election in list(self.elections.values()):
                if not self._live(election):
                    continue
                if now - election.voted_ms < REVOTE_AFTER_MS:
                    continue
                if election.own_final is not None:
                    # Our final vote never changes, but a peer may have missed it (it was away, its gateway was
                    # not up yet): without a repeat, an election one final short of quorum would wait forever.
                    own = election.final.get(self.self_rep)
                    if own is not None:
                        self._broadcast_block(election.candidates[election.own_final])
                        self._broadcast(Gossiped(vote=own.vote))
                    election.voted_ms = now
                    continue
                if self.key is not None and election.own_vote is not None:
                    leader = self._leader(election)
                    if leader != election.own_vote:
                        log.info("re-voting in a split election", extra={"account": short(election.account)})
                    self._vote(election, leader, final=False)
                for block in election.candidates.values():
                    self._broadcast_block(block)
                election.voted_ms = now
                self._evaluate(election)
        finally:
            self._settle()

    # ---- own votes: queued, then signed in batches -------------------------------------------------------

    def has_unsigned(self) -> bool:
        """Own votes waiting for `flush` (and, on a node alone, staged blocks waiting for their final vote)."""
        return bool(self._outbox_final or self._outbox_normal or self.ledger.staged)

    def flush(self) -> int:
        """Sign every queued own vote, MAX_VOTE_HASHES blocks per signature, and act on them: staged blocks are
        written with their final vote, election votes are recorded, gossiped and counted (which may queue final
        votes: signed in the same call). Returns the number of signatures made."""
        self._flush_scheduled = False
        if self._flushing:
            return 0
        self._flushing = True
        signed = 0
        try:
            while self.has_unsigned():
                signed += self._commit_staged() + self._sign_outbox()
        finally:
            self._flushing = False
        return signed

    def _settle(self) -> None:
        """End of an entry point: flush now, or ask the owner to flush soon."""
        if self._flushing or not self.has_unsigned():
            return
        if self._schedule is None:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._schedule()

    def _sign(self, hashes: list[bytes], final: bool) -> list[Vote]:
        assert self.key is not None
        now = self.clock()
        votes = [
            make_vote(self.key, hashes[i : i + MAX_VOTE_HASHES], final, now, self.network)
            for i in range(0, len(hashes), MAX_VOTE_HASHES)
        ]
        self.votes_signed += len(votes)
        return votes

    def _commit_staged(self) -> int:
        staged = self.ledger.staged
        if not staged:
            return 0
        votes = self._sign([checked.hash for checked in staged], final=True)
        committed = self.ledger.commit(votes)
        for checked in committed:
            self._broadcast_block(checked.block)
        for vote in votes:
            self._broadcast(Gossiped(vote=vote))
        for checked in committed:
            for listener in self._listeners:
                listener(checked.hash, True)
        for checked in committed:
            self._unpark(checked.hash)
        return len(votes)

    def _sign_outbox(self) -> int:
        signed = 0
        for final, outbox in ((True, self._outbox_final), (False, self._outbox_normal)):
            items = [(e, d) for e, d in outbox.values() if self._live(e)]
            outbox.clear()
            if not items:
                continue
            votes = self._sign([digest for _, digest in items], final)
            signed += len(votes)
            for index, vote in enumerate(votes):
                for election, digest in items[index * MAX_VOTE_HASHES : (index + 1) * MAX_VOTE_HASHES]:
                    self._record_vote(election, Ballot(digest, vote))
                self._broadcast(Gossiped(vote=vote))
            for election, _ in items:
                if self._live(election):
                    self._evaluate(election)
        return signed

    def _live(self, election: Election) -> bool:
        return self.elections.get((election.account, election.previous)) is election

    def _broadcast(self, item: Gossiped) -> None:
        self.gossip.broadcast(item)

    def _broadcast_block(self, block: Block) -> None:
        if not isinstance(self.gossip, NoGossip):  # building the message copies the block: not for no one
            self.gossip.broadcast(Gossiped(block=block))

    # ---- elections -------------------------------------------------------------------------------------

    def _admit(self, block: Block, digest: bytes) -> None:
        checked = self.ledger.check(block, self.clock(), digest)  # raises the reason
        slot = (block.account, block.previous)
        election = self.elections.get(slot)
        if election is None and self.key is not None and self.has_quorum(self._weights_of(self.self_rep)):
            # Our own weight is a quorum (a node alone): no contest is possible. Staged, so the next block may
            # build on it at once (a fork of it is refused by the check); `flush` writes it with our final vote.
            self.ledger.stage(checked)
            return
        if election is None:
            election = self.elections[slot] = Election(block.account, block.previous, self.clock())
        elif len(election.candidates) >= MAX_CANDIDATES:
            self._make_room(election, digest)
        election.candidates[digest] = block
        election.checked[digest] = (self.ledger.version, checked)
        self._by_hash[digest] = election
        self._broadcast_block(block)
        if self.key is not None and election.own_vote is None:
            # A representative whose own weight is a quorum (a node alone) goes straight to its final vote.
            own = self._weights_of(self.self_rep)
            self._vote(election, digest, final=self.has_quorum(own))
        for vote in self._stray_votes.pop(digest):
            assert isinstance(vote, Vote)
            self._record_vote(election, Ballot(digest, vote))
        self._evaluate(election)

    def _make_room(self, election: Election, digest: bytes) -> None:
        """A full slot (a fork storm: any account can sign thousands of forks) takes a newcomer only when votes
        already wait for it, in place of a candidate that has none and is not the first; otherwise it is refused."""
        first = next(iter(election.candidates))
        idle = [d for d in election.candidates if d != first and not self._support(election, d)]
        if not idle or not self._stray_votes.count(digest):
            raise ForkLimit(
                f"account {short(election.account)} already has {len(election.candidates)} competing blocks on "
                f"{election.previous.hex()[:16]}; this one is not taken"
            )
        loser = idle[-1]
        del election.candidates[loser]
        election.checked.pop(loser, None)
        del self._by_hash[loser]
        for listener in self._listeners:
            listener(loser, False)

    def _vote(self, election: Election, digest: bytes, final: bool) -> None:
        """Decide our vote now (so no later call can decide differently); `flush` signs it."""
        assert self.key is not None
        slot = (election.account, election.previous)
        if final:
            election.own_final = digest
            election.own_vote = election.own_vote or digest
            self._outbox_normal.pop(slot, None)  # the final vote counts as support too
            self._outbox_final[slot] = (election, digest)
        else:
            election.own_vote = digest
            self._outbox_normal[slot] = (election, digest)
        election.voted_ms = self.clock()

    def _record_vote(self, election: Election, ballot: Ballot) -> None:
        vote = ballot.vote
        rep = vote.representative
        if vote.final:
            earlier = election.final.get(rep)
            if earlier is not None and earlier.block_hash != ballot.block_hash:
                self.equivocations += 1
                log.warning("representative %s signed two final votes in one slot", short(rep))
                return
            election.final.setdefault(rep, ballot)
        else:
            earlier = election.normal.get(rep)
            if earlier is None or vote.timestamp_ms > earlier.vote.timestamp_ms:
                election.normal[rep] = ballot

    def _support(self, election: Election, digest: bytes) -> int:
        """Normal-vote weight for a candidate; a final vote counts as support too."""
        reps = {r for r, b in election.normal.items() if b.block_hash == digest}
        reps |= {r for r, b in election.final.items() if b.block_hash == digest}
        return self._weight(reps)

    def _final_weight(self, election: Election, digest: bytes) -> int:
        return self._weight(r for r, b in election.final.items() if b.block_hash == digest)

    def _leader(self, election: Election) -> bytes:
        return min(election.candidates, key=lambda d: (-self._support(election, d), d))

    def _evaluate(self, election: Election) -> None:
        basis = self._basis_x100()  # once: the online weight is the same for every candidate
        if self.key is not None and election.own_final is None:
            for digest in sorted(election.candidates):
                if self.has_quorum(self._support(election, digest), basis):
                    self._vote(election, digest, final=True)
                    break
        for digest in list(election.candidates):
            if self.has_quorum(self._final_weight(election, digest), basis):
                self._confirm(election, digest)
                return

    def _confirm(self, election: Election, digest: bytes) -> None:
        if self.ledger.staged:
            self._commit_staged()  # decided before this block (a node that was alone a moment ago): written first
        block = election.candidates[digest]
        votes = [b.vote for b in election.final.values() if b.block_hash == digest]
        version, checked = election.checked[digest]
        if version != self.ledger.version:
            checked = self.ledger.check(block, None, digest)  # effects against today's state
        self.ledger.apply(checked, votes)
        del self.elections[(election.account, election.previous)]
        for loser in election.candidates:
            del self._by_hash[loser]
        for loser in election.candidates:
            if loser != digest:
                log.info("fork resolved: dropped block %s", loser.hex()[:16], extra={"account": short(block.account)})
            for listener in self._listeners:
                listener(loser, loser == digest)
        self._unpark(digest)

    def _park(self, block: Block, digest: bytes, missing: bytes) -> None:
        self._orphans.add(missing, digest, block, block.ByteSize())

    def _unpark(self, digest: bytes) -> None:
        for waiting in self._orphans.pop(digest):
            assert isinstance(waiting, Block)
            self.on_gossip(Gossiped(block=waiting))

    def _park_vote(self, digest: bytes, vote: Vote) -> None:
        """Keep one final and the newest normal vote of each representative for a block not here yet."""
        item_id = vote.representative + (b"F" if vote.final else b"N")
        earlier = self._stray_votes.get(digest, item_id)
        if isinstance(earlier, Vote) and (vote.final or earlier.timestamp_ms >= vote.timestamp_ms):
            return
        self._stray_votes.add(digest, item_id, vote, vote.ByteSize())

    def parked(self) -> tuple[int, int, int, int]:
        """(orphan blocks, their bytes, stray votes, their bytes): what waits for blocks not here yet."""
        return self._orphans.items, self._orphans.size, self._stray_votes.items, self._stray_votes.size

    # ---- status ----------------------------------------------------------------------------------------

    def unconfirmed(self) -> list[tuple[bytes, Block]]:
        staged = [(c.hash, c.block) for c in self.ledger.staged]
        return staged + [(d, b) for e in self.elections.values() for d, b in e.candidates.items()]

    def unconfirmed_of(self, account: bytes) -> int:
        staged = sum(1 for c in self.ledger.staged if c.block.account == account)
        return staged + sum(len(e.candidates) for (a, _), e in self.elections.items() if a == account)

    def is_unconfirmed(self, digest: bytes) -> bool:
        return digest in self._by_hash or self.ledger.is_staged(digest)

    # ---- catching up -----------------------------------------------------------------------------------

    def _proves_quorum(self, votes: Sequence[Vote], digest: bytes, verified: set[bytes]) -> bool:
        """A confirmed block's final votes: valid signatures of distinct representatives, covering this block,
        weighing more than the least any quorum can be (2/3 of the floor share of all weight)."""
        weight = final_vote_weight(votes, digest, self.network, self._weights_of, verified)
        return proves_quorum(weight, self._total_weight, self.genesis.online_floor_percent)

    def apply_confirmed(
        self, items: Sequence[ledger_pb2.LedgerConfirmedBlock], verified: set[bytes] | None = None
    ) -> PageOutcome:
        """Apply a page of one account's confirmed chain (in height order, as a peer served it), each block only
        after its owner's signature, its link to our head, every balance rule and a quorum of valid final votes
        check out. Stops at the first block that needs another chain first (`waiting`) or that is refused.
        `verified`: serialised votes already checked (one vote covers many blocks)."""
        self.flush()  # staged blocks first: catching up applies block by block
        verified = set() if verified is None else verified
        applied = 0
        for item in items:
            block = item.block
            try:
                digest = verify_block(block, self.network)
                if block.height <= self.ledger.account(block.account).height:
                    if self.ledger.hash_at(block.account, block.height) == digest:
                        continue  # confirmed here meanwhile (gossip is faster than a page)
                    raise BadVote(f"block {digest.hex()[:16]} conflicts with a block this ledger confirmed")
                if not self._proves_quorum(item.votes, digest, verified):
                    raise BadVote(f"block {digest.hex()[:16]} comes without a quorum of final votes")
                checked = self.ledger.check(block, None, digest)
            except (UnknownHold, NothingPending):
                return PageOutcome(applied, waiting=True)  # pays out of a chain we have not caught up on yet
            except LedgerError as exc:
                return PageOutcome(applied, refused=exc.message)
            votes = [v for v in item.votes if v.final and digest in v.block_hashes]
            self._drop_election_for(checked)
            self.ledger.apply(checked, votes)
            applied += 1
            self._unpark(digest)
        self._settle()
        return PageOutcome(applied)

    def catch_up(
        self, peer: ChainSource, batch: int = 256, max_accounts: int = 10_000, max_blocks: int = 100_000
    ) -> CatchUpReport:
        """Fetch every chain the peer is ahead on, page by page, applying each page before the next is asked for
        (see `apply_confirmed`). A chain that fails stops there. At most `max_accounts` frontiers and `max_blocks`
        blocks a call: a source that claims more is cut off (`more` says so)."""
        applied, rejected, reasons = 0, 0, []
        verified: set[bytes] = set()
        behind: dict[bytes, int] = {}
        for index, front in enumerate(peer.frontiers()):
            if index >= max_accounts:
                break
            if front.height > self.ledger.account(front.account).height:
                behind[front.account] = front.height
        budget = max_blocks
        progress = True
        while behind and progress and budget > 0:
            progress = False
            for account in list(behind):
                height = self.ledger.account(account).height
                if height >= behind[account] or budget <= 0:
                    del behind[account]
                    continue
                page = list(peer.chain(account, height + 1, min(batch, budget, behind[account] - height)))
                budget -= len(page)
                outcome = self.apply_confirmed(page, verified)
                applied += outcome.applied
                progress = progress or outcome.applied > 0
                if outcome.refused is not None or not page:
                    rejected += 1
                    reasons.append(f"{short(account)}: {outcome.refused or 'the source has no blocks above ours'}")
                    del behind[account]
        return CatchUpReport(applied, rejected, tuple(reasons), more=bool(behind) and budget <= 0)

    def _drop_election_for(self, checked: Checked) -> None:
        election = self.elections.pop(checked.slot, None)
        if election is None:
            return
        for digest in election.candidates:
            del self._by_hash[digest]
            for listener in self._listeners:
                listener(digest, digest == checked.hash)


class LedgerChainSource:
    """A replica's confirmed chains as a ChainSource: what GetFrontiers/GetChain serve to peers."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def frontiers(self) -> list[ledger_pb2.LedgerFrontier]:
        return [
            ledger_pb2.LedgerFrontier(account=account, head=record.head, height=record.height)
            for account, record in self.ledger.frontiers(limit=1 << 30)
        ]

    def chain(
        self, account: bytes, from_height: int, limit: int, max_bytes: int = CHAIN_PAGE_BYTES
    ) -> list[ledger_pb2.LedgerConfirmedBlock]:
        """Up to `limit` confirmed blocks from `from_height`, each with its final votes; the page ends early rather
        than grow past `max_bytes` (one block always goes: it is at most a few kB with its votes)."""
        out: list[ledger_pb2.LedgerConfirmedBlock] = []
        size = 0
        for digest, block in self.ledger.chain(account, from_height, limit):
            item = ledger_pb2.LedgerConfirmedBlock(block=block, votes=self.ledger.votes(digest))
            size += item.ByteSize() + 4
            if out and size > max_bytes:
                break
            out.append(item)
        return out
