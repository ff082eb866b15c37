"""Audits: challenges a hoster answers only if it still holds a shard's bytes, and a file's health from the answers.

At upload the owner, who has every shard in hand for a moment, draws challenges for each one: a fresh random
16-byte nonce and a random byte range, with the expected answer BLAKE3(nonce || shard[offset:offset+length]).
It keeps only those (56 bytes each), never the shard. An audit sends one unused challenge; the nonce was never
seen by the hoster, so it cannot have precomputed the answer, and it cannot answer without the range's bytes.
When a shard's challenges run out, the owner fetches the shard (checked by its BLAKE3) and draws new ones.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import blake3

NONCE_BYTES = 16
MIN_RANGE = 64


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    offset: int
    length: int
    expected: bytes


def answer(shard: bytes, nonce: bytes, offset: int, length: int) -> bytes:
    """What a hoster answers: BLAKE3 of the nonce and the challenged range of the shard."""
    return blake3.blake3(nonce + shard[offset : offset + length]).digest()


def draw(shard: bytes, count: int) -> list[Challenge]:
    out = []
    for _ in range(count):
        length = min(len(shard), MIN_RANGE + secrets.randbelow(max(1, len(shard) // 4)))
        offset = secrets.randbelow(len(shard) - length + 1)
        nonce = os.urandom(NONCE_BYTES)
        out.append(Challenge(nonce, offset, length, answer(shard, nonce, offset, length)))
    return out


def passed(challenge: Challenge, reply: bytes) -> bool:
    return secrets.compare_digest(challenge.expected, reply)


class Health(StrEnum):
    HEALTHY = "healthy"  # every shard of every segment answered
    DEGRADED = "degraded"  # some shards are gone, every segment still has at least k
    UNREADABLE = "unreadable"  # some segment has fewer than k


def segment_health(healthy: int, k: int, n: int) -> Health:
    if healthy >= n:
        return Health.HEALTHY
    return Health.DEGRADED if healthy >= k else Health.UNREADABLE


def file_health(healthy_per_segment: Sequence[int], k: int, n: int) -> Health:
    states = {segment_health(h, k, n) for h in healthy_per_segment}
    for worst in (Health.UNREADABLE, Health.DEGRADED):
        if worst in states:
            return worst
    return Health.HEALTHY
