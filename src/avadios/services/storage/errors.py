"""Storage's errors, each a kind of the shared hierarchy (avadios.errors), so gRPC and HTTP map them once."""

from __future__ import annotations

from collections.abc import Sequence

from avadios.errors import Busy, InvalidArgument, NotFound, Unavailable


class BadCapability(InvalidArgument):
    """A capability string that is malformed, truncated, or whose key does not open the file."""

    reason = "bad_capability"


class ShardCorrupted(InvalidArgument):
    """Bytes whose BLAKE3 is not the address they were stored or fetched under."""

    reason = "shard_corrupted"


class SegmentCorrupted(InvalidArgument):
    """A rebuilt segment that failed its AES-GCM tag: the bytes were tampered with or the key is wrong."""

    reason = "segment_corrupted"


class QuotaExceeded(Busy):
    """A hoster that has no room left for a shard; it refuses politely and stores nothing."""

    reason = "quota_exceeded"


class FileNotFound(NotFound):
    reason = "file_not_found"


class ShardNotFound(NotFound):
    reason = "shard_not_found"


class SegmentsMissing(Unavailable):
    """Too few healthy shards to rebuild some segments: names the segments and the hosters that did not answer."""

    reason = "segments_missing"

    def __init__(self, segments: Sequence[int], hosters: Sequence[str], k: int) -> None:
        shown = ", ".join(str(s) for s in segments[:20]) + (" …" if len(segments) > 20 else "")
        who = ", ".join(h[:16] for h in sorted(set(hosters))) or "none"
        super().__init__(
            f"{len(segments)} segment(s) have fewer than k={k} reachable healthy shards (segments {shown}); "
            f"hosters missing: {who}. The file reads again when enough of them return"
        )
        self.segments = list(segments)
        self.hosters = sorted(set(hosters))
