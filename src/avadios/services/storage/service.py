"""The Storage servicer: a thin shell over the owner's pipeline (owner.py) and the hoster's shard store
(hoster.py). Peers reach the hoster's side only through the gateway's peer door; the owner reaches other
hosters only through it too (`avadios.peering.PeerDoorClient`), and its own store directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from avadios import identity
from avadios.errors import AvadiosError, InvalidArgument
from avadios.ledger.client import WalletClient, ledger_stub
from avadios.ledger.wallet import node_wallet
from avadios.peering import PeerDoorClient
from avadios.runtime import ServiceContext
from avadios.services.storage import layout, placement
from avadios.services.storage.core import DEFAULT_SEGMENT_SIZE
from avadios.services.storage.errors import FileNotFound
from avadios.services.storage.hoster import ShardStore
from avadios.services.storage.index import FileIndex
from avadios.services.storage.layout import FileLayout
from avadios.services.storage.owner import Owner
from avadios.transport import NatsChannel, ServerContext
from avadios.v1 import common_pb2, discovery_pb2, ledger_pb2, storage_pb2, storage_pb2_grpc
from avadios.v1.discovery_nats import DiscoveryClient

log = logging.getLogger("avadios.storage")
UNPAID = ledger_pb2.LedgerUnpaidReason
PEER_TIMEOUT_S = 15.0
LOCATE_TIMEOUT_S = 5.0
CHORES_EVERY_S = 30.0
FIRST_CHORES_S = 5.0


class PeerHosters:
    """Hosters as the owner sees them: this node's own store by its node id, every other through the door."""

    def __init__(
        self, me: str, store: ShardStore, door: PeerDoorClient, discovery: DiscoveryClient, price: int
    ) -> None:
        self.me, self.shards, self.door, self.discovery, self.price = me, store, door, discovery, price

    async def store(self, hoster: str, address: bytes, data: bytes) -> None:
        if hoster == self.me:
            await asyncio.to_thread(self.shards.put, address, data, self.me)
            return
        await self.door.send(hoster, storage_pb2.ShardStore(hash=address, data=data), storage_pb2.StoreShardReply,
                             timeout=PEER_TIMEOUT_S)  # fmt: skip

    async def fetch(self, hoster: str, address: bytes) -> bytes:
        if hoster == self.me:
            return await asyncio.to_thread(self.shards.get, address)
        reply = await self.door.send(hoster, storage_pb2.ShardFetch(hash=address), storage_pb2.ShardBytes,
                                     timeout=PEER_TIMEOUT_S)  # fmt: skip
        return reply.data

    async def audit(self, hoster: str, address: bytes, nonce: bytes, offset: int, length: int) -> bytes:
        if hoster == self.me:
            return await asyncio.to_thread(self.shards.audit, address, nonce, offset, length)
        body = storage_pb2.ShardAudit(hash=address, nonce=nonce, offset=offset, length=length)
        reply = await self.door.send(hoster, body, storage_pb2.AuditShardReply, timeout=PEER_TIMEOUT_S)
        return reply.digest

    async def delete(self, hoster: str, address: bytes) -> None:
        if hoster == self.me:
            await asyncio.to_thread(self.shards.delete, address, self.me)
            return
        await self.door.send(hoster, storage_pb2.ShardDelete(hash=address), storage_pb2.DeleteShardReply,
                             timeout=PEER_TIMEOUT_S)  # fmt: skip

    async def candidates(self, local_only: bool) -> list[placement.Hoster]:
        """This node alone for a local-only file; else the peers whose signed profiles offer storage (this node
        too only when no peer does: a file's redundancy should not all sit on its owner's disk)."""
        own = placement.Hoster(self.me, self.shards.free_bytes, self.price)
        if local_only:
            return [own]
        peers: discovery_pb2.ListPeersReply = await self.discovery.ListPeers(
            discovery_pb2.ListPeersRequest(), timeout=10.0
        )
        offered = [
            placement.Hoster(
                p.node_id, p.storage.free_bytes, p.storage.price_per_gib_month, p.reliability, p.rtt_ms, p.payee
            )
            for p in peers.peers
            if p.HasField("storage") and p.failures == 0
        ]
        return offered or [own]


class WalletPayer:
    """The owner's payments through the node's wallet and the ledger service: one HOLD a term, one SETTLE."""

    def __init__(self, wallet: WalletClient) -> None:
        self.wallet = wallet

    async def hold(self, file_id: bytes, prices: dict[bytes, int], ttl_s: float) -> bytes:
        result = await self.wallet.hold(
            file_id, list(prices), max(prices.values()), int(ttl_s * 1000), amount=sum(prices.values())
        )
        return result.block.SerializeToString()

    async def settle(self, hold_block: bytes, paid: dict[bytes, int], failed: dict[bytes, bool]) -> None:
        unpaid = {
            payee: int(UNPAID.UNPAID_REJECTED if all_failed else UNPAID.UNPAID_NOT_DELIVERED)
            for payee, all_failed in failed.items()
        }
        await self.wallet.settle(ledger_pb2.LedgerBlock.FromString(hold_block), paid, unpaid)


class StorageRoom(storage_pb2_grpc.StorageServicer):
    descriptor = storage_pb2.DESCRIPTOR.services_by_name["Storage"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        config = ctx.config
        me = identity.load_or_create(config.home)
        self.node_id = me.node_id
        channel = NatsChannel(ctx.nc)
        self.store = ShardStore(config.home / "storage" / "shards", config.storage_quota_bytes)
        self.hosters = PeerHosters(
            me.node_id,
            self.store,
            PeerDoorClient(channel),
            DiscoveryClient(channel),
            config.storage_price_per_gib_month,
        )
        self.discovery = DiscoveryClient(channel)
        self.owner = Owner(
            FileIndex(config.home / "storage" / "files"), self.hosters, config.storage_k, config.storage_n,
            DEFAULT_SEGMENT_SIZE, config.storage_repair_threshold,
            payer=WalletPayer(WalletClient(ledger_stub(channel, 30.0), node_wallet(config.home, me.signing_key))),
            term_s=config.storage_term_s, settle_after_s=config.storage_settle_after_s, on_verdicts=self._verdicts,
            locate=self._locate,
        )  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []

    async def _locate(self, root: bytes) -> tuple[FileLayout, list[list[str]]]:
        """Ask every peer for the file's location; the first answer whose layout hashes to `root` is used."""
        door = self.hosters.door
        peers = await door.peers()

        async def ask(peer: str) -> storage_pb2.FileLocation | None:
            try:
                return await door.send(peer, storage_pb2.FileLocate(root=root), storage_pb2.FileLocation,
                                       timeout=LOCATE_TIMEOUT_S)  # fmt: skip
            except AvadiosError:
                return None

        for answer in asyncio.as_completed([ask(p) for p in peers]):
            location = await answer
            if location is None:
                continue
            try:
                file_layout = layout.decode(location.layout, root)
            except AvadiosError:
                continue  # not this file's layout: a peer that lies is ignored
            return file_layout, [list(s.hosters) for s in location.segments]
        raise FileNotFound(
            f"no node among {len(peers)} peers knows file {root.hex()[:16]}…: its owner's node may be offline"
        )

    async def _verdicts(self, verdicts: list[tuple[str, bool, str]]) -> None:
        """Audit outcomes go to discovery's reliability book, as Proof of Inference verdicts do."""
        request = discovery_pb2.RecordVerdictsRequest(
            verdicts=[
                discovery_pb2.Verdict(node_id=node, accepted=ok, reason=f"storage audit: {why}" if why else "")
                for node, ok, why in verdicts
                if node != self.node_id
            ]
        )
        if request.verdicts:
            await self.discovery.RecordVerdicts(request, timeout=10.0)

    @classmethod
    async def create(cls, ctx: ServiceContext) -> StorageRoom:
        return cls(ctx)

    @property
    def servicer(self) -> object:
        return self

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._chores()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.store.close()

    async def _chores(self) -> None:
        """Abort idle uploads (their shards are deleted) and audit (and repair) owned files on schedule."""
        interval = self.ctx.config.storage_audit_interval_s
        last_audit = asyncio.get_running_loop().time()
        delay = FIRST_CHORES_S  # soon after start: shards of uploads a crash left unfinished are deleted
        while True:
            await asyncio.sleep(delay)
            delay = min(CHORES_EVERY_S, interval) if interval else CHORES_EVERY_S
            try:
                await self.owner.abort_idle()
                await self.owner.clean_orphans()
                now = asyncio.get_running_loop().time()
                if interval and now - last_audit >= interval:
                    last_audit = now
                    for info in self.owner.list():
                        await self.owner.check(info.verify_cap, repair=True)
            except AvadiosError as exc:
                log.info("storage chores: %s", exc.message)
            except Exception:
                log.exception("storage chores failed")

    def counters(self) -> dict[str, int]:
        h, o = self.store.counters, self.owner.counters
        return {
            "bytes_stored": self.store.used_bytes,
            "shards_stored": self.store.shards,
            "shards_served": h.shards_served,
            "hoster_audits_passed": h.audits_passed,
            "hoster_audits_failed": h.audits_failed,
            "refused_over_quota": h.refused_over_quota,
            "refused_bad_hash": h.refused_bad_hash,
            "files_put": o.files_put,
            "bytes_put": o.bytes_put,
            "audits_passed": o.audits_passed,
            "audits_failed": o.audits_failed,
            "repairs": o.repairs,
        }

    def health(self) -> common_pb2.HealthReply:
        s = self.store
        return self.ctx.base_health(
            common_pb2.HealthReply.SERVING,
            f"hosting {s.shards} shards, {s.used_bytes} of {s.quota_bytes} bytes; "
            f"{len(self.owner.uploads)} uploads open; {self.owner.counters.repairs} shards repaired",
            counters=self.counters(),
        )

    # ---- the owner's side, in-node ------------------------------------------------------------------------------

    async def BeginPut(self, request: storage_pb2.BeginPutRequest, context: ServerContext) -> storage_pb2.BeginPutReply:
        upload = await self.owner.begin(request.name, request.k, request.n, request.local_only)
        codec = upload.writer.codec
        return storage_pb2.BeginPutReply(
            upload_id=upload.upload_id, segment_size=upload.writer.segment_size, k=codec.k, n=codec.n
        )

    async def PutSegment(
        self, request: storage_pb2.PutSegmentRequest, context: ServerContext
    ) -> storage_pb2.PutSegmentReply:
        hosters = await self.owner.put_segment(request.upload_id, request.index, request.data)
        return storage_pb2.PutSegmentReply(stored=request.index + 1, hosters=hosters)

    async def FinishPut(self, request: storage_pb2.FinishPutRequest, context: ServerContext) -> storage_pb2.FileInfo:
        record, file_layout = await self.owner.finish(request.upload_id)
        log.info("file stored", extra={"size": file_layout.file_size, "segments": file_layout.segment_count})
        return self.owner.info(record, file_layout, True)

    async def AbortPut(self, request: storage_pb2.AbortPutRequest, context: ServerContext) -> storage_pb2.AbortPutReply:
        return storage_pb2.AbortPutReply(shards_deleted=await self.owner.abort(request.upload_id))

    async def OpenRead(self, request: storage_pb2.GetFileRequest, context: ServerContext) -> storage_pb2.ReadInfo:
        read_id, reader = await self.owner.open_read(request.cap)
        return storage_pb2.ReadInfo(
            read_id=read_id, name=reader.name, size=reader.layout.file_size, segments=reader.layout.segment_count
        )

    async def ReadSegment(
        self, request: storage_pb2.ReadSegmentRequest, context: ServerContext
    ) -> storage_pb2.FileChunk:
        data = await self.owner.read_segment(request.read_id, request.index)
        return storage_pb2.FileChunk(data=data, index=request.index)

    async def ListFiles(
        self, request: storage_pb2.ListFilesRequest, context: ServerContext
    ) -> storage_pb2.ListFilesReply:
        return storage_pb2.ListFilesReply(files=self.owner.list())

    async def RemoveFile(
        self, request: storage_pb2.RemoveFileRequest, context: ServerContext
    ) -> storage_pb2.RemoveFileReply:
        return storage_pb2.RemoveFileReply(shards_deleted=await self.owner.remove(request.cap))

    async def CheckFile(
        self, request: storage_pb2.CheckFileRequest, context: ServerContext
    ) -> storage_pb2.CheckFileReply:
        return await self.owner.check(request.cap, request.repair)

    async def Hosting(self, request: storage_pb2.HostingRequest, context: ServerContext) -> storage_pb2.HostingReply:
        s, c = self.store, self.store.counters
        return storage_pb2.HostingReply(
            quota_bytes=s.quota_bytes, used_bytes=s.used_bytes, shards=s.shards,
            price_per_gib_month=self.ctx.config.storage_price_per_gib_month, audits_passed=c.audits_passed,
            audits_failed=c.audits_failed, shards_served=c.shards_served, refused_over_quota=c.refused_over_quota,
            refused_bad_hash=c.refused_bad_hash,
        )  # fmt: skip

    # ---- the hoster's side: peers, through the gateway's peer door ----------------------------------------------

    async def StoreShard(self, request: storage_pb2.ShardStore, context: ServerContext) -> storage_pb2.StoreShardReply:
        owner = _peer(context)
        await asyncio.to_thread(self.store.put, request.hash, request.data, owner)
        return storage_pb2.StoreShardReply(stored=True, free_bytes=self.store.free_bytes)

    async def FetchShard(self, request: storage_pb2.ShardFetch, context: ServerContext) -> storage_pb2.ShardBytes:
        _peer(context)
        return storage_pb2.ShardBytes(data=await asyncio.to_thread(self.store.get, request.hash))

    async def AuditShard(self, request: storage_pb2.ShardAudit, context: ServerContext) -> storage_pb2.AuditShardReply:
        _peer(context)
        digest = await asyncio.to_thread(self.store.audit, request.hash, request.nonce, request.offset, request.length)
        return storage_pb2.AuditShardReply(digest=digest)

    async def DeleteShard(
        self, request: storage_pb2.ShardDelete, context: ServerContext
    ) -> storage_pb2.DeleteShardReply:
        deleted = await asyncio.to_thread(self.store.delete, request.hash, _peer(context))
        return storage_pb2.DeleteShardReply(deleted=deleted)

    async def LocateFile(self, request: storage_pb2.FileLocate, context: ServerContext) -> storage_pb2.FileLocation:
        _peer(context)
        if len(request.root) != 32:
            raise InvalidArgument("a file's root is a 32-byte BLAKE3 hash")
        return self.owner.location(request.root)

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()


def _peer(context: ServerContext) -> str:
    if not context.peer:
        raise InvalidArgument("this method serves peers: it is reached through the gateway's peer door")
    return context.peer
