"""The network requests this node made (GET /api/jobs): providers, each answer's score and verdict, what was paid
to whom, time, and the hold and settle blocks. `avadios jobs --json` prints exactly what this returns."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from avadios.v1 import jobs_pb2
from avadios.v1.jobs_nats import VerifierClient


class JobProviderOut(BaseModel):
    node_id: str
    outcome: str = Field(description="agreed, rejected, outvoted, unscored, declined or no answer")
    reason: str
    score: float
    quoted_micro: int
    paid_micro: int
    latency_ms: float


class JobOut(BaseModel):
    job_id: str
    model: str
    started_unix_ms: int
    duration_ms: float
    accepted: bool
    verdict: str
    replicas: int
    held_micro: int
    cost_micro: int = Field(description="micro-AUTOM paid to providers: the requester's whole loss")
    hold: str
    settle: str = Field(description="the SETTLE or REFUND block; empty while a refund waits for the hold's expiry")
    refund_at_unix_ms: int
    scored_by: str
    providers: list[JobProviderOut]

    @classmethod
    def of(cls, job: jobs_pb2.JobRecord) -> JobOut:
        return cls(
            job_id=job.job_id,
            model=job.model,
            started_unix_ms=job.started_unix_ms,
            duration_ms=round(job.duration_ms, 1),
            accepted=job.accepted,
            verdict=job.verdict,
            replicas=job.replicas,
            held_micro=job.held,
            cost_micro=job.cost,
            hold=job.hold_hash.hex(),
            settle=job.settle_hash.hex(),
            refund_at_unix_ms=job.refund_at_unix_ms,
            scored_by=job.scored_by,
            providers=[
                JobProviderOut(
                    node_id=p.node_id,
                    outcome=p.outcome,
                    reason=p.reason,
                    score=round(p.score, 4),
                    quoted_micro=p.quoted,
                    paid_micro=p.paid,
                    latency_ms=round(p.latency_ms, 1),
                )
                for p in job.providers
            ],
        )


class JobListOut(BaseModel):
    jobs: list[JobOut]


def jobs_router(verifier: VerifierClient) -> APIRouter:
    router = APIRouter(tags=["network"])

    @router.get("/api/jobs", summary="Recent network requests of this node, newest first")
    async def jobs(limit: int = Query(default=50, ge=1, le=1000)) -> JobListOut:
        reply = await verifier.ListJobs(jobs_pb2.ListJobsRequest(limit=limit), timeout=10.0)
        return JobListOut(jobs=[JobOut.of(j) for j in reply.jobs])

    return router
