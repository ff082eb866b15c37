"""Ledger test helpers: a genesis of fresh wallets, solo and multi-replica setups, and supply accounting."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from avadios.ledger.amount import MICRO_PER_AUTOM
from avadios.ledger.block import Block
from avadios.ledger.genesis import Allocation, Genesis, RepresentativeWeight
from avadios.ledger.wallet import ChainTip, Wallet
from avadios.services.ledger.replica import Replica
from avadios.services.ledger.state import Ledger
from tests.ledger_gossip_hub import InMemoryHub

START = 1_700_000_000_000
FUNDS = 1_000 * MICRO_PER_AUTOM


class Clock:
    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


def scratch_dir(prefix: str) -> Path:
    """A temporary directory in memory where there is one: RocksDB syncs files when it opens a database,
    and hypothesis opens hundreds."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() else None))


def make_genesis(wallets: list[Wallet], reps: list[SigningKey], funds: int = FUNDS, floor: int = 75) -> Genesis:
    return Genesis(
        name="test",
        balances=tuple(Allocation(w.account, funds) for w in wallets),  # type: ignore[arg-type]
        representatives=tuple(RepresentativeWeight(bytes(k.verify_key), 1) for k in reps),
        online_floor_percent=floor,
    )


def tip_of(ledger: Ledger, account: bytes) -> ChainTip:
    record = ledger.account(account)
    return ChainTip(record.head, record.height, record.balance, record.timestamp_ms)


def total_supply(ledger: Ledger) -> int:
    """Everything the ledger accounts for: spendable + held + pending over every account."""
    return sum(r.balance + r.held + r.pending for _, r in ledger.accounts())


def pending_total(ledger: Ledger) -> int:
    return sum(r.pending for _, r in ledger.accounts())


@dataclass
class Solo:
    """One replica that is the only representative: every valid block confirms at once."""

    path: Path
    wallets: list[Wallet]
    clock: Clock = field(default_factory=Clock)
    rep: SigningKey = field(default_factory=SigningKey.generate)

    def __post_init__(self) -> None:
        self.genesis = make_genesis(self.wallets, [self.rep])
        self.network = self.genesis.hash
        self.open()

    def open(self) -> None:
        self.ledger = Ledger(self.path, self.genesis)
        self.replica = Replica(self.ledger, self.rep, clock=self.clock)

    def restart(self) -> None:
        self.ledger.close()
        self.open()

    def close(self) -> None:
        self.ledger.close()

    def tip(self, wallet: Wallet) -> ChainTip:
        return tip_of(self.ledger, wallet.account)

    def submit(self, block: Block) -> bytes:
        digest, confirmed = self.replica.submit(block)
        assert confirmed
        return digest

    def send(self, sender: Wallet, to: Wallet, amount: int) -> bytes:
        return self.submit(sender.send(self.tip(sender), to.account, amount, self.network, self.clock.advance(1)))

    def receive(self, wallet: Wallet, source: bytes) -> bytes:
        amount = next(p.amount for s, p in self.ledger.pending_of(wallet.account) if s == source)
        return self.submit(wallet.receive(self.tip(wallet), source, amount, self.network, self.clock.advance(1)))


@dataclass
class Network:
    """N replicas, each a representative of equal weight, wired through an in-memory gossip hub."""

    root: Path
    nodes: int
    wallets: list[Wallet]
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.keys = [SigningKey.generate() for _ in range(self.nodes)]
        self.genesis = make_genesis(self.wallets, self.keys)
        self.network = self.genesis.hash
        self.hub = InMemoryHub()
        self.replicas: list[Replica] = []
        for i, key in enumerate(self.keys):
            ledger = Ledger(self.root / f"node{i}", self.genesis)
            replica = Replica(ledger, key, clock=self.clock)
            replica.gossip = self.hub.join(f"node{i}", replica.on_gossip)
            self.replicas.append(replica)

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.replicas)

    def settle(self, rounds: int = 5) -> None:
        """Deliver everything, and let stalled elections re-vote, until quiet."""
        for _ in range(rounds):
            self.hub.run()
            self.clock.advance(2_500)
            for replica in self.replicas:
                if self.hub.members[f"node{self.replicas.index(replica)}"].online:
                    replica.tick()
            self.hub.run()

    def close(self) -> None:
        for replica in self.replicas:
            replica.ledger.close()
