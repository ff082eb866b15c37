"""The provider's side of a network request: check the offer and (optionally) its hold, answer it with the local
model, price the answer and sign it; and score other providers' answers when a requester asks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from avadios.errors import AvadiosError, InvalidArgument
from avadios.identity import Identity
from avadios.ledger.client import why_not_serve
from avadios.sampling_features import network_refusal
from avadios.services.verifier import pricing
from avadios.services.verifier.errors import Refused
from avadios.services.verifier.fault import Fault
from avadios.services.verifier.scoring import WrongModel, score_all
from avadios.services.verifier.signing import HASH_BYTES, MAX_REQUEST_ID, check_result, new_result, sign_result
from avadios.v1 import inference_pb2, jobs_pb2, ledger_pb2, verifier_pb2
from avadios.v1.inference_nats import InferenceClient
from avadios.v1.ledger_nats import LedgerClient

log = logging.getLogger("avadios.verifier.provider")
MAX_SCORE_RESULTS = 16
HOLD_WAIT_S = 3.0  # the requester's hold may reach this node's replica a moment after the offer


class Declined(AvadiosError):
    """This provider will not work for the offer; the message says why (the requester settles it unpaid)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "declined"


def check_offer(offer: jobs_pb2.JobOffer, max_tokens_limit: int) -> None:
    if not offer.request_id or len(offer.request_id.encode()) > MAX_REQUEST_ID:
        raise InvalidArgument(f"request_id must be 1..{MAX_REQUEST_ID} bytes")
    if len(offer.model_hash) != HASH_BYTES or len(offer.hold) != HASH_BYTES:
        raise InvalidArgument(f"model_hash and hold must be {HASH_BYTES}-byte hashes")
    if offer.price_cap < 1:
        raise InvalidArgument("an offer pays at least 1 micro-AUTOM")
    if not 1 <= offer.request.sampling.max_tokens <= max_tokens_limit:
        raise InvalidArgument(f"max_tokens must be 1..{max_tokens_limit}")
    if not offer.request.HasField("chat") and not offer.request.prompt:
        raise InvalidArgument("the offer carries no prompt")
    if refusal := network_refusal(offer.request.sampling):
        raise InvalidArgument(refusal)


class Provider:
    def __init__(
        self,
        identity: Identity,
        inference: InferenceClient,
        ledger: LedgerClient,
        payee: Callable[[], bytes],
        price_per_1k: int,
        check_hold: bool,
        work_timeout_s: float,
        max_tokens_limit: int,
        fault: Fault | None = None,
    ) -> None:
        self.identity = identity
        self.inference = inference
        self.ledger = ledger
        self.payee = payee
        self.price_per_1k = price_per_1k
        self.check_hold = check_hold
        self.work_timeout_s = work_timeout_s
        self.max_tokens_limit = max_tokens_limit
        self.fault = fault
        self.served = 0
        self.declined = 0

    async def _hold_allows(self, offer: jobs_pb2.JobOffer) -> None:
        """Work only for a confirmed hold that names this node's payee, allows its price and binds its holder for
        as long as the work may take."""
        deadline = time.monotonic() + HOLD_WAIT_S
        reason = "the hold is not on this node's ledger replica"
        while time.monotonic() < deadline:
            try:
                reply = await self.ledger.GetHold(ledger_pb2.LedgerHoldRequest(hash=offer.hold), timeout=2.0)
            except AvadiosError as exc:
                if exc.code is not grpc.StatusCode.NOT_FOUND:
                    raise
            else:
                work_ms = int(self.work_timeout_s * 1000)
                found = why_not_serve(reply, self.payee(), 1, work_ms)
                if found is None:
                    return
                reason = found
                if reply.status == ledger_pb2.BLOCK_STATUS_CONFIRMED:
                    break  # confirmed and still wrong: waiting will not help
            await asyncio.sleep(0.1)
        self.declined += 1
        raise Declined(f"declined: {reason}")

    async def serve(self, offer: jobs_pb2.JobOffer, requester: str) -> verifier_pb2.ProviderResult:
        check_offer(offer, self.max_tokens_limit)
        if self.check_hold:
            await self._hold_allows(offer)
        request = inference_pb2.GenerateRequest()
        request.CopyFrom(offer.request)
        request.request_id, request.want_tokens = offer.request_id, True
        chunks = [c async for c in self.inference.Generate(request, timeout=self.work_timeout_s)]
        model_hash = chunks[-1].model_hash if chunks else b""
        if model_hash != offer.model_hash:
            self.declined += 1
            raise Declined(f"declined: this node's {request.model!r} is another build than the one the offer pins")
        result = new_result(offer.request_id, model_hash, chunks, 0)
        if self.fault is not None:  # a devnet's lying provider (never set outside a devnet)
            result = await self.fault.lie(request, result)
        result.price = pricing.quote(result.usage, self.price_per_1k, offer.price_cap)
        self.served += 1
        log.info(
            "answered a network request",
            extra={"request_id": offer.request_id, "peer": requester[:16], "tokens": len(result.token_ids)},
        )
        return sign_result(self.identity, result)

    async def score(self, job: jobs_pb2.ScoreJob, requester: str) -> jobs_pb2.ScoreJobReply:
        if not 1 <= len(job.results) <= MAX_SCORE_RESULTS:
            raise InvalidArgument(f"a score job carries 1..{MAX_SCORE_RESULTS} results")
        for index, result in enumerate(job.results):
            try:
                check_result(result, request_id=job.request_id, model_hash=job.model_hash)
            except Refused as exc:
                raise InvalidArgument(f"result {index}: {exc.message}") from None
        if self.fault is not None:
            self.fault.remember(job.results)
        request = inference_pb2.GenerateRequest()
        request.CopyFrom(job.request)
        request.request_id = job.request_id
        try:
            reports = await score_all(self.inference, self.identity, request, job.model_hash, job.results)
        except WrongModel as exc:
            raise Declined(f"declined: {exc.message}") from None
        except AvadiosError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:  # this node does not hold the model at all
                raise Declined(f"declined: {exc.message}") from None
            raise
        if self.fault is not None:
            reports = [self.fault.slander(report, self.identity) for report in reports]
        return jobs_pb2.ScoreJobReply(reports=reports)
