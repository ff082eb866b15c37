"""One hostile peer against a ledger replica: each attack of issue 13 run for a bounded time against five in-process
replicas, with honest transfers going on, measuring the victim's memory and CPU and whether confirmations go on.

Five replicas (every one a representative of weight 1, each with its own RocksDB in a temporary directory) exchange
blocks and votes through the tests' in-memory hub (tests/ledger_gossip_hub.py) in one process and one event loop:
a full devnet runs 5 x 6 processes, too many for the 2 shared cores this was measured on. The attacker reaches the
victim (node 0) the way a peer does: its batches go through the ledger's door (the gossip check and signature
checks a GossipBatch passes) and its catch-up answers through `CatchUp` with a lying door to peers.
Honest transfers (one at a time, 10 a second at most, four wallets in turn) are submitted at node 1 and timed
until the victim confirms them. Attack items are prepared before the clock starts: only the victim's work counts.

Every attack first runs `--quiet` seconds with honest traffic only (the baseline), then `--seconds` of attack.
An attack stops early when the process grew by more than `--rss-cap-mb` (the old catch-up grew by gigabytes).
Runs against whatever code is on PYTHONPATH, so the same script measures the code before and after a fix:

    PYTHONPATH=src:. .venv/bin/python bench/hostile_peer.py --label after --out after.jsonl
    PYTHONPATH=/tmp/before/src:/tmp/before .venv/bin/python bench/hostile_peer.py --label before --out before.jsonl
    PYTHONPATH=src:. .venv/bin/python bench/hostile_peer.py --report before.jsonl after.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from nacl.signing import SigningKey

from avadios.ledger.amount import Micro
from avadios.ledger.block import HOLD, REFUND, SEND, SETTLE, ZERO_HASH, Block, block_hash, make_vote, sign_block
from avadios.ledger.errors import LedgerError
from avadios.ledger.genesis import Allocation, Genesis, RepresentativeWeight
from avadios.ledger.wallet import ChainTip, Wallet
from avadios.v1 import ledger_pb2


def _module(now: str, before: str) -> Any:
    """A module of whichever code is on the path: today's layout, or the one before the fix (commit 6c98306, when
    the services were top-level `services.*` and the hub lived in services/ledger/gossip.py), so one script measures
    both."""
    try:
        return importlib.import_module(now)
    except ModuleNotFoundError:
        return importlib.import_module(before)


if TYPE_CHECKING:
    from avadios.services.ledger.audit import audit
    from avadios.services.ledger.network import CatchUp
    from avadios.services.ledger.replica import LedgerChainSource, Replica
    from avadios.services.ledger.state import Ledger
    from tests.ledger_gossip_hub import InMemoryHub
else:
    audit = _module("avadios.services.ledger.audit", "services.ledger.audit").audit
    CatchUp = _module("avadios.services.ledger.network", "services.ledger.network").CatchUp
    _replica = _module("avadios.services.ledger.replica", "services.ledger.replica")
    LedgerChainSource, Replica = _replica.LedgerChainSource, _replica.Replica
    Ledger = _module("avadios.services.ledger.state", "services.ledger.state").Ledger
    InMemoryHub = _module("tests.ledger_gossip_hub", "services.ledger.gossip").InMemoryHub

ATTACKS = (
    "stale_votes",
    "catch_up_endless_chain",
    "catch_up_endless_frontiers",
    "orphan_replay",
    "stray_vote_replay",
    "padding",
    "fork_storm",
    "refund_timing",
    "hold_binds",
)
FUNDS = 1_000_000_000
HOUR_MS = 3_600_000
REPLAY_RATE = 5_000  # items a second the replaying attacker sends (batches of 256)
FORKS = 1_500
Gossip = ledger_pb2.LedgerGossip


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def padding(size: int) -> bytes:
    """`size` bytes of unknown field 99, encoded: appended to a block or vote, neither its hash nor its signature
    sees them."""
    n, varint = size, bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        varint.append(byte | (0x80 if n else 0))
        if not n:
            break
    return b"\x9a\x06" + bytes(varint) + os.urandom(size)


def make_door(network: bytes, genesis: Genesis) -> Callable[[ledger_pb2.LedgerGossipBatch], list[Any]]:
    """What a GossipBatch from a peer passes before the replica sees it, in whichever code is on the path."""
    try:
        from avadios.ledger.gossip_check import GossipDoor

        door = GossipDoor(network, genesis.weight_of, len(genesis.representatives))
        return door.admit
    except ImportError:  # the code before: the gateway's shape check, then the ledger service's signature checks
        from avadios.ledger.block import verify_block, verify_vote
        from avadios.ledger.errors import BadVote

        check_gossip_batch = importlib.import_module("services.gateway.ledger_relay").check_gossip_batch

        def admit(batch: ledger_pb2.LedgerGossipBatch) -> list[Any]:
            check_gossip_batch(batch)
            for item in batch.items:
                if item.HasField("block"):
                    verify_block(item.block, network)
                else:
                    if not genesis.weight_of(item.vote.representative):
                        raise BadVote("not a representative")
                    verify_vote(item.vote, network)
            return list(batch.items)

        return admit


class Net:
    """Five replicas through the in-memory hub, real time (with an offset the stale-vote attack turns back)."""

    def __init__(self, root: Path) -> None:
        self.offset = 0
        self.wallets = [Wallet.generate() for _ in range(4)]
        self.attacker = Wallet.generate()  # holds 1 micro-AUTOM: all a fork storm needs
        self.keys = [SigningKey.generate() for _ in range(5)]
        balances = [Allocation(w.account, Micro(FUNDS)) for w in self.wallets]
        balances.append(Allocation(self.attacker.account, Micro(1)))
        self.genesis = Genesis(
            name="hostile",
            balances=tuple(balances),
            representatives=tuple(RepresentativeWeight(bytes(k.verify_key), 1) for k in self.keys),
        )
        self.network = self.genesis.hash
        self.hub = InMemoryHub()
        self.replicas: list[Replica] = []
        for i, key in enumerate(self.keys):
            replica = Replica(Ledger(root / f"node{i}", self.genesis), key, clock=self.clock)
            replica.gossip = self.hub.join(f"node{i}", replica.on_gossip)
            self.replicas.append(replica)
        self.victim, self.entry = self.replicas[0], self.replicas[1]
        self.admit = make_door(self.network, self.genesis)
        self.refused_batches = 0

    def clock(self) -> int:
        return int(time.time() * 1000) + self.offset

    def tip(self, replica: Replica, wallet: Wallet) -> ChainTip:
        r = replica.ledger.account(wallet.account)
        return ChainTip(r.head, r.height, r.balance, r.timestamp_ms)

    def attack(self, items: list[Any]) -> None:
        """A peer's batch to the victim, through the door; a refused batch is dropped whole."""
        for start in range(0, len(items), 256):
            try:
                admitted = self.admit(ledger_pb2.LedgerGossipBatch(items=items[start : start + 256]))
            except LedgerError:
                self.refused_batches += 1
                continue
            for item in admitted:
                self.victim.on_gossip(item)

    def tick(self) -> None:
        for index, replica in enumerate(self.replicas):
            if self.hub.members[f"node{index}"].online:
                replica.tick()
        self.hub.run()

    def close(self) -> None:
        for replica in self.replicas:
            replica.ledger.close()


class Honest:
    """One transfer at a time (at most 10 a second), the four wallets in turn, submitted at node 1 and timed until
    the victim has it confirmed. A transfer not confirmed in 10 s counts as stalled and its wallet stops."""

    def __init__(self, net: Net, on_block: Callable[[Block], None] | None = None) -> None:
        self.net, self.on_block = net, on_block
        self.turn = 0
        self.inflight: tuple[bytes, float, int] | None = None
        self.next_at = 0.0
        self.latencies: list[float] = []
        self.stalled = 0
        self.stuck: set[int] = set()
        self.errors: list[str] = []

    def step(self) -> None:
        net, now = self.net, time.perf_counter()
        if self.inflight is None and now >= self.next_at and len(self.stuck) < 4:
            while self.turn % 4 in self.stuck:
                self.turn += 1
            index = self.turn % 4
            self.turn += 1
            sender, to = net.wallets[index], net.wallets[(index + 1) % 4]
            block = sender.send(net.tip(net.entry, sender), to.account, 1, net.network, net.clock())
            started = time.perf_counter()
            try:
                digest, _ = net.entry.submit(block)
            except LedgerError as exc:
                self.errors.append(exc.reason)
                self.stuck.add(index)
                return
            if self.on_block is not None:
                self.on_block(block)  # an attacker that front-runs it
            self.inflight = (digest, started, index)
        net.hub.run()
        if self.inflight is not None:
            digest, started, index = self.inflight
            if net.victim.ledger.has_block(digest):
                self.latencies.append(time.perf_counter() - started)
                self.inflight = None
                self.next_at = started + 0.1
            elif time.perf_counter() - started > 10.0:
                self.stalled += 1
                self.stuck.add(index)
                self.inflight = None

    def take(self) -> list[float]:
        out, self.latencies = self.latencies, []
        return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


# ---- the attacks -----------------------------------------------------------------------------------------------


class Attack:
    """start() when the attack phase begins, step() every loop turn, extra() what it reports."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.sent = 0

    def prepare(self) -> None: ...

    def start(self) -> None: ...

    def step(self, elapsed: float) -> None: ...

    def on_block(self, block: Block) -> None: ...

    def stop(self) -> None: ...

    def extra(self) -> dict[str, Any]:
        return {}


class StaleVotes(Attack):
    """An hour-old final vote of each of two representatives that are now down, replayed every second."""

    def prepare(self) -> None:
        net = self.net
        net.offset = -HOUR_MS  # an hour ago, all five were up and voted
        a, b = net.wallets[0], net.wallets[1]
        digest, _ = net.entry.submit(a.send(net.tip(net.entry, a), b.account, 1, net.network, net.clock()))
        net.hub.run()
        down = {bytes(k.verify_key) for k in net.keys[3:]}
        self.old = [Gossip(vote=v) for v in net.victim.ledger.votes(digest) if v.representative in down]
        net.offset = 0
        net.tick()
        for name in ("node3", "node4"):
            net.hub.set_online(name, False)
        self.next = 0.0

    def step(self, elapsed: float) -> None:
        if elapsed >= self.next:
            self.net.attack(self.old)
            self.sent += len(self.old)
            self.next = elapsed + 1.0

    def extra(self) -> dict[str, Any]:
        return {"online_weight_seen": self.net.victim.online_weight(), "live_weight": 3}


class Replay(Attack):
    """One item replayed at REPLAY_RATE items a second, in full batches of 256: one batch a loop turn at most, as a
    node takes one GossipBatch per message, with its other work in between."""

    item: Any

    def step(self, elapsed: float) -> None:
        if int(elapsed * REPLAY_RATE) - self.sent >= 256:
            self.net.attack([self.item] * 256)
            self.sent += 256

    def extra(self) -> dict[str, Any]:
        parked = getattr(self.net.victim, "parked", None)
        if parked is not None:
            orphans, orphan_bytes, votes, vote_bytes = parked()
        else:  # the code before: lists under each missing hash
            lists = self.net.victim._orphans.values(), self.net.victim._stray_votes.values()  # type: ignore[attr-defined]
            orphans, votes = (sum(len(v) for v in group) for group in lists)
            orphan_bytes = vote_bytes = -1
        return {
            "parked_blocks": orphans,
            "parked_votes": votes,
            "parked_block_bytes": orphan_bytes,
            "parked_vote_bytes": vote_bytes,
        }


class OrphanReplay(Replay):
    """One validly signed block on a predecessor no one has, replayed."""

    def prepare(self) -> None:
        net = self.net
        a = net.attacker  # an account of its own: no honest block ever makes this one stale
        tip = ChainTip(os.urandom(32), 7, 1, 1)
        self.item = Gossip(block=a.send(tip, net.wallets[0].account, 1, net.network, net.clock()))


class StrayVoteReplay(Replay):
    """One real normal vote of a representative for a fork the victim never sees, replayed."""

    def prepare(self) -> None:
        net = self.net
        a = net.wallets[3]
        fork = a.send(net.tip(net.entry, a), net.wallets[0].account, 7, net.network, net.clock())
        self.item = Gossip(
            vote=make_vote(net.keys[2], [block_hash(fork, net.network)], False, net.clock(), net.network)
        )


class Padding(Attack):
    """Every tenth honest transfer is padded with 900 KB of unknown field by a third party and reaches the victim
    before the honest copy."""

    def prepare(self) -> None:
        self.count = 0
        self.padded: list[bytes] = []
        self.active = False
        self.suffix = padding(900_000)  # made before the clock starts: only the victim's work counts

    def start(self) -> None:
        self.active = True

    def on_block(self, block: Block) -> None:
        self.count += self.active
        if not self.active or self.count % 10:
            return
        self.net.attack([Gossip(block=Block.FromString(block.SerializeToString() + self.suffix))])
        self.sent += 1
        self.padded.append(block.account)

    def extra(self) -> dict[str, Any]:
        ledger = self.net.victim.ledger
        source = LedgerChainSource(ledger)
        stored = max((len(v) for _, v in ledger.scan("blocks")), default=0)
        pages = [sum(i.ByteSize() for i in source.chain(w.account, 1, 100)) for w in self.net.wallets]
        return {"largest_stored_block_bytes": stored, "largest_catch_up_page_bytes": max(pages, default=0)}


class ForkStorm(Attack):
    """An account holding 1 micro-AUTOM signs 1,500 sends of it on one predecessor; all go to the victim at once,
    and again every 10 s."""

    def prepare(self) -> None:
        net = self.net
        key = net.attacker
        tip = ChainTip(ZERO_HASH, 0, 1, 0)
        self.forks = [Gossip(block=key.send(tip, os.urandom(32), 1, net.network, net.clock())) for _ in range(FORKS)]
        self.next = 0.0
        self.admit_s: list[float] = []

    def step(self, elapsed: float) -> None:
        if elapsed >= self.next:
            started = time.perf_counter()
            self.net.attack(self.forks)
            self.admit_s.append(time.perf_counter() - started)
            self.sent += len(self.forks)
            self.next = elapsed + 10.0

    def extra(self) -> dict[str, Any]:
        elections = self.net.victim.elections.values()
        return {
            "largest_election": max((len(e.candidates) for e in elections), default=0),
            "first_admission_s": round(self.admit_s[0], 3) if self.admit_s else None,
        }


class LyingPeering:
    """The gateway's door to peers as catch-up sees it, answering for one peer that lies: today's peer door
    (`peers`, `send`) and the Peering calls of the code before (LedgerFrontiers and LedgerChain, each wrapping the
    request with the peer's address)."""

    def __init__(self, mode: str, account: bytes) -> None:
        self.mode, self.account = mode, account
        self.calls = 0
        self.served = 0

    async def peers(self) -> list[str]:
        return ["/ip4/127.0.0.1/tcp/4001/p2p/liar"]

    async def send(self, peer: str, body: Any, reply_class: Any, timeout: float = 10.0) -> Any:
        if isinstance(body, ledger_pb2.LedgerFrontiersRequest):
            return await self.frontiers(body)
        return await self.chain(body)

    async def LedgerFrontiers(self, request: Any, timeout: float) -> ledger_pb2.LedgerFrontiersReply:
        return await self.frontiers(request.request)

    async def LedgerChain(self, request: Any, timeout: float) -> ledger_pb2.LedgerChainReply:
        return await self.chain(request.request)

    async def frontiers(self, ask: Any) -> ledger_pb2.LedgerFrontiersReply:
        self.calls += 1
        await asyncio.sleep(0)
        if self.mode == "frontiers":
            base = int.from_bytes(ask.start or bytes(32), "big")
            fronts = [
                ledger_pb2.LedgerFrontier(account=(base + i).to_bytes(32, "big"), head=bytes(32), height=1)
                for i in range(ask.limit)
            ]
            self.served += len(fronts)
            return ledger_pb2.LedgerFrontiersReply(frontiers=fronts)
        if ask.start:
            return ledger_pb2.LedgerFrontiersReply()
        return ledger_pb2.LedgerFrontiersReply(
            frontiers=[ledger_pb2.LedgerFrontier(account=self.account, head=bytes(32), height=2**63 - 1)]
        )

    async def chain(self, ask: Any) -> ledger_pb2.LedgerChainReply:
        self.calls += 1
        await asyncio.sleep(0)
        template = Block(kind=SEND, account=ask.account, previous=bytes(32), balance=1, timestamp_ms=1)
        template.destination, template.amount, template.signature = bytes(32), 1, bytes(64)
        reply = ledger_pb2.LedgerChainReply()
        for i in range(ask.limit if self.mode == "chain" else 0):
            item = reply.blocks.add()
            item.block.CopyFrom(template)
            item.block.height = ask.from_height + i
            item.block.previous = os.urandom(32)
        self.served += len(reply.blocks)
        return reply


class CatchUpLie(Attack):
    """The victim catches up (every 5 s, as the service does) from a peer that claims an endless chain or endless
    frontiers."""

    mode = "chain"

    def prepare(self) -> None:
        self.peering = LyingPeering(self.mode, self.net.wallets[3].account)
        self.catchup = CatchUp(self.net.victim, self.peering)  # type: ignore[arg-type]
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.catchup.run_once(["/ip4/127.0.0.1/tcp/4001/p2p/liar"])
                except Exception as exc:  # the bench goes on whatever the catch-up does
                    print(f"catch-up raised {type(exc).__name__}: {exc}", file=sys.stderr)
                await asyncio.sleep(5.0)

        self.task = asyncio.get_running_loop().create_task(loop())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def extra(self) -> dict[str, Any]:
        return {
            "requests_answered": self.peering.calls,
            "items_served": self.peering.served,
            "liars_dropped": getattr(self.catchup, "liars", None),
        }


class CatchUpFrontiers(CatchUpLie):
    mode = "frontiers"


LOAD_ATTACKS: dict[str, type[Attack]] = {
    "stale_votes": StaleVotes,
    "catch_up_endless_chain": CatchUpLie,
    "catch_up_endless_frontiers": CatchUpFrontiers,
    "orphan_replay": OrphanReplay,
    "stray_vote_replay": StrayVoteReplay,
    "padding": Padding,
    "fork_storm": ForkStorm,
}


async def run_load(name: str, seconds: float, quiet: float, cap_mb: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="avadios-hostile-") as tmp:
        net = Net(Path(tmp))
        attack = LOAD_ATTACKS[name](net)
        honest = Honest(net, attack.on_block)
        try:
            attack.prepare()
            process = psutil.Process()

            async def phase(length: float, attacking: bool) -> dict[str, Any]:
                started, cpu0, rss0 = time.perf_counter(), process.cpu_times(), rss_mb()
                peak, next_tick, stopped = rss0, started + 1.0, False
                if attacking:
                    attack.start()
                while (elapsed := time.perf_counter() - started) < length:
                    if attacking:
                        attack.step(elapsed)
                    honest.step()
                    if time.perf_counter() >= next_tick:
                        net.tick()
                        next_tick += 1.0
                        peak = max(peak, rss_mb())
                        if peak - rss0 > cap_mb:
                            stopped = True
                            break
                    await asyncio.sleep(0.001)
                if attacking:
                    attack.stop()
                wall = time.perf_counter() - started
                cpu = process.cpu_times()
                used = (cpu.user - cpu0.user) + (cpu.system - cpu0.system)
                lat = honest.take()
                return {
                    "seconds": round(wall, 1),
                    "stopped_at_rss_cap": stopped,
                    "rss_start_mb": round(rss0, 1),
                    "rss_peak_mb": round(max(peak, rss_mb()), 1),
                    "cpu_pct": round(100 * used / wall, 1),
                    "confirmed": len(lat),
                    "p50_ms": pct(lat, 50),
                    "p95_ms": pct(lat, 95),
                    "max_ms": pct(lat, 100),
                }

            calm = await phase(quiet, False)
            stalled_before = honest.stalled
            hostile = await phase(seconds, True)
            hostile["stalled"] = honest.stalled - stalled_before
            hostile["submit_errors"] = honest.errors
            supply_ok = all(
                sum(r.balance + r.held + r.pending for _, r in replica.ledger.accounts()) == net.genesis.supply
                for replica in net.replicas
            )
            return {
                "attack": name,
                "quiet": calm,
                "hostile": hostile,
                "attack_items_sent": attack.sent,
                "refused_batches": net.refused_batches,
                "audit_ok": audit(net.victim.ledger).ok,
                "supply_ok": supply_ok,
                **attack.extra(),
            }
        finally:
            net.close()


def run_rule(name: str) -> dict[str, Any]:
    """The two rule attacks: each is one block, accepted or refused."""
    with tempfile.TemporaryDirectory(prefix="avadios-hostile-") as tmp:
        net = Net(Path(tmp))
        try:
            a = net.wallets[0]
            payees = [net.wallets[1].account, net.wallets[2].account]
            now = net.clock()
            ttl = HOUR_MS if name == "hold_binds" else 20_000
            hold = Block(
                kind=HOLD,
                account=a.account,
                previous=ZERO_HASH,
                height=1,
                balance=FUNDS - 100,
                timestamp_ms=now,
                amount=100,
                request_id=b"job",
                expires_at_ms=now + ttl,
                payees=payees,
                price_cap=50,
            )
            digest = sign_block(hold, a.signing_key, net.network)
            net.entry.submit(hold)
            net.hub.run()
            tries: list[Block] = []
            if name == "refund_timing":
                # our clock 59 s before the expiry; the holder stamps a refund at the expiry (within the skew)
                net.offset = ttl - 59_000
                tries.append(Block(kind=REFUND, source=digest, timestamp_ms=hold.expires_at_ms))
                what = "refund stamped at the expiry, 59 s before it by the replica's clock"
            else:
                # 1 ms after a 1-hour hold: release it paying no one (as before: no payouts; as now: every payee
                # named unpaid with a reason)
                tries.append(Block(kind=SETTLE, source=digest, timestamp_ms=now + 1))
                unpaid = Block(kind=SETTLE, source=digest, timestamp_ms=now + 1)
                for payee in payees:
                    unpaid.payouts.add(account=payee, amount=0)
                    if "reason" in ledger_pb2.LedgerPayout.DESCRIPTOR.fields_by_name:
                        unpaid.payouts[-1].reason = 1  # type: ignore[assignment]
                tries.append(unpaid)
                what = "settle paying no one, 1 ms after a 1-hour hold"
            outcomes = []
            for block in tries:
                block.account, block.previous, block.height = a.account, digest, 2
                block.balance = FUNDS
                sign_block(block, a.signing_key, net.network)
                try:
                    released, _ = net.entry.submit(block)
                    net.hub.run()
                    outcomes.append("accepted" if net.victim.ledger.has_block(released) else "unconfirmed")
                except LedgerError as exc:
                    outcomes.append(f"refused: {exc.reason}")
            return {"attack": name, "what": what, "outcomes": outcomes}
        finally:
            net.close()


# ---- driver and report ----------------------------------------------------------------------------------------


def report(paths: list[str]) -> None:
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            result = json.loads(line)
            rows.setdefault(result["attack"], {})[result["label"]] = result
    print(
        "| attack | code | victim RSS quiet → peak (MB) | process CPU quiet → attack | honest transfers confirmed "
        "(quiet / attack) | p95 quiet → attack | notes |"
    )
    print("|---|---|---|---|---|---|---|")
    for attack in ATTACKS:
        for label, r in rows.get(attack, {}).items():
            if "outcomes" in r:
                print(f"| {attack} | {label} | | | | | {r['what']}: {'; '.join(r['outcomes'])} |")
                continue
            q, h = r["quiet"], r["hostile"]
            notes = {k: v for k, v in r.items() if k not in ("attack", "label", "quiet", "hostile")}
            cap = f" (stopped after {h['seconds']} s: grew past the cap)" if h["stopped_at_rss_cap"] else ""
            p95 = (
                f"{q['p95_ms'] or 0:.0f} → {h['p95_ms']:.0f} ms (max {q['max_ms'] or 0:.0f} → {h['max_ms']:.0f})"
                if h["p95_ms"] is not None
                else "none confirmed"
            )
            print(
                f"| {attack} | {label} | {q['rss_peak_mb']:.0f} → {h['rss_peak_mb']:.0f}{cap} | {q['cpu_pct']:.0f} % → "
                f"{h['cpu_pct']:.0f} % | {q['confirmed']} / {h['confirmed']} (stalled {h['stalled']}) | {p95} | "
                f"{json.dumps(notes)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", choices=ATTACKS, action="append", help="default: all of them")
    parser.add_argument("--seconds", type=float, default=60.0, help="attack time (the issue asks for 60 s)")
    parser.add_argument("--quiet", type=float, default=10.0, help="honest traffic alone first, the baseline")
    parser.add_argument("--rss-cap-mb", type=float, default=1024.0)
    parser.add_argument("--label", default="this code")
    parser.add_argument("--out", help="append one JSON line per attack here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one attack, JSON out
    parser.add_argument("--report", nargs="+", help="print the markdown table of these JSON-lines files")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    if args.one:
        (name,) = args.attack
        if name in LOAD_ATTACKS:
            result = asyncio.run(run_load(name, args.seconds, args.quiet, args.rss_cap_mb))
        else:
            result = run_rule(name)
        print(json.dumps({**result, "label": args.label}))
        return
    for name in args.attack or ATTACKS:  # each attack in a fresh process: its memory is its own
        child = [
            sys.executable,
            __file__,
            "--one",
            "--attack",
            name,
            "--seconds",
            str(args.seconds),
            "--quiet",
            str(args.quiet),
            "--rss-cap-mb",
            str(args.rss_cap_mb),
            "--label",
            args.label,
        ]
        done = subprocess.run(child, capture_output=True, text=True, timeout=args.seconds + args.quiet + 600)
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode or not line:
            print(f"{name}: failed ({done.returncode}): {done.stderr[-2000:]}", file=sys.stderr)
            continue
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as out:
                out.write(line + "\n")


if __name__ == "__main__":
    main()
