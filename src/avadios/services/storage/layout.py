"""The file layout: the immutable description of one stored file, a documented binary format with an offset table.

Its BLAKE3 is the file's root hash (in both capabilities), so a layout fetched from anywhere is checked by
hashing it; every shard is then checked against the hash the layout lists for it. Integers are big-endian.

    offset  size  field
    0       4     magic b"AVFL"
    4       1     version (1)
    5       1     k: shards any segment is rebuilt from
    6       1     n: shards of each segment
    7       1     reserved, 0
    8       4     segment_size: plaintext bytes per segment (the last one may be shorter)
    12      4     segment_count
    16      8     file_size: plaintext bytes of the whole file
    24      4     offset of the segment table
    28      4     offset of the shard hash table
    32      4     offset of the encrypted name
    36      4     offset of the end (= total length)
    40      …     segment table: segment_count × u32, each segment's ciphertext length (plaintext + 16-byte tag)
    …       …     shard hash table: segment_count × n × 32 bytes, BLAKE3 of shard j of segment i at (i·n + j)·32
    …       …     encrypted name: AES-256-GCM of the UTF-8 name under the file key (crypto.encrypt_name)

Where each hoster keeps a shard is not here (it changes on repair): the owner's node keeps that placement map.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from avadios.services.storage.codec import check_params
from avadios.services.storage.errors import BadCapability

MAGIC = b"AVFL"
VERSION = 1
HASH_BYTES = 32
_HEADER = struct.Struct(">4sBBBBIIQIIII")
MAX_NAME_BYTES = 1024


@dataclass(frozen=True, slots=True)
class FileLayout:
    k: int
    n: int
    segment_size: int
    file_size: int
    segment_lengths: tuple[int, ...]  # ciphertext bytes of each segment
    shard_hashes: tuple[tuple[bytes, ...], ...]  # [segment][shard] -> BLAKE3 (32 bytes)
    encrypted_name: bytes

    @property
    def segment_count(self) -> int:
        return len(self.segment_lengths)

    def shard_bytes(self) -> int:
        """An estimate of the bytes all shards take: each segment's ciphertext × n / k (pyeclib headers aside)."""
        return sum(-(-length // self.k) * self.n for length in self.segment_lengths)

    def encode(self) -> bytes:
        count = self.segment_count
        segments_at = _HEADER.size
        hashes_at = segments_at + 4 * count
        name_at = hashes_at + HASH_BYTES * count * self.n
        end = name_at + len(self.encrypted_name)
        header = _HEADER.pack(
            MAGIC, VERSION, self.k, self.n, 0, self.segment_size, count, self.file_size,
            segments_at, hashes_at, name_at, end,
        )  # fmt: skip
        table = struct.pack(f">{count}I", *self.segment_lengths)
        hashes = b"".join(h for segment in self.shard_hashes for h in segment)
        return header + table + hashes + self.encrypted_name

    def root(self) -> bytes:
        return root_of(self.encode())


def root_of(encoded: bytes) -> bytes:
    return blake3.blake3(encoded).digest()


def decode(data: bytes, expected_root: bytes | None = None) -> FileLayout:
    """Parse a layout; with `expected_root`, refuse one whose BLAKE3 differs (it is not this file's)."""
    if expected_root is not None and root_of(data) != expected_root:
        raise BadCapability("the file layout does not match the capability's root hash")
    if len(data) < _HEADER.size:
        raise BadCapability(f"a file layout is at least {_HEADER.size} bytes, got {len(data)}")
    magic, version, k, n, _, segment_size, count, file_size, seg_at, hash_at, name_at, end = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise BadCapability(f"not a version-{VERSION} file layout")
    check_params(k, n)
    if not (seg_at == _HEADER.size and hash_at == seg_at + 4 * count and name_at == hash_at + HASH_BYTES * count * n
            and end == len(data) and name_at <= end):  # fmt: skip
        raise BadCapability("the file layout's offset table does not match its contents")
    if end - name_at > MAX_NAME_BYTES + 16:
        raise BadCapability("the file layout's name is too long")
    lengths = struct.unpack_from(f">{count}I", data, seg_at)
    hashes = tuple(
        tuple(data[hash_at + (i * n + j) * HASH_BYTES : hash_at + (i * n + j + 1) * HASH_BYTES] for j in range(n))
        for i in range(count)
    )
    if segment_size < 1 or any(length < 16 or length > segment_size + 16 for length in lengths):
        raise BadCapability("the file layout's segment lengths are impossible")
    if sum(length - 16 for length in lengths) != file_size:
        raise BadCapability("the file layout's segment lengths do not add up to its file size")
    return FileLayout(k, n, segment_size, file_size, tuple(lengths), hashes, bytes(data[name_at:end]))
