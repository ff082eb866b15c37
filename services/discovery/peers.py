"""What this node has observed about its peers: its own reliability score per peer (persisted), RTT, profile."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from avadios.v1 import discovery_pb2

NEW_PEER_RELIABILITY = 0.5  # no observation yet: neither trusted nor distrusted
EWMA_WEIGHT = 0.2  # each observation moves the score a fifth of the way to 1 (answered) or 0 (failed)


@dataclass(slots=True)
class Score:
    value: float = NEW_PEER_RELIABILITY
    ok: int = 0
    failed: int = 0
    last_seen_unix: int = 0


class ReliabilityBook:
    """Per-peer reliability from what this node observed (pings and calls answered or not). Never taken from
    what a peer says about itself. Persisted as JSON under the home."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scores: dict[str, Score] = {}
        try:
            for node_id, raw in json.loads(path.read_text()).items():
                self._scores[node_id] = Score(**raw)
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            pass

    def get(self, node_id: str) -> Score:
        return self._scores.get(node_id) or Score()

    def observe(self, node_id: str, answered: bool) -> Score:
        score = self._scores.setdefault(node_id, Score())
        score.value += EWMA_WEIGHT * ((1.0 if answered else 0.0) - score.value)
        if answered:
            score.ok += 1
            score.last_seen_unix = int(time.time())
        else:
            score.failed += 1
        return score

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            k: {"value": round(v.value, 6), "ok": v.ok, "failed": v.failed, "last_seen_unix": v.last_seen_unix}
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
