"""The ledger's side of replication between nodes: gossip out through the gateway's peer door (never a
socket of our own), and catch-up from peers: chains fetched over P2P a page at a time, each page verified and
applied before the next is asked for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque

from avadios.errors import AvadiosError
from avadios.ledger.address import short
from avadios.ledger.errors import BadPeerReply
from avadios.ledger.gossip_check import GossipDoor
from avadios.peering import PeerDoorClient
from avadios.services.ledger.replica import CatchUpReport, Gossiped, Replica
from avadios.v1 import ledger_pb2

log = logging.getLogger("avadios.ledger.network")
MAX_BATCH = 256  # items per P2P message (the gateway refuses more)
MAX_QUEUE = 20_000  # beyond this the oldest items go: open elections are re-gossiped by the replica's tick
CHAIN_PAGE = 100  # blocks per GetChain page (the server also ends a page before 512 KiB)
FRONTIER_PAGE = 1000
MAX_FRONTIERS_PER_ROUND = 10_000  # account heads read per round; the next round goes on from the last one
MAX_BLOCKS_PER_ROUND = 5_000  # blocks fetched and applied per round; `more` asks for the next round soon
ROUND_TIME_S = 30.0  # a slow peer cannot hold a round longer than this (each fetch also has its own timeout)
LIAR_BAN_S = 600.0
BROADCAST_TIMEOUT_S = 3.0  # per peer: one that is away must not hold up the next batch for long
FETCH_TIMEOUT_S = 15.0


class NetGossip:
    """A replica's Gossip: `broadcast` only queues (the replica is synchronous); one task sends what queued up
    while the previous batch was on the wire as one LedgerGossipBatch, so batches grow with the load."""

    def __init__(self, peering: PeerDoorClient) -> None:
        self.peering = peering
        self._queue: deque[Gossiped] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent_batches = 0
        self.dropped = 0
        self._last_error = 0.0

    def broadcast(self, item: Gossiped) -> None:
        self._queue.append(item)
        if len(self._queue) > MAX_QUEUE:
            self._queue.popleft()
            self.dropped += 1
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                count = min(len(self._queue), MAX_BATCH)
                batch = ledger_pb2.LedgerGossipBatch(items=[self._queue.popleft() for _ in range(count)])
                try:
                    reply = await self.peering.broadcast(batch, timeout=BROADCAST_TIMEOUT_S)
                    self.sent_batches += 1
                    if reply.failures:
                        self._warn("some peers did not take ledger gossip: %s", "; ".join(reply.failures))
                except AvadiosError as exc:
                    # the gateway is not up yet (or restarting): what we lose here, the replica's tick re-sends
                    self._warn("ledger gossip not sent: %s", exc.message)
                except Exception as exc:  # this task must outlive any one failed send
                    self._warn("ledger gossip not sent: %s", f"{type(exc).__name__}: {exc}")

    def _warn(self, text: str, detail: str) -> None:
        now = time.monotonic()
        if now - self._last_error > 10.0:  # a peer that is down would otherwise log on every batch
            self._last_error = now
            log.info(text, detail)


class CatchUp:
    """Pulls what peers confirmed while this node was away (or missed gossip), through the gateway, one page at a
    time: each page is checked at the door and applied (every block verified, with its quorum) before the next is
    asked for, so a peer's claims cost us one page of memory, never what it says it has. A round reads at most
    MAX_FRONTIERS_PER_ROUND account heads (the next round goes on from there) and MAX_BLOCKS_PER_ROUND blocks.
    A peer that lies (a page that breaks the protocol, a block that fails its checks, a frontier above what it can
    serve) is dropped from catch-up for LIAR_BAN_S."""

    def __init__(self, replica: Replica, peering: PeerDoorClient) -> None:
        self.replica = replica
        self.peering = peering
        genesis = replica.genesis
        self.door = GossipDoor(replica.network, genesis.weight_of, len(genesis.representatives))
        self.applied = 0
        self.rounds = 0
        self.liars = 0
        self._cursor = b""  # where the next round's frontier scan starts (b"": from the first account)
        self._banned: dict[str, float] = {}  # peer -> monotonic time its ban ends

    async def peers(self) -> list[str]:
        return await self.peering.peers()

    # ---- the two requests to a peer: the only place that knows how they travel ------------------------------

    async def fetch_frontiers(self, peer: str, start: bytes, limit: int) -> ledger_pb2.LedgerFrontiersReply:
        request = ledger_pb2.LedgerFrontiersRequest(start=start, limit=limit)
        return await self.peering.send(peer, request, ledger_pb2.LedgerFrontiersReply, timeout=FETCH_TIMEOUT_S)

    async def fetch_chain(self, peer: str, account: bytes, height: int, limit: int) -> ledger_pb2.LedgerChainReply:
        ask = ledger_pb2.LedgerChainRequest(account=account, from_height=height, limit=limit)
        return await self.peering.send(peer, ask, ledger_pb2.LedgerChainReply, timeout=FETCH_TIMEOUT_S)

    # ---- a round --------------------------------------------------------------------------------------------

    async def behind(self, peer: str) -> tuple[dict[bytes, int], bool]:
        """The accounts the peer says it is ahead on (account -> its claimed height), from the cursor on, at most
        MAX_FRONTIERS_PER_ROUND heads read; and whether the scan reached the peer's last account."""
        ledger = self.replica.ledger
        ahead: dict[bytes, int] = {}
        start, read = self._cursor, 0
        while read < MAX_FRONTIERS_PER_ROUND:
            limit = min(FRONTIER_PAGE, MAX_FRONTIERS_PER_ROUND - read + (1 if start else 0))
            page = self.door.frontiers_page(await self.fetch_frontiers(peer, start, limit), start, limit)
            fresh = [f for f in page if f.account != start or not start]  # `start` is inclusive: repeated
            for front in fresh:
                if front.height > ledger.account(front.account).height:
                    ahead[front.account] = front.height
            read += len(fresh)
            if len(page) < limit or not fresh:
                self._cursor = b""
                return ahead, True
            start = page[-1].account
        self._cursor = start
        return ahead, False

    async def sync_from(self, peer: str) -> CatchUpReport:
        """One round from one peer. Raises BadPeerReply when the peer lies (what it served before is kept: every
        block applied was verified with its quorum)."""
        ahead, complete = await self.behind(peer)
        ledger, replica = self.replica.ledger, self.replica
        verified: set[bytes] = set()  # votes checked this round: one vote covers many blocks
        applied, budget, started = 0, MAX_BLOCKS_PER_ROUND, time.monotonic()
        progress = True
        while ahead and progress and budget > 0 and time.monotonic() - started < ROUND_TIME_S:
            progress = False
            for account in list(ahead):
                height = ledger.account(account).height
                if height >= ahead[account]:
                    del ahead[account]
                    continue
                if budget <= 0:
                    break
                limit = min(CHAIN_PAGE, budget, ahead[account] - height)
                reply = await self.fetch_chain(peer, account, height + 1, limit)
                # exactly what was asked for, or the peer lies (blocks gossip confirmed meanwhile are skipped)
                page = self.door.chain_page(reply, account, height + 1, limit)
                if not page:
                    raise BadPeerReply(
                        f"claimed {short(account)} up to height {ahead[account]} but serves nothing above {height}"
                    )
                budget -= len(page)
                outcome = replica.apply_confirmed(page, verified)
                applied += outcome.applied
                self.applied += outcome.applied
                if outcome.refused is not None:
                    raise BadPeerReply(f"{short(account)}: {outcome.refused}")
                if outcome.applied:
                    progress = True
                await asyncio.sleep(0)  # a page at a time: gossip and wallets are served in between
        more = not complete or (bool(ahead) and progress)
        return CatchUpReport(applied, 0, (), more=more)

    async def run_once(self, peers: list[str] | None = None) -> CatchUpReport | None:
        """Catch up from the first peer (in random order, liars left out) that answers. None when none did."""
        peers = await self.peers() if peers is None else peers
        now = time.monotonic()
        self._banned = {p: until for p, until in self._banned.items() if until > now}
        candidates = [p for p in peers if p not in self._banned]
        random.shuffle(candidates)
        for peer in candidates:
            try:
                report = await self.sync_from(peer)
            except BadPeerReply as exc:
                self.liars += 1
                self._banned[peer] = time.monotonic() + LIAR_BAN_S
                self._cursor = b""
                log.warning("catch-up: dropped peer %s for %.0f s: %s", peer, LIAR_BAN_S, exc.message)
                continue
            except AvadiosError as exc:
                log.info("catch-up from %s failed: %s", peer, exc.message)
                continue
            self.rounds += 1
            if report.applied:
                log.info("caught up from a peer", extra={"peer": peer, "applied": report.applied})
            return report
        return None
