"""The Cache servicer: a RocksDB map from request key to finished answer, bounded by entry count."""

from __future__ import annotations

import asyncio
import logging
import time

from rocksdict import Options, Rdict

from avadios.errors import InvalidArgument
from avadios.runtime import ServiceContext
from avadios.transport import ServerContext
from avadios.v1 import cache_pb2, cache_pb2_grpc, common_pb2

log = logging.getLogger("avadios.cache")
KEY_BYTES = 32  # BLAKE3 digest
MAX_ENTRIES = 100_000
MAX_ANSWER_BYTES = 256 * 1024


class CacheRoom(cache_pb2_grpc.CacheServicer):
    descriptor = cache_pb2.DESCRIPTOR.services_by_name["Cache"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        path = ctx.config.home / "cache" / "tier0"
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)
        self._hits = 0
        self._lookups = 0
        self._entries = sum(1 for _ in self._db.keys())  # noqa: SIM118 (Rdict iterates items)
        log.info("cache opened", extra={"path": str(path), "entries": self._entries})

    @classmethod
    async def create(cls, ctx: ServiceContext) -> CacheRoom:
        return cls(ctx)

    @property
    def servicer(self) -> object:
        return self

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._db.close()

    def health(self) -> common_pb2.HealthReply:
        return self.ctx.base_health(
            common_pb2.HealthReply.SERVING,
            f"{self._entries} entries, {self._hits}/{self._lookups} hits",
            requests_served=self._lookups,
        )

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()

    async def Lookup(self, request: cache_pb2.CacheLookupRequest, context: ServerContext) -> cache_pb2.CacheLookupReply:
        _check_key(request.key)
        self._lookups += 1
        raw = self._db.get(request.key)
        if raw is None:
            return cache_pb2.CacheLookupReply(found=False)
        self._hits += 1
        return cache_pb2.CacheLookupReply(found=True, answer=cache_pb2.CachedAnswer.FromString(raw))

    async def Store(self, request: cache_pb2.CacheStoreRequest, context: ServerContext) -> cache_pb2.CacheStoreReply:
        _check_key(request.key)
        data = request.answer.SerializeToString()
        if len(data) > MAX_ANSWER_BYTES:
            raise InvalidArgument(f"answer of {len(data)} bytes is over the cache's {MAX_ANSWER_BYTES} byte limit")
        if self._entries >= MAX_ENTRIES:
            await asyncio.to_thread(self._evict_oldest_half)
        if request.key not in self._db:
            self._entries += 1
        answer = cache_pb2.CachedAnswer()
        answer.CopyFrom(request.answer)
        answer.created_unix = answer.created_unix or int(time.time())
        self._db[request.key] = answer.SerializeToString()
        return cache_pb2.CacheStoreReply()

    def _evict_oldest_half(self) -> None:
        """Keep the cache bounded: drop the older half of the entries (answers are cheap to recompute)."""
        ages = sorted((cache_pb2.CachedAnswer.FromString(v).created_unix, k) for k, v in self._db.items())
        for _, key in ages[: len(ages) // 2]:
            del self._db[key]
        self._entries = len(ages) - len(ages) // 2
        log.info("cache evicted old entries", extra={"entries": self._entries})


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise InvalidArgument(f"cache key must be {KEY_BYTES} bytes (a BLAKE3 digest), got {len(key)}")
