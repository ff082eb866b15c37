"""The owner's pure pipeline: plaintext segments in, encrypted erasure-coded shards out, and back. No I/O.

A `FileWriter` takes the file one segment at a time (the caller streams; nothing holds the whole file) and
returns each segment's shards with their BLAKE3 addresses; `finish` gives the layout and the read-cap. A
`FileReader` checks shards against the layout before using a byte, rebuilds each segment from any k, and only
then decrypts (AES-GCM authenticates the whole segment), so no unchecked plaintext ever leaves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import blake3

from avadios.errors import InvalidArgument
from avadios.services.storage import crypto, layout
from avadios.services.storage.capability import ReadCap
from avadios.services.storage.codec import Codec
from avadios.services.storage.errors import ShardCorrupted
from avadios.services.storage.layout import FileLayout

DEFAULT_SEGMENT_SIZE = 256 * 1024  # keeps a segment, and each of its shards, well inside one NATS/P2P message
MAX_SEGMENT_SIZE = 768 * 1024


@dataclass(frozen=True, slots=True)
class EncodedSegment:
    index: int
    shards: tuple[bytes, ...]
    hashes: tuple[bytes, ...]


def shard_hash(shard: bytes) -> bytes:
    return blake3.blake3(shard).digest()


class FileWriter:
    def __init__(self, k: int, n: int, segment_size: int = DEFAULT_SEGMENT_SIZE, key: bytes | None = None) -> None:
        if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
            raise InvalidArgument(f"segment size must be 1 to {MAX_SEGMENT_SIZE} bytes")
        self.codec = Codec(k, n)
        self.segment_size = segment_size
        self.key = key or crypto.new_file_key()
        self._lengths: list[int] = []
        self._hashes: list[tuple[bytes, ...]] = []
        self._size = 0
        self._last_short = False

    @property
    def segments_written(self) -> int:
        return len(self._lengths)

    def add(self, plaintext: bytes) -> EncodedSegment:
        """Encrypt and encode the next segment (every one but the last must be exactly `segment_size`)."""
        if len(plaintext) > self.segment_size:
            raise InvalidArgument(f"a segment is at most {self.segment_size} bytes, got {len(plaintext)}")
        if self._last_short:
            raise InvalidArgument("only the last segment may be shorter than the segment size")
        self._last_short = len(plaintext) < self.segment_size
        index = len(self._lengths)
        ciphertext = crypto.encrypt_segment(self.key, index, plaintext)
        shards = tuple(self.codec.encode(ciphertext))
        hashes = tuple(shard_hash(s) for s in shards)
        self._lengths.append(len(ciphertext))
        self._hashes.append(hashes)
        self._size += len(plaintext)
        return EncodedSegment(index, shards, hashes)

    def finish(self, name: str) -> tuple[FileLayout, ReadCap]:
        if not self._lengths:  # an empty file is one empty segment, so every file has a tag to check
            self.add(b"")
        if len(name.encode()) > layout.MAX_NAME_BYTES:
            raise InvalidArgument(f"a file name is at most {layout.MAX_NAME_BYTES} bytes")
        file_layout = FileLayout(
            self.codec.k, self.codec.n, self.segment_size, self._size, tuple(self._lengths), tuple(self._hashes),
            crypto.encrypt_name(self.key, name),
        )  # fmt: skip
        return file_layout, ReadCap(file_layout.root(), self.key)


def check_shard(file_layout: FileLayout, segment: int, index: int, shard: bytes) -> None:
    if shard_hash(shard) != file_layout.shard_hashes[segment][index]:
        raise ShardCorrupted(f"shard {index} of segment {segment} does not match its BLAKE3 address")


class FileReader:
    def __init__(self, file_layout: FileLayout, cap: ReadCap) -> None:
        if file_layout.root() != cap.root:
            raise InvalidArgument("this layout is not the capability's file")
        self.layout = file_layout
        self.key = cap.key
        self.codec = Codec(file_layout.k, file_layout.n)
        self.name = crypto.decrypt_name(cap.key, file_layout.encrypted_name)  # a wrong key fails here

    def good_shards(self, segment: int, shards: Mapping[int, bytes]) -> dict[int, bytes]:
        """The shards that match their addresses (a corrupted one is dropped, to be rebuilt from the others)."""
        hashes = self.layout.shard_hashes[segment]
        return {i: s for i, s in shards.items() if 0 <= i < len(hashes) and shard_hash(s) == hashes[i]}

    def segment(self, index: int, shards: Mapping[int, bytes]) -> bytes:
        """The plaintext of one segment from at least k shards that match their hashes."""
        good = self.good_shards(index, shards)
        ciphertext = self.codec.decode(good)
        if len(ciphertext) != self.layout.segment_lengths[index]:
            raise ShardCorrupted(f"segment {index} rebuilt to the wrong length")
        return crypto.decrypt_segment(self.key, index, ciphertext)
