"""The Ledger servicer: this node's full replica, answering wallets over NATS and peers through the gateway's
peer door (which checks the envelope; every body is checked here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from avadios import identity
from avadios.errors import AvadiosError, InvalidArgument, NotFound
from avadios.ledger.address import encode_address
from avadios.ledger.block import HASH_BYTES, HOLD, KEY_BYTES
from avadios.ledger.errors import StalePredecessor
from avadios.ledger.genesis import GENESIS_FILE, Genesis, load_genesis, save_genesis, solo_genesis
from avadios.ledger.gossip_check import GossipDoor
from avadios.ledger.wallet import wallet_path
from avadios.peering import PeerDoorClient
from avadios.runtime import ServiceContext
from avadios.services.ledger.network import CatchUp, NetGossip
from avadios.services.ledger.replica import LedgerChainSource, Replica
from avadios.services.ledger.state import Ledger
from avadios.transport import NatsChannel, ServerContext
from avadios.v1 import common_pb2, ledger_pb2, ledger_pb2_grpc

log = logging.getLogger("avadios.ledger")
TICK_S = 1.0
CATCHUP_FIRST_S = 1.0  # after a start: retried this often until a peer answers (the gateway starts last)
CATCHUP_EVERY_S = 5.0  # then: chains confirmed while gossip missed us (a partition, a dropped batch)
CATCHUP_MORE_S = 0.2  # after a round that stopped at its caps (a node far behind)
MAX_PAGE = 1000
CONFIRMED = ledger_pb2.BLOCK_STATUS_CONFIRMED
UNCONFIRMED = ledger_pb2.BLOCK_STATUS_UNCONFIRMED


def genesis_for(home: Path, node_key: bytes) -> Genesis:
    """The home's genesis.json (a devnet writes one into every node's home); a node started alone makes its
    own: it is the sole representative and its wallet (or, without one yet, its node key) holds 1,000 AUTOM."""
    path = home / GENESIS_FILE
    if path.exists():
        return load_genesis(path)
    wallet = None
    if wallet_path(home).exists():
        from avadios.ledger.wallet import load_wallet

        wallet = load_wallet(home).account
    genesis = solo_genesis(node_key, wallet)
    save_genesis(genesis, path)
    log.info(
        "no genesis.json: made a solo genesis",
        extra={"funded": encode_address(wallet or node_key), "network": genesis.hash.hex()},
    )
    return genesis


def _key(data: bytes, what: str = "account") -> bytes:
    if len(data) != KEY_BYTES:
        raise InvalidArgument(f"{what} must be a {KEY_BYTES}-byte public key, got {len(data)} bytes")
    return data


class LedgerRoom(ledger_pb2_grpc.LedgerServicer):
    descriptor = ledger_pb2.DESCRIPTOR.services_by_name["Ledger"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        home = ctx.config.home
        node = identity.load_or_create(home)
        self.genesis = genesis_for(home, node.public_key)
        self.ledger = Ledger(home / "ledger", self.genesis)
        peering = PeerDoorClient(NatsChannel(ctx.nc))
        # A replica alone in its genesis (a solo node) has no one to tell; otherwise peers hear of every block and
        # vote through the gateway's peer door, and chains confirmed while we were away come back by catch-up.
        self.net = NetGossip(peering) if len(self.genesis.representatives) > 1 else None
        self.replica = Replica(
            self.ledger,
            node.signing_key,
            gossip=self.net,
            schedule_flush=self._schedule_flush,
            online_window_ms=int(ctx.config.ledger_online_window_s * 1000),
        )
        self.catchup = CatchUp(self.replica, peering)
        self.door = GossipDoor(self.ledger.network, self.genesis.weight_of, len(self.genesis.representatives))
        self._catchup_task: asyncio.Task[None] | None = None
        self._flushed: asyncio.Future[None] | None = None
        self.source = LedgerChainSource(self.ledger)
        self._waiters: dict[bytes, list[asyncio.Future[bool]]] = {}
        self.replica.add_listener(self._on_decided)
        self._tick: asyncio.Task[None] | None = None
        self._submitted = 0
        log.info(
            "ledger opened",
            extra={
                "network": self.ledger.network.hex(),
                "genesis": self.genesis.name,
                "confirmed": self.ledger.confirmed_count,
                "representative": bool(self.replica.self_rep),
            },
        )

    @classmethod
    async def create(cls, ctx: ServiceContext) -> LedgerRoom:
        return cls(ctx)

    @property
    def servicer(self) -> object:
        return self

    async def start(self) -> None:
        self._tick = asyncio.create_task(self._ticker())
        if self.net is not None:
            self.net.start()
            self._catchup_task = asyncio.create_task(self._catch_up_loop())

    async def _catch_up_loop(self) -> None:
        caught_up_once, more = False, False
        while True:
            await asyncio.sleep(CATCHUP_MORE_S if more else CATCHUP_EVERY_S if caught_up_once else CATCHUP_FIRST_S)
            more = False
            try:
                report = await self.catchup.run_once()
            except AvadiosError as exc:
                log.debug("catch-up: %s", exc.message)
                continue
            except Exception:
                log.exception("catch-up failed")
                continue
            more = report is not None and report.more  # a round stopped at its caps: go on soon
            if report is not None and not caught_up_once:
                caught_up_once = True
                log.info("caught up with a peer after start", extra={"applied": report.applied})

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.replica.tick()
            except Exception:
                log.exception("ledger tick failed")

    async def stop(self) -> None:
        for task in (self._tick, self._catchup_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.net is not None:
            await self.net.stop()
        self._flush()  # staged blocks whose callers are still waiting are written, not lost
        self.ledger.close()

    def _schedule_flush(self) -> None:
        """The replica has votes to sign: sign them at the loop's next turn, with those of every other block that
        arrived in this one (handlers run as tasks, so under load one turn holds many). No timer: when idle the
        next turn comes at once and a block waits microseconds for its vote."""
        loop = asyncio.get_running_loop()
        self._flushed = loop.create_future()
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        done, self._flushed = self._flushed, None
        try:
            self.replica.flush()
        except Exception:
            log.exception("ledger flush failed")
        finally:
            if done is not None and not done.done():
                done.set_result(None)

    def health(self) -> common_pb2.HealthReply:
        return self.ctx.base_health(
            common_pb2.HealthReply.SERVING,
            f"{self.ledger.confirmed_count} blocks confirmed, {len(self.replica.unconfirmed())} unconfirmed, "
            f"network {self.genesis.name}",
            requests_served=self._submitted,
        )

    def _on_decided(self, digest: bytes, confirmed: bool) -> None:
        for future in self._waiters.pop(digest, []):
            if not future.done():
                future.set_result(confirmed)

    # ---- wallets ---------------------------------------------------------------------------------------

    async def SubmitBlock(
        self, request: ledger_pb2.SubmitBlockRequest, context: ServerContext
    ) -> ledger_pb2.SubmitBlockReply:
        digest, confirmed = self.replica.submit(request.block)
        self._submitted += 1
        if not confirmed and self._flushed is not None:
            # our vote (and, on a node alone, the write) happens at the loop's next turn: answer after it
            await asyncio.shield(self._flushed)
            confirmed = self.ledger.has_block(digest)
        if not confirmed and request.wait_confirmed and self.replica.is_unconfirmed(digest):
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(digest, []).append(future)
            remaining = context.time_remaining()
            with contextlib.suppress(TimeoutError):
                # leave a little of the caller's deadline for the reply itself
                confirmed = await asyncio.wait_for(future, None if remaining is None else max(0.0, remaining - 0.2))
                if not confirmed:
                    raise StalePredecessor("a conflicting block of the same account won the vote; this one was dropped")
        return ledger_pb2.SubmitBlockReply(hash=digest, status=CONFIRMED if confirmed else UNCONFIRMED)

    async def GetAccount(
        self, request: ledger_pb2.LedgerAccountRequest, context: ServerContext
    ) -> ledger_pb2.LedgerAccountReply:
        account = _key(request.account)
        record = self.ledger.account(account)
        return ledger_pb2.LedgerAccountReply(
            account=account,
            balance=record.balance,
            held=record.held,
            pending=record.pending,
            head=record.head if record.height else b"",
            confirmed_height=record.height,
            head_timestamp_ms=record.timestamp_ms,
            network=self.ledger.network,
            unconfirmed=self.replica.unconfirmed_of(account),
        )

    async def GetHistory(
        self, request: ledger_pb2.LedgerHistoryRequest, context: ServerContext
    ) -> ledger_pb2.LedgerHistoryReply:
        account = _key(request.account)
        limit = min(request.limit or 100, MAX_PAGE)
        entries = [
            ledger_pb2.LedgerHistoryEntry(block=block, hash=digest, delta=delta)
            for digest, block, delta in self.ledger.history(account, limit, request.below_height)
        ]
        return ledger_pb2.LedgerHistoryReply(entries=entries)

    async def GetPending(
        self, request: ledger_pb2.LedgerPendingRequest, context: ServerContext
    ) -> ledger_pb2.LedgerPendingReply:
        account = _key(request.account)
        return ledger_pb2.LedgerPendingReply(
            entries=[
                ledger_pb2.LedgerPendingEntry(source=source, sender=p.sender, amount=p.amount)
                for source, p in self.ledger.pending_of(account)[:MAX_PAGE]
            ]
        )

    async def GetBlock(
        self, request: ledger_pb2.LedgerBlockRequest, context: ServerContext
    ) -> ledger_pb2.LedgerBlockReply:
        if len(request.hash) != HASH_BYTES:
            raise InvalidArgument(f"a block hash is {HASH_BYTES} bytes")
        block = self.ledger.block(request.hash)
        if block is not None:
            return ledger_pb2.LedgerBlockReply(block=block, status=CONFIRMED, votes=self.ledger.votes(request.hash))
        for digest, candidate in self.replica.unconfirmed():
            if digest == request.hash:
                return ledger_pb2.LedgerBlockReply(block=candidate, status=UNCONFIRMED)
        raise NotFound(f"no block {request.hash.hex()[:16]} on this replica")

    async def GetHold(
        self, request: ledger_pb2.LedgerHoldRequest, context: ServerContext
    ) -> ledger_pb2.LedgerHoldReply:
        if len(request.hash) != HASH_BYTES:
            raise InvalidArgument(f"a hold hash is {HASH_BYTES} bytes")
        record = self.ledger.hold(request.hash)
        block = self.ledger.block(request.hash)
        if record is not None and block is not None:
            reply = ledger_pb2.LedgerHoldReply(hash=request.hash, status=CONFIRMED, hold=record)
            reply.made_at_ms = block.timestamp_ms
            closed = self.ledger.block(record.closed_by) if record.closed_by else None
            if closed is not None:
                reply.closed_by.CopyFrom(closed)
            return reply
        for digest, candidate in self.replica.unconfirmed():
            if digest == request.hash and candidate.kind == HOLD:
                terms = ledger_pb2.LedgerHoldRecord(
                    holder=candidate.account,
                    amount=candidate.amount,
                    expires_at_ms=candidate.expires_at_ms,
                    price_cap=candidate.price_cap,
                    payees=candidate.payees,
                    request_id=candidate.request_id,
                    state=ledger_pb2.LedgerHoldRecord.OPEN,
                )
                return ledger_pb2.LedgerHoldReply(
                    hash=digest, status=UNCONFIRMED, hold=terms, made_at_ms=candidate.timestamp_ms
                )
        raise NotFound(f"no hold {request.hash.hex()[:16]} on this replica")

    async def GetStatus(
        self, request: ledger_pb2.LedgerStatusRequest, context: ServerContext
    ) -> ledger_pb2.LedgerStatusReply:
        online = self.replica.online_representatives()
        reps = [
            ledger_pb2.LedgerRepresentative(
                account=r.account,
                weight=r.weight,
                online=r.account in online,
                is_self=r.account == self.replica.self_rep,
            )
            for r in self.genesis.representatives
        ]
        accounts = sum(1 for _ in self.ledger.accounts())
        return ledger_pb2.LedgerStatusReply(
            network=self.ledger.network,
            supply=self.genesis.supply,
            accounts=accounts,
            confirmed_blocks=self.ledger.confirmed_count,
            unconfirmed_blocks=len(self.replica.unconfirmed()),
            representatives=reps,
            online_weight=self.replica.online_weight(),
            total_weight=self.genesis.total_weight,
            quorum_weight=self.replica.quorum_weight(),
            self_representative=self.replica.self_rep,
        )

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()

    # ---- peers (the gateway's peer door forwards their bodies to these; context.peer names the sender) -------

    async def GossipBatch(
        self, request: ledger_pb2.LedgerGossipBatch, context: ServerContext
    ) -> ledger_pb2.LedgerGossipAck:
        """A peer's batch, relayed by our gateway: the door (avadios.ledger.gossip_check) checks its shape, sizes,
        fields and every signature before any item is used, and one bad item refuses the whole batch with its reason
        (an honest peer never sends one). Only the canonical re-encoded items go on: nothing is stored or sent
        again as a peer encoded it."""
        items = self.door.admit(request)
        for item in items:
            self.replica.on_gossip(item)
        return ledger_pb2.LedgerGossipAck(accepted=len(items))

    async def GetFrontiers(
        self, request: ledger_pb2.LedgerFrontiersRequest, context: ServerContext
    ) -> ledger_pb2.LedgerFrontiersReply:
        if request.start:
            _key(request.start, "start")
        limit = min(request.limit or MAX_PAGE, MAX_PAGE)
        return ledger_pb2.LedgerFrontiersReply(
            frontiers=[
                ledger_pb2.LedgerFrontier(account=a, head=r.head, height=r.height)
                for a, r in self.ledger.frontiers(request.start, limit)
            ]
        )

    async def GetChain(
        self, request: ledger_pb2.LedgerChainRequest, context: ServerContext
    ) -> ledger_pb2.LedgerChainReply:
        account = _key(request.account)
        limit = min(request.limit or 256, MAX_PAGE)
        return ledger_pb2.LedgerChainReply(blocks=self.source.chain(account, request.from_height, limit))
