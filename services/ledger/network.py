"""The ledger's side of replication between nodes: gossip out through the gateway's peer door (never a
socket of our own), and catch-up from peers: chains prefetched over P2P, then verified block by block."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from avadios.errors import AvadiosError
from avadios.peering import PeerDoorClient
from avadios.v1 import ledger_pb2
from services.ledger.replica import CatchUpReport, Gossiped, Replica

log = logging.getLogger("avadios.ledger.network")
MAX_BATCH = 256  # items per P2P message (the gateway refuses more)
MAX_QUEUE = 20_000  # beyond this the oldest items go: open elections are re-gossiped by the replica's tick
CHAIN_PAGE = 100  # blocks per GetChain page: with their final votes, well under the 1 MiB envelope limit
FRONTIER_PAGE = 1000
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


@dataclass(slots=True)
class PrefetchedChains:
    """A peer's chains fetched ahead over P2P: the synchronous ChainSource that Replica.catch_up reads. Nothing
    here is trusted: catch_up checks every block's signature, link and quorum of final votes."""

    fronts: list[ledger_pb2.LedgerFrontier] = field(default_factory=list)
    blocks: dict[bytes, list[ledger_pb2.LedgerConfirmedBlock]] = field(default_factory=dict)

    def frontiers(self) -> Sequence[ledger_pb2.LedgerFrontier]:
        return self.fronts

    def chain(self, account: bytes, from_height: int, limit: int) -> Sequence[ledger_pb2.LedgerConfirmedBlock]:
        chain = self.blocks.get(account, [])
        start = next((i for i, item in enumerate(chain) if item.block.height >= from_height), len(chain))
        return [item for item in chain[start : start + limit] if item.block.height >= from_height]


class CatchUp:
    """Pulls what peers confirmed while this node was away (or missed gossip), through the gateway."""

    def __init__(self, replica: Replica, peering: PeerDoorClient) -> None:
        self.replica = replica
        self.peering = peering
        self.applied = 0
        self.rounds = 0

    async def peers(self) -> list[str]:
        return await self.peering.peers()

    async def prefetch(self, peer: str) -> PrefetchedChains:
        """Every frontier of `peer` and, for each account it is ahead on, the blocks above our height."""
        source = PrefetchedChains()
        start = b""
        while True:
            request = ledger_pb2.LedgerFrontiersRequest(start=start, limit=FRONTIER_PAGE)
            page = await self.peering.send(peer, request, ledger_pb2.LedgerFrontiersReply, timeout=FETCH_TIMEOUT_S)
            fresh = [f for f in page.frontiers if f.account != start or not start]
            source.fronts.extend(fresh)
            if len(page.frontiers) < FRONTIER_PAGE or not fresh:
                break
            start = page.frontiers[-1].account  # inclusive: the next page repeats it, and we skip it
        ledger = self.replica.ledger
        for front in source.fronts:
            height = ledger.account(front.account).height
            chain: list[ledger_pb2.LedgerConfirmedBlock] = []
            while height < front.height:
                ask = ledger_pb2.LedgerChainRequest(account=front.account, from_height=height + 1, limit=CHAIN_PAGE)
                reply = await self.peering.send(peer, ask, ledger_pb2.LedgerChainReply, timeout=FETCH_TIMEOUT_S)
                # a page must continue where we asked, in order: anything else ends this chain's fetch
                items = [b for i, b in enumerate(reply.blocks) if b.block.height == height + 1 + i]
                if not items:
                    break
                chain.extend(items)
                height = items[-1].block.height
            if chain:
                source.blocks[front.account] = chain
        return source

    async def run_once(self, peers: list[str] | None = None) -> CatchUpReport | None:
        """Catch up from the first peer (in random order) that answers. None when none did."""
        peers = await self.peers() if peers is None else peers
        random.shuffle(peers)
        for peer in peers:
            try:
                source = await self.prefetch(peer)
            except AvadiosError as exc:
                log.info("catch-up from %s failed: %s", peer, exc.message)
                continue
            self.rounds += 1
            if not source.blocks:
                return CatchUpReport(0, 0, ())
            report = self.replica.catch_up(source, batch=CHAIN_PAGE)
            self.applied += report.applied
            if report.applied or report.rejected:
                log.info(
                    "caught up from a peer",
                    extra={"peer": peer, "applied": report.applied, "rejected": report.rejected},
                )
            for reason in report.reasons[:5]:
                log.warning("catch-up refused a chain: %s", reason)
            return report
        return None
