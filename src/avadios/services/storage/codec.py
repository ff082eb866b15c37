"""k-of-n erasure coding of one encrypted segment with pyeclib's `isa_l_rs_cauchy`.

Never `isa_l_rs_vand`: measured here, at 10-of-16 some subsets of shards fail to decode with it. A shard is the
pyeclib fragment as produced (its own small header included); encoding is deterministic, so a shard rebuilt by
repair is byte-identical to the original and keeps its BLAKE3 address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyeclib.ec_iface import ECDriver, ECDriverError

from avadios.errors import InvalidArgument

EC_TYPE = "isa_l_rs_cauchy"
MAX_SHARDS = 32


def check_params(k: int, n: int) -> None:
    if not (1 <= k < n <= MAX_SHARDS):
        raise InvalidArgument(f"need 1 <= k < n <= {MAX_SHARDS} (k data shards of n in all), got k={k}, n={n}")


class Codec:
    """Encode a segment into n shards, and rebuild it (or lost shards) from any k of them."""

    def __init__(self, k: int, n: int) -> None:
        check_params(k, n)
        self.k, self.n = k, n
        self._driver = ECDriver(k=k, m=n - k, ec_type=EC_TYPE)

    def encode(self, segment: bytes) -> list[bytes]:
        return list(self._driver.encode(segment))

    def decode(self, shards: Mapping[int, bytes]) -> bytes:
        """The segment from at least k shards (index -> bytes) already checked against their hashes."""
        if len(shards) < self.k:
            raise InvalidArgument(f"{len(shards)} shards cannot rebuild a segment: k={self.k} are needed")
        try:
            return bytes(self._driver.decode([shards[i] for i in sorted(shards)[: self.k]]))
        except ECDriverError as exc:
            raise InvalidArgument(f"erasure decoding failed: {exc}") from None

    def rebuild(self, shards: Mapping[int, bytes], missing: Sequence[int]) -> dict[int, bytes]:
        """The shards at indexes `missing`, rebuilt from at least k others."""
        if len(shards) < self.k:
            raise InvalidArgument(f"{len(shards)} shards cannot rebuild others: k={self.k} are needed")
        chosen = [shards[i] for i in sorted(shards)[: self.k]]
        try:
            rebuilt = self._driver.reconstruct(chosen, list(missing))
        except ECDriverError as exc:
            raise InvalidArgument(f"erasure rebuild failed: {exc}") from None
        return {index: bytes(shard) for index, shard in zip(missing, rebuilt, strict=True)}
