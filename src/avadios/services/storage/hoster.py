"""The hoster's side: shards kept as files named by their BLAKE3, under a size quota, with who stored each.

A shard is refused unless its bytes hash to the address it is offered under, and refused politely (nothing
written) when it would take the hoster over its quota. It is served only by that hash. An audit re-hashes the
whole shard first: a shard whose bytes rotted on disk is reported lost (and deleted), never answered from.

Files, not RocksDB: a shard is written once and read whole, so one file each (written to a temporary name and
renamed) costs nothing a database would save, and an operator can see and bound the space with `du`. Who stored
each shard is one append-only log (`owners.log`: "+ <hash> <node id>" / "- <hash> <node id>" lines), read once
at start: a file per shard for that doubled the cost of a store.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import blake3

from avadios.errors import InvalidArgument
from avadios.services.storage import checker
from avadios.services.storage.errors import QuotaExceeded, ShardCorrupted, ShardNotFound

HASH_BYTES = 32
MAX_SHARD_BYTES = 1 << 20


@dataclass(slots=True)
class HosterCounters:
    shards_served: int = 0
    audits_passed: int = 0  # audits this hoster answered from intact bytes
    audits_failed: int = 0  # audits of a shard it no longer had intact
    refused_over_quota: int = 0
    refused_bad_hash: int = 0


class ShardStore:
    def __init__(self, root: Path, quota_bytes: int) -> None:
        self.root = root
        self.quota_bytes = quota_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.counters = HosterCounters()
        self.used_bytes = 0
        self.shards = 0
        for path in self.root.glob("*/*.shard"):
            self.used_bytes += path.stat().st_size
            self.shards += 1
        self._owners: dict[bytes, list[str]] = {}
        log_path = self.root / "owners.log"
        if log_path.exists():
            for line in log_path.read_text().splitlines():
                op, _, rest = line.partition(" ")
                name, _, owner = rest.partition(" ")
                with contextlib.suppress(ValueError):
                    owners = self._owners.setdefault(bytes.fromhex(name), [])
                    if op == "+" and owner not in owners:
                        owners.append(owner)
                    elif op == "-" and owner in owners:
                        owners.remove(owner)
        self._log = log_path.open("a")
        # Stores, deletes and audits run in worker threads (asyncio.to_thread): the counts and the log need a lock.
        self._lock = threading.Lock()

    def close(self) -> None:
        self._log.close()

    def _record(self, op: str, address: bytes, owner: str) -> None:
        self._log.write(f"{op} {address.hex()} {owner}\n")
        self._log.flush()

    @property
    def free_bytes(self) -> int:
        return max(0, self.quota_bytes - self.used_bytes)

    def _path(self, address: bytes) -> Path:
        if len(address) != HASH_BYTES:
            raise InvalidArgument(f"a shard address is a {HASH_BYTES}-byte BLAKE3 hash, got {len(address)} bytes")
        name = address.hex()
        return self.root / name[:2] / f"{name}.shard"

    def path_of(self, address: bytes) -> Path:
        return self._path(address)

    def put(self, address: bytes, data: bytes, owner: str) -> bool:
        """Store `data` under its hash for `owner`; False if it was already here (the owner is added)."""
        path = self._path(address)
        if len(data) > MAX_SHARD_BYTES:
            raise InvalidArgument(f"a shard is at most {MAX_SHARD_BYTES} bytes, got {len(data)}")
        if blake3.blake3(data).digest() != address:
            self.counters.refused_bad_hash += 1
            raise ShardCorrupted("refused: the shard's bytes do not hash to the address it was offered under")
        with self._lock:
            return self._put_checked(path, address, data, owner)

    def _put_checked(self, path: Path, address: bytes, data: bytes, owner: str) -> bool:
        new = not path.exists()
        if new and len(data) > self.free_bytes:
            self.counters.refused_over_quota += 1
            raise QuotaExceeded(
                f"this hoster has {self.free_bytes} bytes free of its {self.quota_bytes}-byte quota; "
                f"a {len(data)}-byte shard does not fit (nothing was stored)"
            )
        if new:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            self.used_bytes += len(data)
            self.shards += 1
        owners = self._owners.setdefault(address, [])
        if owner not in owners:
            owners.append(owner)
            self._record("+", address, owner)
        return new

    def get(self, address: bytes) -> bytes:
        """The shard's bytes, checked against its address (rotten bytes are reported, never served)."""
        data = self._read(address)
        self.counters.shards_served += 1
        return data

    def _read(self, address: bytes) -> bytes:
        path = self._path(address)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ShardNotFound(f"this hoster holds no shard {address.hex()[:16]}…") from None
        if blake3.blake3(data).digest() != address:
            with self._lock:
                self._drop(address)
            raise ShardCorrupted(f"shard {address.hex()[:16]}… rotted on this hoster's disk and was dropped")
        return data

    def audit(self, address: bytes, nonce: bytes, offset: int, length: int) -> bytes:
        try:
            data = self._read(address)
        except (ShardNotFound, ShardCorrupted):
            self.counters.audits_failed += 1
            raise
        if offset + length > len(data) or length == 0 or len(nonce) != checker.NONCE_BYTES:
            raise InvalidArgument("the audit's range is outside the shard or its nonce is not 16 bytes")
        self.counters.audits_passed += 1
        return checker.answer(data, nonce, offset, length)

    def delete(self, address: bytes, owner: str) -> bool:
        """Drop `owner`'s claim; the bytes go when no owner is left. Only an owner may delete."""
        with self._lock:
            return self._delete_locked(address, owner)

    def _delete_locked(self, address: bytes, owner: str) -> bool:
        owners = self._owners.get(address, [])
        if owner not in owners:
            return False
        owners.remove(owner)
        self._record("-", address, owner)
        if not owners:
            self._drop(address)
        return True

    def _drop(self, address: bytes) -> None:
        path = self._path(address)
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            os.unlink(path)
            self.used_bytes -= size
            self.shards -= 1
        for owner in self._owners.pop(address, []):
            self._record("-", address, owner)
