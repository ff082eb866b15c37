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
Quorum: weight > 2/3 of max(online weight, floor% of all weight), online = voted within ONLINE_WINDOW_MS.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from nacl.signing import SigningKey

from avadios.ledger.address import short
from avadios.ledger.block import RECEIVE, Block, Vote, make_vote, verify_block, verify_vote
from avadios.ledger.errors import (
    BadVote,
    LedgerError,
    NothingPending,
    ReplayedBlock,
    UnknownHold,
    UnknownPredecessor,
)
from avadios.v1 import ledger_pb2
from services.ledger.state import Checked, Ledger, now_ms

log = logging.getLogger("avadios.ledger")

Gossiped: TypeAlias = ledger_pb2.LedgerGossip
ONLINE_WINDOW_MS = 60_000
REVOTE_AFTER_MS = 2_000
MAX_ORPHANS = 4096
MAX_STRAY_VOTES = 16384


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


@dataclass(slots=True)
class Election:
    account: bytes
    previous: bytes
    started_ms: int
    candidates: dict[bytes, Block] = field(default_factory=dict)
    # each candidate's checked effects and the confirmed count they were computed at: reused when nothing
    # was confirmed since, recomputed otherwise (another account's block may have changed a payee's record)
    checked: dict[bytes, tuple[int, Checked]] = field(default_factory=dict)
    normal: dict[bytes, Vote] = field(default_factory=dict)  # representative -> latest normal vote
    final: dict[bytes, Vote] = field(default_factory=dict)  # representative -> its one final vote
    own_vote: bytes | None = None
    own_final: bytes | None = None
    voted_ms: int = 0


@dataclass(frozen=True, slots=True)
class CatchUpReport:
    applied: int
    rejected: int
    reasons: tuple[str, ...]


class Replica:
    def __init__(
        self,
        ledger: Ledger,
        representative: SigningKey | None,
        gossip: Gossip | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.ledger = ledger
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
        self._orphans: OrderedDict[bytes, list[Block]] = OrderedDict()
        self._stray_votes: OrderedDict[bytes, list[Vote]] = OrderedDict()
        self._listeners: list[Callable[[bytes, bool], None]] = []
        self.equivocations = 0

    # ---- weights and quorum ----------------------------------------------------------------------------

    def online_representatives(self) -> set[bytes]:
        now = self.clock()
        online = {rep for rep, seen in self._last_seen.items() if now - seen <= ONLINE_WINDOW_MS}
        if self.self_rep:
            online.add(self.self_rep)
        return online

    def online_weight(self) -> int:
        return sum(self._weights_of(rep) for rep in self.online_representatives())

    def _basis_x100(self) -> int:
        return max(self.online_weight() * 100, self._total_weight * self.genesis.online_floor_percent)

    def has_quorum(self, weight: int) -> bool:
        """weight > 2/3 of max(online weight, floor% of total), in exact integers."""
        return 3 * weight * 100 > 2 * self._basis_x100()

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
        existing = self._by_hash.get(digest)
        if existing is not None:
            return digest, False
        if self.ledger.has_block(digest):
            raise ReplayedBlock(f"block {digest.hex()[:16]} is already confirmed")
        self._admit(block, digest)
        return digest, self.ledger.has_block(digest)

    def on_gossip(self, item: Gossiped) -> None:
        """A peer's block or vote: bad ones are logged and dropped, never raised to the transport."""
        try:
            if item.HasField("block"):
                self.on_block(item.block)
            elif item.HasField("vote"):
                self.on_vote(item.vote)
        except LedgerError as exc:
            log.info("refused gossip: %s", exc.message, extra={"reason": exc.reason})

    def on_block(self, block: Block) -> None:
        digest = verify_block(block, self.network)
        if digest in self._by_hash or self.ledger.has_block(digest):
            return
        try:
            self._admit(block, digest)
        except (UnknownPredecessor, UnknownHold) as exc:
            self._park(block, block.previous if isinstance(exc, UnknownPredecessor) else block.source)
        except NothingPending:
            if block.kind == RECEIVE and not self.ledger.has_block(block.source):
                self._park(block, block.source)  # the payment is not confirmed here yet
            else:
                raise

    def on_vote(self, vote: Vote) -> None:
        if not self._weights_of(vote.representative):
            raise BadVote(f"{short(vote.representative)} is not a representative of this network")
        verify_vote(vote, self.network)
        self._last_seen[vote.representative] = max(self._last_seen.get(vote.representative, 0), self.clock())
        election = self._by_hash.get(vote.block_hash)
        if election is None:
            if not self.ledger.has_block(vote.block_hash):
                self._remember(self._stray_votes, vote.block_hash, vote, MAX_STRAY_VOTES)
            return
        self._record_vote(election, vote)
        self._evaluate(election)

    def tick(self) -> None:
        """Called now and then: re-vote in elections a fork has stalled, and repeat our votes for peers
        that may have missed them."""
        now = self.clock()
        for election in list(self.elections.values()):
            if now - election.voted_ms < REVOTE_AFTER_MS or election.own_final is not None:
                continue
            if self.key is not None and election.own_vote is not None:
                leader = self._leader(election)
                if leader != election.own_vote:
                    log.info("re-voting in a split election", extra={"account": short(election.account)})
                self._vote(election, leader, final=False)
            for block in election.candidates.values():
                self.gossip.broadcast(Gossiped(block=block))
            election.voted_ms = now
            self._evaluate(election)

    # ---- elections -------------------------------------------------------------------------------------

    def _admit(self, block: Block, digest: bytes) -> None:
        checked = self.ledger.check(block, self.clock(), digest)  # raises the reason
        slot = (block.account, block.previous)
        election = self.elections.get(slot)
        if election is None and self.key is not None and self.has_quorum(self._weights_of(self.self_rep)):
            # Our own weight is a quorum (a node alone): no contest is possible, confirm with our final vote.
            vote = make_vote(self.key, digest, True, self.clock(), self.network)
            self.ledger.apply(checked, [vote])
            self.gossip.broadcast(Gossiped(block=block))
            self.gossip.broadcast(Gossiped(vote=vote))
            for listener in self._listeners:
                listener(digest, True)
            for waiting in self._orphans.pop(digest, []):
                self.on_gossip(Gossiped(block=waiting))
            return
        if election is None:
            election = self.elections[slot] = Election(block.account, block.previous, self.clock())
        election.candidates[digest] = block
        election.checked[digest] = (self.ledger.confirmed_count, checked)
        self._by_hash[digest] = election
        self.gossip.broadcast(Gossiped(block=block))
        if self.key is not None and election.own_vote is None:
            # A representative whose own weight is a quorum (a node alone) goes straight to its final vote.
            own = self._weights_of(self.self_rep)
            self._vote(election, digest, final=self.has_quorum(own))
        for vote in self._stray_votes.pop(digest, []):
            self._record_vote(election, vote)
        self._evaluate(election)

    def _vote(self, election: Election, digest: bytes, final: bool) -> None:
        assert self.key is not None
        vote = make_vote(self.key, digest, final, self.clock(), self.network)
        if final:
            election.own_final = digest
            election.own_vote = election.own_vote or digest
        else:
            election.own_vote = digest
        election.voted_ms = self.clock()
        self._record_vote(election, vote)
        self.gossip.broadcast(Gossiped(vote=vote))

    def _record_vote(self, election: Election, vote: Vote) -> None:
        rep = vote.representative
        if vote.final:
            earlier = election.final.get(rep)
            if earlier is not None and earlier.block_hash != vote.block_hash:
                self.equivocations += 1
                log.warning("representative %s signed two final votes in one slot", short(rep))
                return
            election.final.setdefault(rep, vote)
        else:
            earlier = election.normal.get(rep)
            if earlier is None or vote.timestamp_ms > earlier.timestamp_ms:
                election.normal[rep] = vote

    def _support(self, election: Election, digest: bytes) -> int:
        """Normal-vote weight for a candidate; a final vote counts as support too."""
        reps = {r for r, v in election.normal.items() if v.block_hash == digest}
        reps |= {r for r, v in election.final.items() if v.block_hash == digest}
        return self._weight(reps)

    def _final_weight(self, election: Election, digest: bytes) -> int:
        return self._weight(r for r, v in election.final.items() if v.block_hash == digest)

    def _leader(self, election: Election) -> bytes:
        return min(election.candidates, key=lambda d: (-self._support(election, d), d))

    def _evaluate(self, election: Election) -> None:
        if self.key is not None and election.own_final is None:
            for digest in sorted(election.candidates):
                if self.has_quorum(self._support(election, digest)):
                    self._vote(election, digest, final=True)
                    break
        for digest in list(election.candidates):
            if self.has_quorum(self._final_weight(election, digest)):
                self._confirm(election, digest)
                return

    def _confirm(self, election: Election, digest: bytes) -> None:
        block = election.candidates[digest]
        votes = [v for v in election.final.values() if v.block_hash == digest]
        count, checked = election.checked[digest]
        if count != self.ledger.confirmed_count:
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
        for waiting in self._orphans.pop(digest, []):
            self.on_gossip(Gossiped(block=waiting))

    def _park(self, block: Block, missing: bytes) -> None:
        self._remember(self._orphans, missing, block, MAX_ORPHANS)

    @staticmethod
    def _remember(store: OrderedDict[bytes, list], key: bytes, item: object, limit: int) -> None:  # type: ignore[type-arg]
        store.setdefault(key, []).append(item)
        store.move_to_end(key)
        while len(store) > limit:
            store.popitem(last=False)

    # ---- status ----------------------------------------------------------------------------------------

    def unconfirmed(self) -> list[tuple[bytes, Block]]:
        return [(d, b) for e in self.elections.values() for d, b in e.candidates.items()]

    def unconfirmed_of(self, account: bytes) -> int:
        return sum(len(e.candidates) for (a, _), e in self.elections.items() if a == account)

    def is_unconfirmed(self, digest: bytes) -> bool:
        return digest in self._by_hash

    # ---- catching up -----------------------------------------------------------------------------------

    def _proves_quorum(self, votes: Sequence[Vote], digest: bytes) -> bool:
        """A confirmed block's final votes: valid signatures of distinct representatives, for this block,
        weighing more than the least any quorum can be (2/3 of the floor share of all weight)."""
        reps: set[bytes] = set()
        for vote in votes:
            if vote.block_hash != digest or not vote.final or vote.representative in reps:
                continue
            if not self._weights_of(vote.representative):
                continue
            try:
                verify_vote(vote, self.network)
            except BadVote:
                continue
            reps.add(vote.representative)
        floor_x100 = self._total_weight * self.genesis.online_floor_percent
        return 3 * self._weight(reps) * 100 > 2 * floor_x100

    def catch_up(self, peer: ChainSource, batch: int = 256) -> CatchUpReport:
        """Fetch every chain the peer is ahead on; apply each block only after checking its signature, its
        link to our head, every balance rule, and a quorum of final votes. A chain that fails stops there."""
        applied, rejected, reasons = 0, 0, []
        behind = {f.account: f.height for f in peer.frontiers() if f.height > self.ledger.account(f.account).height}
        progress = True
        while behind and progress:
            progress = False
            for account in list(behind):
                height = self.ledger.account(account).height
                blocks = peer.chain(account, height + 1, batch) if height < behind[account] else []
                if not blocks:
                    del behind[account]
                    continue
                for item in blocks:
                    try:
                        digest = verify_block(item.block, self.network)
                        if not self._proves_quorum(item.votes, digest):
                            raise BadVote(f"block {digest.hex()[:16]} comes without a quorum of final votes")
                        checked = self.ledger.check(item.block, None, digest)
                    except (UnknownPredecessor, UnknownHold, NothingPending):
                        break  # depends on another chain we have not caught up on yet: next pass
                    except LedgerError as exc:
                        rejected += 1
                        reasons.append(f"{short(account)}: {exc.message}")
                        del behind[account]
                        break
                    votes = [v for v in item.votes if v.block_hash == digest and v.final]
                    self._drop_election_for(checked)
                    self.ledger.apply(checked, votes)
                    applied += 1
                    progress = True
        return CatchUpReport(applied, rejected, tuple(reasons))

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

    def chain(self, account: bytes, from_height: int, limit: int) -> list[ledger_pb2.LedgerConfirmedBlock]:
        return [
            ledger_pb2.LedgerConfirmedBlock(block=block, votes=self.ledger.votes(digest))
            for digest, block in self.ledger.chain(account, from_height, limit)
        ]
