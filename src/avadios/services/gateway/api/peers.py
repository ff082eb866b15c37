"""The network routes: peers (GET, POST, DELETE /api/peers) and routes (GET /api/route/{model}).

`avadios peers --json` and `avadios route --json` print exactly what these return. Everything is asked of the
discovery service over NATS.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from avadios.transport import NatsChannel
from avadios.v1 import discovery_pb2
from avadios.v1.discovery_nats import DiscoveryClient

DISCOVERY_TIMEOUT_S = 30.0


class PeerOut(BaseModel):
    node_id: str
    addresses: list[str]
    rtt_ms: float
    reliability: float
    models: list[str]
    price_micro_autom_per_1k: int
    last_seen_unix: int
    failures: int
    bootstrap: bool
    software_version: str
    verified: int = Field(description="its answers that passed Proof of Inference on this node's requests")
    rejected: int = Field(description="its answers that failed")
    last_rejection: str
    storage_free_bytes: int | None = Field(description="space it offers for shards (its signed profile); null: none")
    storage_price_per_gib_month: int | None = Field(description="micro-AUTOM per GiB-month it asks for shards")


class PeerListOut(BaseModel):
    node_id: str
    dht_address: str
    bootstrap: list[str]
    peers: list[PeerOut]

    @classmethod
    def of(cls, reply: discovery_pb2.ListPeersReply) -> PeerListOut:
        return cls(
            node_id=reply.node_id,
            dht_address=reply.dht_address,
            bootstrap=list(reply.bootstrap),
            peers=[
                PeerOut(
                    node_id=p.node_id,
                    addresses=list(p.addresses),
                    rtt_ms=round(p.rtt_ms, 3),
                    reliability=round(p.reliability, 4),
                    models=list(p.models),
                    price_micro_autom_per_1k=p.price_micro_autom_per_1k,
                    last_seen_unix=p.last_seen_unix,
                    failures=p.failures,
                    bootstrap=p.bootstrap,
                    software_version=p.software_version,
                    verified=p.verified,
                    rejected=p.rejected,
                    last_rejection=p.last_rejection,
                    storage_free_bytes=p.storage.free_bytes if p.HasField("storage") else None,
                    storage_price_per_gib_month=p.storage.price_per_gib_month if p.HasField("storage") else None,
                )
                for p in reply.peers
            ],
        )


class AddPeerIn(BaseModel):
    multiaddr: str = Field(description="the peer's address", examples=["/ip4/203.0.113.7/tcp/4001/p2p/NODE_ID"])


class BootstrapOut(BaseModel):
    node_id: str = Field(description="the peer added or removed")
    bootstrap: list[str] = Field(description="the node's bootstrap list now")


class ScorePartsOut(BaseModel):
    rtt: float
    reliability: float
    price: float
    load: float


class CandidateOut(BaseModel):
    node_id: str
    address: str
    score: float
    rtt_ms: float
    reliability: float
    price_micro_autom_per_1k: int
    load: float
    parts: ScorePartsOut
    excluded: str = Field(description="why the candidate gets no work; empty when ranked")

    @classmethod
    def of(cls, c: discovery_pb2.RouteCandidate) -> CandidateOut:
        return cls(
            node_id=c.node_id,
            address=c.address,
            score=round(c.score, 6),
            rtt_ms=round(c.rtt_ms, 3),
            reliability=round(c.reliability, 4),
            price_micro_autom_per_1k=c.price_micro_autom_per_1k,
            load=round(c.load, 4),
            parts=ScorePartsOut(
                rtt=round(c.rtt_part, 6),
                reliability=round(c.reliability_part, 6),
                price=round(c.price_part, 6),
                load=round(c.load_part, 6),
            ),
            excluded=c.excluded,
        )


class RouteOut(BaseModel):
    model: str
    formula: str
    ranked: list[CandidateOut]
    excluded: list[CandidateOut]

    @classmethod
    def of(cls, reply: discovery_pb2.RouteReply) -> RouteOut:
        return cls(
            model=reply.model,
            formula=reply.formula,
            ranked=[CandidateOut.of(c) for c in reply.ranked],
            excluded=[CandidateOut.of(c) for c in reply.excluded],
        )


def discovery_stub(channel: NatsChannel) -> DiscoveryClient:
    return DiscoveryClient(channel, default_timeout=DISCOVERY_TIMEOUT_S)


def peers_router(discovery: DiscoveryClient) -> APIRouter:
    """`discovery`: a client of the node's discovery service."""
    router = APIRouter(tags=["network"])

    @router.get("/api/peers", summary="Known peers and the bootstrap list")
    async def list_peers() -> PeerListOut:
        return PeerListOut.of(await discovery.ListPeers(discovery_pb2.ListPeersRequest()))

    @router.post("/api/peers", summary="Add a bootstrap peer")
    async def add_peer(body: AddPeerIn) -> BootstrapOut:
        reply = await discovery.AddBootstrap(discovery_pb2.AddBootstrapRequest(multiaddr=body.multiaddr))
        return BootstrapOut(node_id=reply.node_id, bootstrap=list(reply.bootstrap))

    @router.delete("/api/peers/{node_id}", summary="Remove a bootstrap peer")
    async def remove_peer(node_id: str) -> BootstrapOut:
        reply = await discovery.RemoveBootstrap(discovery_pb2.RemoveBootstrapRequest(node_id=node_id))
        return BootstrapOut(node_id=reply.node_id, bootstrap=list(reply.bootstrap))

    @router.get("/api/route/{model:path}", summary="The network's providers of a model, ranked")
    async def route(model: str) -> RouteOut:
        return RouteOut.of(await discovery.Route(discovery_pb2.RouteRequest(model=model)))

    return router
