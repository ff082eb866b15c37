"""The Verifier servicer: this node's network tier (RunJob, ListJobs) for the gateway, the provider's and the
scorer's side (Serve, ScoreResults) for peers through the gateway's peer door, and two chores of a paying and
earning node: refunds of holds that paid no one once they expire, and claiming what its wallet receives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from avadios import identity
from avadios.errors import AvadiosError, InvalidArgument
from avadios.ledger.client import WalletClient, ledger_stub
from avadios.ledger.wallet import node_wallet, payee_account
from avadios.peering import PeerDoorClient
from avadios.runtime import ServiceContext
from avadios.services.verifier.book import JobBook
from avadios.services.verifier.fault import Fault, check_fault
from avadios.services.verifier.provider import Provider
from avadios.services.verifier.requester import Requester
from avadios.transport import NatsChannel, ServerContext
from avadios.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, verifier_pb2
from avadios.v1.discovery_nats import DiscoveryClient
from avadios.v1.inference_nats import InferenceClient

log = logging.getLogger("avadios.verifier")
REFUND_EVERY_S = 5.0
MAX_JOBS_LISTED = 1000


class VerifierRoom(jobs_pb2_grpc.VerifierServicer):
    descriptor = jobs_pb2.DESCRIPTOR.services_by_name["Verifier"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        config = ctx.config
        me = identity.load_or_create(config.home)
        channel = NatsChannel(ctx.nc)
        inference = InferenceClient(channel, default_timeout=config.network_timeout_s)
        ledger = ledger_stub(channel, timeout=30.0)
        self.wallet = WalletClient(ledger, node_wallet(config.home, me.signing_key))
        self.book = JobBook(config.home / "verifier")
        self.requester = Requester(
            config,
            me,
            self.wallet,
            DiscoveryClient(channel),
            PeerDoorClient(channel),
            inference,
            self.book,
        )
        fault_kind = check_fault(config.devnet_fault, config.home)
        if fault_kind:
            log.warning("this devnet node lies as a provider", extra={"fault": fault_kind})
        self.provider = Provider(
            me,
            inference,
            ledger,
            payee=lambda: payee_account(config.home, me.public_key),
            price_per_1k=config.price_micro_autom_per_1k,
            check_hold=config.provider_check_hold,
            work_timeout_s=config.network_timeout_s,
            max_tokens_limit=config.context_length,
            fault=Fault(fault_kind, inference) if fault_kind else None,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.received = 0

    @classmethod
    async def create(cls, ctx: ServiceContext) -> VerifierRoom:
        return cls(ctx)

    @property
    def servicer(self) -> object:
        return self

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._every(REFUND_EVERY_S, self._refunds)))
        if self.ctx.config.wallet_auto_receive_s > 0:
            self._tasks.append(asyncio.create_task(self._every(self.ctx.config.wallet_auto_receive_s, self._receive)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, interval_s: float, chore: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await chore()
            except AvadiosError as exc:  # the ledger restarting, say: the next turn tries again
                log.debug("%s: %s", chore.__name__, exc.message)
            except Exception:
                log.exception("%s failed", chore.__name__)

    async def _refunds(self) -> None:
        await self.requester.refund_due()

    async def _receive(self) -> None:
        """Claim what the wallet was paid, as a Nano wallet does, so an earning provider's balance grows alone."""
        account = await self.wallet.account()
        if account.pending:
            async with self.requester.wallet_lock:
                self.received += await self.wallet.receive_all()

    def health(self) -> common_pb2.HealthReply:
        p = self.provider
        return self.ctx.base_health(
            common_pb2.HealthReply.SERVING,
            f"{self.requester.running} network requests running; served {p.served}, declined {p.declined}"
            + (f"; lying as {p.fault.kind!r} (devnet)" if p.fault else ""),
            requests_served=p.served,
        )

    # ---- the gateway's network tier -------------------------------------------------------------------------

    async def RunJob(self, request: jobs_pb2.JobRequest, context: ServerContext) -> jobs_pb2.JobReply:
        return await self.requester.run(request)

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: ServerContext) -> jobs_pb2.ListJobsReply:
        return jobs_pb2.ListJobsReply(jobs=self.book.recent(min(request.limit or 50, MAX_JOBS_LISTED)))

    # ---- peers, through the gateway's peer door -------------------------------------------------------------

    async def Serve(self, request: jobs_pb2.JobOffer, context: ServerContext) -> verifier_pb2.ProviderResult:
        return await self.provider.serve(request, _peer(context))

    async def ScoreResults(self, request: jobs_pb2.ScoreJob, context: ServerContext) -> jobs_pb2.ScoreJobReply:
        return await self.provider.score(request, _peer(context))

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()


def _peer(context: ServerContext) -> str:
    if not context.peer:
        raise InvalidArgument("this method serves peers: it is reached through the gateway's peer door")
    return context.peer
