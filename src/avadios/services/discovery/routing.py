"""Ranking the providers of a model. The score, documented here and shown by `avadios route`:

    score = w_rtt · 1/(1 + rtt_ms/50)            RTT measured by this node's gateway (a P2P ping)
          + w_rel · reliability                  this node's own score of the peer, 0..1 (never self-reported)
          + w_price · 1/(1 + price/1000)         price in micro-AUTOM per 1,000 tokens, from the signed profile
          + w_load · (1 − load)                  load (0..1) from the signed profile

Weights come from the config (route_weight_rtt 0.3, route_weight_reliability 0.4, route_weight_price 0.2,
route_weight_load 0.1). A peer whose reliability is below reliability_floor (0.3), or that did not answer
the ping, is excluded with the reason. Higher score first; ties go to the lower node id, so the order is
stable.
"""

from __future__ import annotations

from dataclasses import dataclass

from avadios.config import NodeConfig
from avadios.v1 import discovery_pb2

RTT_REF_MS = 50.0
PRICE_REF = 1000.0
FORMULA = (
    "score = w_rtt/(1 + rtt_ms/50) + w_rel*reliability + w_price/(1 + price/1000) + w_load*(1 - load); "
    "excluded when reliability < floor or the ping fails"
)


@dataclass(frozen=True, slots=True)
class Weights:
    rtt: float = 0.3
    reliability: float = 0.4
    price: float = 0.2
    load: float = 0.1
    floor: float = 0.3

    @classmethod
    def of(cls, config: NodeConfig) -> Weights:
        return cls(
            config.route_weight_rtt,
            config.route_weight_reliability,
            config.route_weight_price,
            config.route_weight_load,
            config.reliability_floor,
        )


@dataclass(frozen=True, slots=True)
class Observed:
    node_id: str
    address: str
    rtt_ms: float | None  # None: the ping failed
    reliability: float
    price: int
    load: float


def score(c: Observed, w: Weights) -> discovery_pb2.RouteCandidate:
    out = discovery_pb2.RouteCandidate(
        node_id=c.node_id,
        address=c.address,
        rtt_ms=c.rtt_ms or 0.0,
        reliability=c.reliability,
        price_micro_autom_per_1k=c.price,
        load=c.load,
    )
    if c.rtt_ms is None:
        out.excluded = "did not answer a ping"
        return out
    if c.reliability < w.floor:
        out.excluded = f"reliability {c.reliability:.2f} is below the floor {w.floor:.2f}"
    out.rtt_part = w.rtt / (1.0 + c.rtt_ms / RTT_REF_MS)
    out.reliability_part = w.reliability * c.reliability
    out.price_part = w.price / (1.0 + c.price / PRICE_REF)
    out.load_part = w.load * (1.0 - min(1.0, max(0.0, c.load)))
    out.score = out.rtt_part + out.reliability_part + out.price_part + out.load_part
    return out


def rank(
    candidates: list[Observed], w: Weights
) -> tuple[list[discovery_pb2.RouteCandidate], list[discovery_pb2.RouteCandidate]]:
    scored = [score(c, w) for c in candidates]
    ranked = sorted((s for s in scored if not s.excluded), key=lambda s: (-s.score, s.node_id))
    excluded = sorted((s for s in scored if s.excluded), key=lambda s: s.node_id)
    return ranked, excluded
