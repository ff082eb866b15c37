"""What this node has observed about its peers: its own reliability score per peer (persisted), RTT, profile."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from avadios.v1 import discovery_pb2

NEW_PEER_RELIABILITY = 0.5  # no observation yet: neither trusted nor distrusted
EWMA_WEIGHT = 0.2  # each ping moves the liveness score a fifth of the way to 1 (answered) or 0 (failed)
# Work is scored apart from liveness, and only by Proof of Inference verdicts: a verified answer moves the work
# score a tenth of the way to 1; a rejected one halves it, so one rejection takes a new peer (0.5) under the
# default floor (0.3) and two take a long-trusted one (0.9 -> 0.45 -> 0.225) under it.
WORK_GAIN = 0.1
WORK_PENALTY = 0.5


@dataclass(slots=True)
class Score:
    ping: float = NEW_PEER_RELIABILITY  # liveness: answered pings and calls
    work: float = NEW_PEER_RELIABILITY  # verified work: moved only by verdicts
    ok: int = 0
    failed: int = 0
    last_seen_unix: int = 0
    verified: int = 0
    rejected: int = 0
    streak: int = 0  # verified answers since the last rejection
    last_reason: str = ""

    @property
    def value(self) -> float:
        """The reliability routing uses: never above the work score, so a peer that answers every ping but
        lied about its work stays under the floor until verified work lifts it."""
        return min(self.ping, self.work)


class ReliabilityBook:
    """Per-peer reliability from what this node observed (pings and calls answered or not). Never taken from
    what a peer says about itself. Persisted as JSON under the home."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scores: dict[str, Score] = {}
        try:
            for node_id, raw in json.loads(path.read_text()).items():
                if "value" in raw:  # a book written before work was scored apart: its score was liveness
                    raw["ping"] = raw.pop("value")
                self._scores[node_id] = Score(**raw)
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            pass  # an unreadable book starts afresh: every peer is new again, which trusts no one more

    def get(self, node_id: str) -> Score:
        return self._scores.get(node_id) or Score()

    def observe(self, node_id: str, answered: bool) -> Score:
        score = self._scores.setdefault(node_id, Score())
        score.ping += EWMA_WEIGHT * ((1.0 if answered else 0.0) - score.ping)
        if answered:
            score.ok += 1
            score.last_seen_unix = int(time.time())
        else:
            score.failed += 1
        return score

    def verdict(self, node_id: str, accepted: bool, reason: str = "") -> Score:
        """A Proof of Inference verdict on one answer of the peer: the only thing that moves its work score."""
        score = self._scores.setdefault(node_id, Score())
        if accepted:
            score.work += WORK_GAIN * (1.0 - score.work)
            score.verified += 1
            score.streak += 1
        else:
            score.work *= WORK_PENALTY
            score.rejected += 1
            score.streak = 0
            score.last_reason = reason[:200]
        return score

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            k: {
                "ping": round(v.ping, 6),
                "work": round(v.work, 6),
                "ok": v.ok,
                "failed": v.failed,
                "last_seen_unix": v.last_seen_unix,
                "verified": v.verified,
                "rejected": v.rejected,
                "streak": v.streak,
                "last_reason": v.last_reason,
            }
            for k, v in self._scores.items()
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)


@dataclass(slots=True)
class Peer:
    node_id: str
    profile: discovery_pb2.CapabilityProfile | None = None
    rtt_ms: float = 0.0
    failures: int = 0  # consecutive
    load: float = 0.0
    tags: set[str] = field(default_factory=set)

    def p2p_address(self) -> str:
        if self.profile is None:
            return ""
        for addr in self.profile.addresses:
            if "/tcp/" in addr:
                return addr
        return ""

    def dht_address(self) -> str:
        if self.profile is None:
            return ""
        for addr in self.profile.addresses:
            if "/udp/" in addr:
                return addr
        return ""
