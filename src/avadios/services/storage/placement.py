"""Placement: which hosters get the n shards of a segment, from what their signed profiles and our pings say.

Hosters are ranked once per file by a score (reliability first, then price, then RTT); each segment takes n
distinct hosters from that ranking, rotated by the segment index so the load spreads. Two shards of one segment
go to one hoster only when fewer than n hosters can take them, and then as evenly as possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from avadios.errors import Unavailable


@dataclass(frozen=True, slots=True)
class Hoster:
    node_id: str
    free_bytes: int
    price_per_gib_month: int  # micro-AUTOM
    reliability: float = 1.0  # 0..1, this node's own score of the peer
    rtt_ms: float = 0.0
    payee: bytes = b""  # the AUTOM account its signed profile names (empty: this node itself)


def rank(hosters: Sequence[Hoster], shard_bytes: int, exclude: frozenset[str] = frozenset()) -> list[Hoster]:
    """Hosters with room for a shard, best first; `exclude` (e.g. those that just failed) is left out."""
    fit = [h for h in hosters if h.free_bytes >= shard_bytes and h.node_id not in exclude]
    return sorted(fit, key=lambda h: (-round(h.reliability, 2), h.price_per_gib_month, h.rtt_ms, h.node_id))


def place_segment(ranked: Sequence[Hoster], segment: int, n: int) -> list[str]:
    """The hoster of each of a segment's n shards (shard j -> result[j])."""
    if not ranked:
        raise Unavailable("no hoster can take shards: none is known with free space (is discovery running?)")
    start = (segment * n) % len(ranked)
    return [ranked[(start + j) % len(ranked)].node_id for j in range(n)]


def replacement(
    ranked: Sequence[Hoster], taken: Sequence[str], avoid: frozenset[str], fresh_only: bool = False
) -> str | None:
    """A hoster for one more shard of a segment: one not already holding a shard of it, else (unless `fresh_only`)
    the least used one; never one in `avoid` (it failed or is being replaced)."""
    usable = [h.node_id for h in ranked if h.node_id not in avoid]
    fresh = [h for h in usable if h not in taken]
    if fresh:
        return fresh[0]
    if not usable or fresh_only:
        return None
    return min(usable, key=lambda h: (list(taken).count(h), usable.index(h)))
