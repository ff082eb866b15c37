"""Repair planning: which shards of which segments to rebuild, and checking what was rebuilt, without I/O.

A segment is repaired when fewer than `threshold` of its n shards are healthy (and at least k are, or nothing
can be rebuilt). The owner's node rebuilds the missing shards from any k healthy ones (the ciphertext never
needs the key, so the file is never plaintext anywhere but on its owner's node at read time) and places each
on a new hoster; a rebuilt shard must hash to the address the layout lists, or it is not used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import blake3

from avadios.services.storage.codec import Codec
from avadios.services.storage.errors import ShardCorrupted


@dataclass(frozen=True, slots=True)
class SegmentRepair:
    segment: int
    sources: tuple[int, ...]  # healthy shard indexes to rebuild from (k of them)
    missing: tuple[int, ...]  # shard indexes to rebuild


def plan(healthy: Mapping[int, Sequence[int]], k: int, n: int, threshold: int) -> tuple[list[SegmentRepair], list[int]]:
    """(repairs, segments that cannot be repaired) from each segment's healthy shard indexes."""
    threshold = min(max(threshold, k + 1), n)  # below k+1 a repair could never run; above n never stop
    repairs, lost = [], []
    for segment, good in sorted(healthy.items()):
        good_set = sorted(set(good))
        if len(good_set) >= threshold:
            continue
        if len(good_set) < k:
            lost.append(segment)
            continue
        missing = tuple(j for j in range(n) if j not in good_set)
        if missing:
            repairs.append(SegmentRepair(segment, tuple(good_set[:k]), missing))
    return repairs, lost


def rebuild(
    codec: Codec, sources: Mapping[int, bytes], missing: Sequence[int], hashes: Sequence[bytes]
) -> dict[int, bytes]:
    """Rebuild shards and prove each against the layout's hash."""
    for index, shard in sources.items():
        if blake3.blake3(shard).digest() != hashes[index]:
            raise ShardCorrupted(f"source shard {index} does not match its hash")
    rebuilt = codec.rebuild(sources, missing)
    for index, shard in rebuilt.items():
        if blake3.blake3(shard).digest() != hashes[index]:
            raise ShardCorrupted(f"rebuilt shard {index} does not match the layout's hash")
    return rebuilt
