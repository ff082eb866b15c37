"""A network request, start to end, on the requesting node: route, hold, offer, verify, judge, settle, record.

1. Route: discovery ranks the model's providers; the model is pinned by the BLAKE3 its best provider's signed
   entry names, and only providers of that exact GGUF are asked. N = the request's replicas (or the node's
   network_replicas); a provider with a long run of verified answers may be asked alone (adaptive replication,
   off by default) and such a request is still verified at network_spot_check_rate.
2. Price: each provider may quote up to `pricing.cap` at its advertised price; the hold's price cap is the
   largest of the chosen providers' caps and it holds that for each of them; providers are taken in ranked
   order while the hold stays within the request's max price. Nothing fits, or the wallet cannot hold it:
   PaymentRequired before any AUTOM moves.
3. Hold: one HOLD block naming the request id, the chosen providers' payee accounts, the cap and an expiry.
4. Offer: every provider gets the same request (max_tokens always set) through the gateway's peer door and
   returns a signed ProviderResult. A result that is malformed, badly signed, for another request or model, or
   signed by another node than the one asked is discarded and counts against that provider, as does silence.
5. Verify: this node re-scores every answer itself when it holds the pinned model; otherwise each provider
   scores the others' answers and signs its reports (a scorer whose own answer most of its scorers failed is
   not believed). src/avadios/services/verifier/verdict.py decides: a strict majority of the N asked must agree.
6. Settle: agreeing providers (on a failed request: every provider whose answer passed) are paid their quote;
   every other payee is named with its reason; the rest comes back at once. When no one is paid, the hold can
   only be refunded after its expiry (the ledger's rule): the refund is kept on disk and made then.
7. Reliability: each answer's verdict goes to discovery, the only thing that moves a provider's work score.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

import grpc

from avadios.config import NodeConfig
from avadios.errors import AvadiosError, InvalidArgument, NotFound, PaymentRequired
from avadios.identity import Identity, node_id_for
from avadios.ledger.client import BlockResult, WalletClient, refund_from_ms
from avadios.ledger.errors import InsufficientFunds
from avadios.peering import PeerDoorClient
from avadios.sampling_features import network_refusal
from avadios.services.verifier import pricing
from avadios.services.verifier.book import JobBook
from avadios.services.verifier.errors import Refused
from avadios.services.verifier.scoring import WrongModel, score_all
from avadios.services.verifier.signing import check_report, check_result
from avadios.services.verifier.verdict import Candidate, Verdict, Vote, answer_key, decide, majority
from avadios.v1 import discovery_pb2, inference_pb2, jobs_pb2, ledger_pb2, verifier_pb2
from avadios.v1.discovery_nats import DiscoveryClient
from avadios.v1.inference_nats import InferenceClient

log = logging.getLogger("avadios.verifier.requester")
UNPAID = ledger_pb2.LedgerUnpaidReason


class ModelUnknown(NotFound):
    """Neither this node nor any provider the network knows serves the model: the same 404 as a local one."""

    reason = "model_not_found"


@dataclass(slots=True)
class Laps:
    """Milliseconds since the previous lap."""

    at: float = field(default_factory=time.monotonic)

    def __call__(self) -> float:
        now = time.monotonic()
        elapsed, self.at = (now - self.at) * 1000, now
        return elapsed


@dataclass(slots=True)
class Chosen:
    """One provider asked, and what became of its answer."""

    candidate: discovery_pb2.RouteCandidate
    cap: int
    result: verifier_pb2.ProviderResult | None = None
    outcome: str = "no answer"
    reason: str = ""
    latency_ms: float = 0.0
    votes: list[Vote] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.candidate.node_id

    @property
    def payee(self) -> bytes:
        return self.candidate.payee


@dataclass(frozen=True, slots=True)
class Plan:
    chosen: list[Chosen]
    price_cap: int
    model_hash: bytes
    verify: bool  # False only for a trusted provider asked alone and not picked for a spot check


def plan(
    route: discovery_pb2.RouteReply,
    request: inference_pb2.GenerateRequest,
    replicas: int,
    max_price: int,
    holder: bytes,
    config: NodeConfig,
    rng: random.Random,
) -> Plan:
    """Which providers to ask and the hold's price cap; PaymentRequired("no_provider") when none fits."""
    if not route.ranked and not route.excluded:
        raise ModelUnknown(f"The model '{route.model}' is not on this node, and no node on the network serves it")
    usable = [c for c in route.ranked if len(c.payee) == 32 and len(c.model_blake3) == 32 and c.payee != holder]
    if not usable:
        why = "; ".join(f"{c.node_id[:12]}…: {c.excluded}" for c in route.excluded) or "none publishes it"
        raise PaymentRequired(f"no provider of model {route.model!r} is routable on the network ({why})", "no_provider")
    model_hash = usable[0].model_blake3
    usable = [c for c in usable if c.model_blake3 == model_hash]
    verify = True
    trusted = config.network_trusted_streak
    if trusted and usable[0].verified_streak >= trusted:
        replicas, verify = 1, rng.random() < config.network_spot_check_rate
    max_tokens = request.sampling.max_tokens
    chosen: list[Chosen] = []
    payees: set[bytes] = set()
    price_cap = 0
    for candidate in usable:
        if len(chosen) == replicas:
            break
        if candidate.payee in payees:
            continue  # one wallet, one payee: a settle pays each payee once
        cap = pricing.cap(request, max_tokens, candidate.price_micro_autom_per_1k)
        if max(price_cap, cap) * (len(chosen) + 1) > max_price:
            continue
        price_cap = max(price_cap, cap)
        chosen.append(Chosen(candidate, cap))
        payees.add(candidate.payee)
    if not chosen:
        cheapest = min(pricing.cap(request, max_tokens, c.price_micro_autom_per_1k) for c in usable)
        raise PaymentRequired(
            f"no provider of {route.model!r} answers within the price cap of {max_price} micro-AUTOM "
            f"(the cheapest would hold {cheapest})",
            "no_provider",
        )
    return Plan(chosen, price_cap, model_hash, verify)


def discredited(chosen: list[Chosen]) -> set[bytes]:
    """Scorers not to believe: providers whose own answer a strict majority of its scorers failed. A liar that
    fails every honest answer it scores is outvoted on its own answer first, and its reports then do not count."""
    out = set()
    for c in chosen:
        if c.result is None or not c.votes:
            continue
        failing = sum(1 for v in c.votes if not v.passed)
        if failing >= majority(len(c.votes)):
            out.add(c.result.provider_key)
    return out


class Requester:
    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        wallet: WalletClient,
        discovery: DiscoveryClient,
        door: PeerDoorClient,
        inference: InferenceClient,
        book: JobBook,
    ) -> None:
        self.config = config
        self.identity = identity
        self.wallet = wallet
        self.discovery = discovery
        self.door = door
        self.inference = inference
        self.book = book
        self.rng = random.Random()
        self.running = 0
        # One block at a time on this wallet's chain: two blocks signed on the same head would fork it and one would
        # lose the vote. Holds, settles, refunds and the service's auto-receive all take this lock.
        self.wallet_lock = asyncio.Lock()

    async def run(self, job: jobs_pb2.JobRequest) -> jobs_pb2.JobReply:
        started, started_ms = time.monotonic(), int(time.time() * 1000)
        request = inference_pb2.GenerateRequest()
        request.CopyFrom(job.request)
        if not request.model:
            raise InvalidArgument("a network request names its model")
        if refusal := network_refusal(request.sampling):
            raise InvalidArgument(refusal)
        request.sampling.max_tokens = request.sampling.max_tokens or self.config.default_max_tokens
        job_id = request.request_id = uuid.uuid4().hex
        replicas = job.replicas or self.config.network_replicas
        if not 1 <= replicas <= 16:
            raise InvalidArgument("replicas must be 1 to 16")
        timings, lap = jobs_pb2.JobTimings(), Laps()
        route = await self.discovery.Route(discovery_pb2.RouteRequest(model=request.model), timeout=30.0)
        the_plan = plan(
            route,
            request,
            replicas,
            job.max_price or self.config.network_max_price_micro,
            self.wallet.wallet.account,
            self.config,
            self.rng,
        )
        timings.route_ms = lap()
        hold = await self._hold(job_id, the_plan)
        timings.hold_ms = lap()
        self.running += 1
        try:
            await self._offer(request, the_plan, hold.hash)
            timings.answers_ms = lap()
            scored_by = await self._verify(request, the_plan)
            timings.verify_ms = lap()
        except BaseException:
            # the caller's deadline (a cancel) or a fault: nothing is paid, and the hold comes back at its expiry
            self.book.keep_for_refund(hold.block, hold.hash)
            raise
        finally:
            self.running -= 1
        verdict = self._judge(request, the_plan)
        record = jobs_pb2.JobRecord(
            job_id=job_id,
            model=request.model,
            started_unix_ms=started_ms,
            accepted=verdict.accepted,
            verdict="accepted" if verdict.accepted else f"failed: {verdict.reason}",
            replicas=len(the_plan.chosen),
            held=the_plan.price_cap * len(the_plan.chosen),
            hold_hash=hold.hash,
            scored_by=scored_by,
        )
        await self._settle(hold, the_plan, verdict, record)
        timings.settle_ms = lap()
        record.timings.CopyFrom(timings)
        await self._report_reliability(the_plan)
        record.duration_ms = (time.monotonic() - started) * 1000
        self.book.put(record)
        log.info(
            "network request done",
            extra={"request_id": job_id, "verdict": record.verdict, "cost": record.cost, "replicas": record.replicas},
        )
        reply = jobs_pb2.JobReply(job=record)
        if verdict.accepted:
            winner = next(c for c in the_plan.chosen if c.result and c.result.provider_key == verdict.chosen)
            assert winner.result is not None
            reply.text, reply.finish_reason = winner.result.text, winner.result.finish_reason
            reply.usage.CopyFrom(winner.result.usage)
            reply.provider = winner.node_id
        return reply

    # ---- steps ------------------------------------------------------------------------------------------------

    async def _hold(self, job_id: str, the_plan: Plan) -> BlockResult:
        try:
            async with self.wallet_lock:
                return await self.wallet.hold(
                    job_id.encode(),
                    [c.payee for c in the_plan.chosen],
                    the_plan.price_cap,
                    int(self.config.network_hold_s * 1000),
                )
        except InsufficientFunds as exc:
            raise PaymentRequired(f"cannot pay for this request: {exc.message}", "insufficient_funds") from None

    async def _offer(self, request: inference_pb2.GenerateRequest, the_plan: Plan, hold: bytes) -> None:
        async def ask(c: Chosen) -> None:
            offer = jobs_pb2.JobOffer(
                request_id=request.request_id,
                request=request,
                model_hash=the_plan.model_hash,
                hold=hold,
                price_cap=the_plan.price_cap,
            )
            sent = time.monotonic()
            try:
                result = await self.door.send(
                    c.candidate.address, offer, verifier_pb2.ProviderResult, timeout=self.config.network_timeout_s
                )
            except AvadiosError as exc:
                c.outcome = "declined" if exc.reason == "declined" else "no answer"
                c.reason = exc.message
                return
            c.latency_ms = (time.monotonic() - sent) * 1000
            try:
                check_result(result, request_id=request.request_id, model_hash=the_plan.model_hash)
                if node_id_for(result.provider_key) != c.node_id:
                    raise Refused("the result is signed by another node than the one asked")
                if not 1 <= result.price <= the_plan.price_cap:
                    raise Refused(f"quoted {result.price} micro-AUTOM, outside 1..{the_plan.price_cap}")
            except Refused as exc:
                c.outcome, c.reason = "rejected", exc.message
                return
            c.result, c.outcome = result, "answered"

        await asyncio.gather(*(ask(c) for c in the_plan.chosen))

    async def _verify(self, request: inference_pb2.GenerateRequest, the_plan: Plan) -> str:
        """Votes on every answer: this node's own when it holds the model, else the other providers'."""
        answered = [c for c in the_plan.chosen if c.result is not None]
        if not answered or not the_plan.verify:
            return "nobody (a trusted provider, not spot-checked)" if answered else "nobody (no answers)"
        results = [c.result for c in answered if c.result is not None]
        try:
            reports = await score_all(self.inference, self.identity, request, the_plan.model_hash, results)
        except WrongModel:
            reports = None
        except AvadiosError as exc:
            if exc.code is not grpc.StatusCode.NOT_FOUND:
                raise
            reports = None  # this node does not hold the model: its peers score
        if reports is not None:
            for c, report in zip(answered, reports, strict=True):
                c.votes.append(Vote(report.scorer_key, report.passed, report.score))
                if not report.passed:
                    c.reason = report.reason
            return "requester"
        await self._peer_scores(request, the_plan, answered)
        return "providers"

    async def _peer_scores(
        self, request: inference_pb2.GenerateRequest, the_plan: Plan, answered: list[Chosen]
    ) -> None:
        async def ask(scorer: Chosen) -> None:
            others = [c for c in answered if c is not scorer]
            if not others or scorer.result is None:
                return
            job = jobs_pb2.ScoreJob(
                request_id=request.request_id,
                request=request,
                model_hash=the_plan.model_hash,
                results=[c.result for c in others if c.result is not None],
            )
            try:
                reply = await self.door.send(
                    scorer.candidate.address, job, jobs_pb2.ScoreJobReply, timeout=self.config.network_timeout_s
                )
            except AvadiosError as exc:
                log.info("a provider did not score", extra={"peer": scorer.node_id[:16], "reason": exc.message})
                return
            for other, report in zip(others, reply.reports, strict=False):
                assert other.result is not None
                try:
                    check_report(report, other.result, scorers={scorer.result.provider_key})
                except Refused:
                    continue  # a report that does not check out is no vote
                other.votes.append(Vote(report.scorer_key, report.passed, report.score))
                if not report.passed and not other.reason:
                    other.reason = report.reason

        await asyncio.gather(*(ask(c) for c in answered))
        liars = discredited(answered)
        for c in answered:
            c.votes = [v for v in c.votes if v.scorer not in liars]

    def _judge(self, request: inference_pb2.GenerateRequest, the_plan: Plan) -> Verdict:
        answered = [c for c in the_plan.chosen if c.result is not None]
        sampling = request.sampling
        reproducible = sampling.temperature == 0.0 or sampling.HasField("seed")
        if answered and not the_plan.verify:  # a trusted provider alone, not checked this time
            only = answered[0]
            assert only.result is not None
            only.outcome = "agreed"
            key = only.result.provider_key
            return Verdict(True, answer_key(only.result.token_ids), key, (key,), (), (), "")
        candidates = [
            Candidate(c.result.provider_key, answer_key(c.result.token_ids), tuple(c.votes))
            for c in answered
            if c.result is not None
        ]
        verdict = decide(candidates, len(the_plan.chosen), reproducible)
        for c in answered:
            assert c.result is not None
            key = c.result.provider_key
            if key in verdict.agreeing:
                c.outcome, c.reason = "agreed", ""
            elif key in verdict.failed:
                c.outcome = "rejected"
            elif key in verdict.unscored:
                c.outcome, c.reason = "unscored", "no scorer could verify the answer"
            else:
                c.outcome, c.reason = "outvoted", c.reason or "verified, but not the answer most providers gave"
        return verdict

    async def _settle(self, hold: BlockResult, the_plan: Plan, verdict: Verdict, record: jobs_pb2.JobRecord) -> None:
        # Verified work is paid even when the request failed for want of a majority: an honest minority did its job.
        paid_outcomes = ("agreed",) if verdict.accepted else ("agreed", "outvoted")
        reasons = {
            "rejected": UNPAID.UNPAID_REJECTED,
            "outvoted": UNPAID.UNPAID_OUTVOTED,
            "declined": UNPAID.UNPAID_DECLINED,
        }
        paid: dict[bytes, int] = {}
        unpaid: dict[bytes, int] = {}
        for c in the_plan.chosen:
            if c.outcome in paid_outcomes and c.result is not None:
                paid[c.payee] = c.result.price
            else:
                unpaid[c.payee] = reasons.get(c.outcome, UNPAID.UNPAID_NOT_DELIVERED)
            record.providers.append(
                jobs_pb2.JobProvider(
                    node_id=c.node_id,
                    outcome=c.outcome,
                    reason=c.reason,
                    score=min((v.score for v in c.votes), default=0.0),
                    quoted=c.result.price if c.result is not None else 0,
                    paid=paid.get(c.payee, 0),
                    latency_ms=c.latency_ms,
                )
            )
        if paid:
            try:
                async with self.wallet_lock:
                    settled = await self.wallet.settle(hold.block, paid, unpaid)
                record.settle_hash, record.cost = settled.hash, sum(paid.values())
                return
            except AvadiosError as exc:
                log.error("settle failed; the hold is refunded at its expiry", extra={"reason": exc.message})
                for p in record.providers:
                    p.paid = 0
        self.book.keep_for_refund(hold.block, hold.hash)
        record.refund_at_unix_ms = refund_from_ms(hold.block)

    async def _report_reliability(self, the_plan: Plan) -> None:
        verdicts = [
            discovery_pb2.Verdict(node_id=c.node_id, accepted=c.outcome == "agreed", reason=c.reason)
            for c in the_plan.chosen
            if c.outcome in ("agreed", "rejected", "no answer")
        ]
        if verdicts:
            try:
                await self.discovery.RecordVerdicts(discovery_pb2.RecordVerdictsRequest(verdicts=verdicts))
            except AvadiosError as exc:
                log.warning("verdicts not recorded", extra={"reason": exc.message})

    # ---- refunds of holds that paid no one -----------------------------------------------------------------------

    async def refund_due(self) -> int:
        """Refund every kept hold whose expiry (+ the clock skew) has passed; returns how many were refunded."""
        now_ms = int(time.time() * 1000)
        done = 0
        for digest, hold in self.book.refunds_waiting():
            if now_ms < refund_from_ms(hold):
                continue
            try:
                async with self.wallet_lock:
                    refund = await self.wallet.refund(hold)
            except AvadiosError as exc:
                if exc.reason == "hold_closed":  # already settled or refunded (by another client of this wallet)
                    self.book.refunded(digest)
                log.warning("refund not made yet", extra={"hold": digest.hex()[:16], "reason": exc.message})
                continue
            self.book.refunded(digest)
            done += 1
            for record in self.book.recent(200):
                if record.hold_hash == digest:
                    record.settle_hash = refund.hash
                    self.book.put(record)
                    break
        return done
