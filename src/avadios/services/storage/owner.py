"""The owner's side: put (a session of segments), get, check (audit, then repair), remove, list.

It reaches hosters only through a `Hosters` protocol (this node's own shard store, or a peer through the
gateway's peer door: the service shell decides), so the whole flow is tested with in-memory hosters too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from avadios.errors import AvadiosError, InvalidArgument, NotFound
from avadios.services.storage import checker, payment, placement, repairer
from avadios.services.storage.capability import ReadCap, VerifyCap, parse_any_cap, parse_read_cap
from avadios.services.storage.checker import Health
from avadios.services.storage.codec import Codec
from avadios.services.storage.core import FileReader, FileWriter, shard_hash
from avadios.services.storage.errors import FileNotFound, SegmentsMissing, ShardCorrupted
from avadios.services.storage.index import FileIndex
from avadios.services.storage.layout import FileLayout
from avadios.v1 import storage_pb2

log = logging.getLogger("avadios.storage")
CHALLENGES_PER_SHARD = 4
PARALLEL_CALLS = 16  # shards on the wire at once
REFUND_SKEW_S = 120.0  # past the ledger's clock skew allowance after a hold's expiry
PIPELINE = 4  # PutSegment calls of one upload that may be in flight at once
UPLOAD_IDLE_S = 600.0
READ_IDLE_S = (
    600.0  # a read session idle this long is forgotten  # an upload idle this long is aborted and its shards deleted
)


class Payer(Protocol):
    """The owner's wallet: hold a term's price for the hosters, settle it as their audits earned."""

    async def hold(self, file_id: bytes, prices: dict[bytes, int], ttl_s: float) -> bytes: ...

    async def settle(self, hold_block: bytes, paid: dict[bytes, int], failed: dict[bytes, bool]) -> None: ...


class Hosters(Protocol):
    """Shards by hoster node id: this node's own store or a peer's, through the peer door."""

    async def store(self, hoster: str, address: bytes, data: bytes) -> None: ...

    async def fetch(self, hoster: str, address: bytes) -> bytes: ...

    async def audit(self, hoster: str, address: bytes, nonce: bytes, offset: int, length: int) -> bytes: ...

    async def delete(self, hoster: str, address: bytes) -> None: ...

    async def candidates(self, local_only: bool) -> list[placement.Hoster]: ...


@dataclass(slots=True)
class Upload:
    upload_id: str
    name: str
    local_only: bool
    writer: FileWriter
    ranked: list[placement.Hoster]
    placements: dict[int, storage_pb2.SegmentPlacement] = field(default_factory=dict)  # by segment index
    placed: list[tuple[str, bytes]] = field(default_factory=list)  # (hoster, address) of every stored shard
    touched: float = field(default_factory=time.monotonic)
    # Segments are encrypted and encoded strictly in order (the writer's turn), while the shards of several
    # segments may be on the wire at once (a client keeps a few PutSegment calls in flight).
    turn: asyncio.Condition = field(default_factory=asyncio.Condition)
    aborted: bool = False
    journal: IO[str] | None = None  # kept open while the upload runs: one line per shard placed
    busy: int = 0  # PutSegment calls running now: an abort waits for them, so it can delete what they stored

    def segments(self) -> list[storage_pb2.SegmentPlacement]:
        return [self.placements[i] for i in range(len(self.placements))]


@dataclass(slots=True)
class ReadSession:
    record: storage_pb2.OwnedFile
    reader: FileReader
    down: set[str]  # hosters that did not answer the probe: tried last
    touched: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class OwnerCounters:
    files_put: int = 0
    bytes_put: int = 0
    files_read: int = 0
    audits_passed: int = 0
    audits_failed: int = 0
    repairs: int = 0  # shards rebuilt and placed again


def _challenges(shard: bytes) -> storage_pb2.ShardChallenges:
    return storage_pb2.ShardChallenges(
        items=[
            storage_pb2.StoredChallenge(nonce=c.nonce, offset=c.offset, length=c.length, expected=c.expected)
            for c in checker.draw(shard, CHALLENGES_PER_SHARD)
        ]
    )


class Owner:
    def __init__(
        self,
        index: FileIndex,
        hosters: Hosters,
        k: int,
        n: int,
        segment_size: int,
        repair_threshold: int,
        on_verdicts: Callable[[list[tuple[str, bool, str]]], Awaitable[None]] | None = None,
        payer: Payer | None = None,
        locate: Callable[[bytes], Awaitable[tuple[FileLayout, list[list[str]]]]] | None = None,
        term_s: float = 7 * 24 * 3600.0,
        settle_after_s: float = 0.0,
    ) -> None:
        self.payer = payer
        self.locate = locate
        # One journal per open upload: every shard it placed, so shards of an upload the service never finished
        # (it crashed or was killed) are found and deleted at the next start.
        self.journals = index.root.parent / "uploads"
        self.journals.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.term_s = term_s
        self.settle_after_s = settle_after_s
        self.index = index
        self.hosters = hosters
        self.k, self.n = k, n
        self.segment_size = segment_size
        self.repair_threshold = repair_threshold or n
        self.uploads: dict[str, Upload] = {}
        self.reads: dict[str, ReadSession] = {}
        self.counters = OwnerCounters()
        self.on_verdicts = on_verdicts
        self._sem = asyncio.Semaphore(PARALLEL_CALLS)

    # ---- put --------------------------------------------------------------------------------------------------

    async def begin(self, name: str, k: int, n: int, local_only: bool) -> Upload:
        if not name or "/" in name or len(name.encode()) > 1024:
            raise InvalidArgument("a file name must be 1 to 1,024 bytes with no '/'")
        writer = FileWriter(k or self.k, n or self.n, self.segment_size)
        estimate = -(-self.segment_size // writer.codec.k) + 128
        ranked = placement.rank(await self.hosters.candidates(local_only), estimate)
        if not ranked:
            raise NotFound("no hoster with free space is known (this node's quota is full and no peer offers storage)")
        upload = Upload(secrets.token_hex(16), name, local_only, writer, ranked)
        self.uploads[upload.upload_id] = upload
        path = self._journal(upload.upload_id)
        path.touch(mode=0o600)
        upload.journal = path.open("a")
        return upload

    def _journal(self, upload_id: str) -> Path:
        return self.journals / f"{upload_id}.log"

    async def clean_orphans(self) -> int:
        """Delete the shards of uploads that no running upload owns (left by a crash); how many were deleted."""
        deleted = 0
        for path in sorted(self.journals.glob("*.log")):
            if path.stem in self.uploads:
                continue
            placed = []
            for line in path.read_text().splitlines():
                hoster, _, address = line.partition(" ")
                with contextlib.suppress(ValueError):
                    placed.append((hoster, bytes.fromhex(address)))
            left = await self._delete_each(placed)
            deleted += len(placed) - len(left)
            if not left:
                path.unlink()
            else:  # a hoster that does not answer now: the next try deletes the rest
                path.write_text("".join(f"{h} {a.hex()}\n" for h, a in left))
                log.info("an unfinished upload's shards are not all deleted yet", extra={"left": len(left)})
        return deleted

    def _upload(self, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise NotFound(f"no upload {upload_id!r} (finished, aborted, or idle for over {UPLOAD_IDLE_S:.0f} s)")
        upload.touched = time.monotonic()
        return upload

    async def put_segment(self, upload_id: str, index: int, data: bytes) -> list[str]:
        upload = self._upload(upload_id)
        upload.busy += 1
        try:
            return await self._put_segment(upload, index, data)
        finally:
            upload.busy -= 1
            async with upload.turn:
                upload.turn.notify_all()

    async def _put_segment(self, upload: Upload, index: int, data: bytes) -> list[str]:
        async with upload.turn:
            written = upload.writer.segments_written
            if not written <= index < written + PIPELINE:
                raise InvalidArgument(f"expected segment {written} (or up to {PIPELINE - 1} after it), got {index}")
            await asyncio.wait_for(upload.turn.wait_for(lambda: upload.writer.segments_written == index), 120.0)
            encoded = await asyncio.to_thread(upload.writer.add, data)
            upload.turn.notify_all()
        chosen = placement.place_segment(upload.ranked, index, upload.writer.codec.n)
        hosters = await asyncio.gather(
            *(self._place(upload, chosen, j, shard, address)
              for j, (shard, address) in enumerate(zip(encoded.shards, encoded.hashes, strict=True)))
        )  # fmt: skip
        challenges = await asyncio.to_thread(lambda: [_challenges(s) for s in encoded.shards])
        upload.placements[index] = storage_pb2.SegmentPlacement(hosters=hosters, challenges=challenges)
        return list(hosters)

    async def _place(self, upload: Upload, chosen: list[str], j: int, shard: bytes, address: bytes) -> str:
        """Store shard j on its chosen hoster, or on the next one that takes it; the hoster that did."""
        failed: set[str] = set()
        hoster: str | None = chosen[j]
        errors = []
        while hoster is not None:
            try:
                async with self._sem:
                    await self.hosters.store(hoster, address, shard)
                if upload.aborted:  # a segment still on the wire when its upload was aborted: undo it too
                    for h, a in await self._delete_each([(hoster, address)]):
                        with self._journal(upload.upload_id).open("a") as journal:
                            journal.write(f"{h} {a.hex()}\n")
                    return hoster
                upload.placed.append((hoster, address))
                if upload.journal is not None:
                    upload.journal.write(f"{hoster} {address.hex()}\n")
                    upload.journal.flush()
                return hoster
            except AvadiosError as exc:
                log.info("a hoster did not take a shard", extra={"hoster": hoster, "reason": exc.message})
                errors.append(f"{hoster[:16]}: {exc.message}")
                failed.add(hoster)
                hoster = placement.replacement(upload.ranked, chosen, frozenset(failed))
        raise NotFound("no hoster took a shard: " + "; ".join(errors[-4:]))

    async def finish(self, upload_id: str, created_unix: int | None = None) -> tuple[storage_pb2.OwnedFile, FileLayout]:
        upload = self._upload(upload_id)
        async with upload.turn:
            if len(upload.placements) != upload.writer.segments_written:
                raise InvalidArgument("a segment of this upload is still being stored: finish after every PutSegment")
            file_layout, cap = upload.writer.finish(upload.name)
            if len(upload.placements) < file_layout.segment_count:  # the empty file's one segment
                raise InvalidArgument("an empty file needs one empty PutSegment")
            record = storage_pb2.OwnedFile(
                cap=str(cap), name=upload.name, created_unix=created_unix or int(time.time()),
                local_only=upload.local_only, segments=upload.segments(), health=Health.HEALTHY.value,
                hosters_alive=sorted({h for s in upload.placements.values() for h in s.hosters}),
            )  # fmt: skip
            if not upload.local_only and self.payer is not None:
                await self._hold_term(record, file_layout, upload.ranked, cap.root)
            self.index.save(cap.file_id, record, file_layout)
            del self.uploads[upload_id]
            if upload.journal is not None:
                upload.journal.close()
            self._journal(upload_id).unlink(missing_ok=True)
            self.counters.files_put += 1
            self.counters.bytes_put += file_layout.file_size
            return record, file_layout

    async def _hold_term(
        self, record: storage_pb2.OwnedFile, file_layout: FileLayout, ranked: Sequence[placement.Hoster], root: bytes
    ) -> None:
        """Hold one term's price for every hoster of the file (its payee from its signed profile)."""
        assert self.payer is not None
        by_id = {h.node_id: h for h in ranked}
        held_bytes: dict[str, int] = {}
        for i, seg in enumerate(record.segments):
            shard = -(-file_layout.segment_lengths[i] // file_layout.k)
            for hoster in seg.hosters:
                held_bytes[hoster] = held_bytes.get(hoster, 0) + shard
        terms = []
        for node_id, size in sorted(held_bytes.items()):
            h = by_id.get(node_id)
            if h is None or len(h.payee) != 32:
                continue
            price = payment.term_price(size, h.price_per_gib_month, self.term_s)
            if price > 0:
                terms.append(storage_pb2.HosterTerm(node_id=node_id, payee=h.payee, price_micro=price))
        terms = terms[:32]  # a hold names at most 32 payees
        if not terms or len({t.payee for t in terms}) != len(terms):
            return
        record.hold_block = await self.payer.hold(root, {t.payee: t.price_micro for t in terms}, self.term_s)
        record.held_micro = sum(t.price_micro for t in terms)
        record.settle_after_unix = int(time.time() + self.settle_after_s)
        record.hold_expires_unix = int(time.time() + self.term_s)
        del record.terms[:]
        record.terms.extend(terms)

    async def _settle_term(self, record: storage_pb2.OwnedFile, renew: bool = True, force: bool = False) -> int:
        """Once the term is due, pay each hoster its price × its audits passed this term (the rest comes back) and,
        with `renew`, hold the next term; what was paid."""
        if self.payer is None or not record.hold_block or (not force and time.time() < record.settle_after_unix):
            return 0
        due = payment.payouts(
            {t.payee: t.price_micro for t in record.terms},
            {t.payee: (t.audits_passed, t.audits) for t in record.terms},
        )
        paid = {p.payee: p.amount for p in due if p.amount > 0}
        if not paid and time.time() < record.hold_expires_unix + REFUND_SKEW_S:
            return 0  # paying no one is a refund, which the ledger allows only once the hold expired
        await self.payer.settle(record.hold_block, paid, {p.payee: p.failed_all for p in due if p.amount == 0})
        record.paid_micro += sum(paid.values())
        record.hold_block, record.held_micro = b"", 0
        if renew and record.terms:
            try:
                root = parse_read_cap(record.cap).root
                prices = {t.payee: t.price_micro for t in record.terms}
                record.hold_block = await self.payer.hold(root, prices, self.term_s)
                record.held_micro = sum(prices.values())
                record.settle_after_unix = int(time.time() + self.settle_after_s)
                record.hold_expires_unix = int(time.time() + self.term_s)
                for term in record.terms:
                    term.audits = term.audits_passed = 0
            except AvadiosError as exc:  # too little AUTOM, say: the file stays, its hosters go unpaid
                log.warning("could not hold the next storage term: %s", exc.message)
        return sum(paid.values())

    async def abort(self, upload_id: str) -> int:
        upload = self.uploads.pop(upload_id, None)
        if upload is None:
            return 0
        upload.aborted = True
        async with upload.turn:  # segments still being stored finish first (each deletes what it stores now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(upload.turn.wait_for(lambda: upload.busy == 0), 120.0)
        if upload.journal is not None:
            upload.journal.close()
            upload.journal = None
        left = await self._delete_each(upload.placed)
        journal = self._journal(upload_id)
        if left:  # the journal keeps what a hoster away now still holds: clean_orphans deletes it later
            journal.write_text("".join(f"{h} {a.hex()}\n" for h, a in left))
        else:
            journal.unlink(missing_ok=True)
        return len(upload.placed) - len(left)

    async def abort_idle(self) -> None:
        now = time.monotonic()
        for upload_id in [u.upload_id for u in self.uploads.values() if now - u.touched > UPLOAD_IDLE_S]:
            await self.abort(upload_id)

    async def _delete_all(self, placed: Sequence[tuple[str, bytes]]) -> int:
        return len(placed) - len(await self._delete_each(placed))

    async def _delete_each(self, placed: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Delete shards from their hosters; the ones that could not be deleted now."""

        async def one(hoster: str, address: bytes) -> bool:
            try:
                async with self._sem:
                    await self.hosters.delete(hoster, address)
                return True
            except AvadiosError:
                return False

        done = await asyncio.gather(*(one(h, a) for h, a in placed))
        return [item for item, ok in zip(placed, done, strict=True) if not ok]

    # ---- get --------------------------------------------------------------------------------------------------

    async def open(self, cap_text: str) -> tuple[storage_pb2.OwnedFile, FileReader]:
        """The file's record and a reader: this node's own record, else its owner's answer to a locate (a layout
        checked against the cap's root and a placement map), for a reader elsewhere who holds the read-cap."""
        cap = parse_read_cap(cap_text)
        try:
            record, file_layout = self.index.load(cap.file_id)
        except FileNotFound:
            if self.locate is None:
                raise
            file_layout, placements = await self.locate(cap.root)
            record = storage_pb2.OwnedFile(segments=[storage_pb2.SegmentPlacement(hosters=h) for h in placements])
            if len(record.segments) != file_layout.segment_count or any(
                len(s.hosters) != file_layout.n for s in record.segments
            ):
                raise FileNotFound("the file's owner sent a placement map that does not fit its layout") from None
        return record, FileReader(file_layout, cap)  # a wrong key fails here, before any byte is read

    def location(self, root: bytes) -> storage_pb2.FileLocation:
        """Where this node's file `root` lives, for a reader on another node (no key, no name in clear)."""
        record, file_layout = self.index.load(root.hex())
        return storage_pb2.FileLocation(
            layout=file_layout.encode(),
            segments=[storage_pb2.SegmentHosters(hosters=s.hosters) for s in record.segments],
        )

    async def open_read(self, cap_text: str) -> tuple[str, FileReader]:
        """A read session: the file opened (a wrong key fails here) and every hoster probed; if some segment
        cannot be rebuilt, SegmentsMissing names the segments and hosters, and nothing was read."""
        record, reader = await self.open(cap_text)
        down = await self._unreachable(record, reader.layout)
        missing = [i for i, s in enumerate(record.segments) if sum(h not in down for h in s.hosters) < reader.layout.k]
        if missing:
            raise SegmentsMissing(missing, [h for i in missing for h in record.segments[i].hosters if h in down],
                                  reader.layout.k)  # fmt: skip
        now = time.monotonic()
        for stale in [r for r, session in self.reads.items() if now - session.touched > READ_IDLE_S]:
            del self.reads[stale]
        read_id = secrets.token_hex(16)
        self.reads[read_id] = ReadSession(record, reader, down)
        return read_id, reader

    async def read_segment(self, read_id: str, index: int) -> bytes:
        session = self.reads.get(read_id)
        if session is None:
            raise NotFound(f"no read {read_id!r} (idle for over {READ_IDLE_S:.0f} s, or never opened)")
        if not 0 <= index < len(session.record.segments):
            raise InvalidArgument(f"the file has {len(session.record.segments)} segments; there is no {index}")
        session.touched = time.monotonic()
        shards = await self._fetch_segment(session.reader, index, session.record.segments[index], session.down)
        data = await asyncio.to_thread(session.reader.segment, index, shards)
        if index == len(session.record.segments) - 1:
            self.counters.files_read += 1
        return data

    async def read(self, cap_text: str) -> AsyncIterator[bytes]:
        """Every segment's plaintext, in order (for callers in this process)."""
        read_id, reader = await self.open_read(cap_text)
        for index in range(reader.layout.segment_count):
            yield await self.read_segment(read_id, index)
        self.reads.pop(read_id, None)

    async def _unreachable(self, record: storage_pb2.OwnedFile, file_layout: FileLayout) -> set[str]:
        """Hosters that do not answer a tiny audit of one of their shards (whose answer is not checked here)."""
        first: dict[str, bytes] = {}
        for i, seg in enumerate(record.segments):
            for j, hoster in enumerate(seg.hosters):
                first.setdefault(hoster, file_layout.shard_hashes[i][j])

        async def alive(hoster: str, address: bytes) -> bool:
            try:
                async with self._sem:
                    await self.hosters.audit(hoster, address, secrets.token_bytes(16), 0, 1)
                return True
            except AvadiosError:
                return False

        answers = await asyncio.gather(*(alive(h, a) for h, a in first.items()))
        return {h for h, ok in zip(first, answers, strict=True) if not ok}

    async def _fetch_segment(
        self, reader: FileReader, index: int, seg: storage_pb2.SegmentPlacement, down: set[str]
    ) -> dict[int, bytes]:
        """At least k shards of a segment that match their hashes: the first k tried, then more as some fail."""
        hashes = reader.layout.shard_hashes[index]
        order = sorted(range(len(seg.hosters)), key=lambda j: seg.hosters[j] in down)
        good: dict[int, bytes] = {}
        failed: list[str] = []
        k = reader.layout.k

        async def one(j: int) -> None:
            try:
                async with self._sem:
                    data = await self.hosters.fetch(seg.hosters[j], hashes[j])
            except AvadiosError:
                failed.append(seg.hosters[j])
                return
            if shard_hash(data) == hashes[j]:
                good[j] = data
            else:
                failed.append(seg.hosters[j])

        pos = 0
        while len(good) < k and pos < len(order):
            batch = order[pos : pos + k - len(good)]
            pos += len(batch)
            await asyncio.gather(*(one(j) for j in batch))
        if len(good) < k:
            raise SegmentsMissing([index], failed, k)
        return good

    # ---- check, repair, remove, list --------------------------------------------------------------------------

    async def check(self, cap_text: str, repair: bool) -> storage_pb2.CheckFileReply:
        cap = parse_any_cap(cap_text)
        record, file_layout = self.index.load(cap.file_id)
        audits: dict[str, storage_pb2.HosterAudit] = {}
        healthy: dict[int, list[int]] = {}

        async def audit_one(i: int, j: int) -> None:
            seg = record.segments[i]
            hoster = seg.hosters[j]
            entry = audits.setdefault(hoster, storage_pb2.HosterAudit(node_id=hoster))
            entry.shards += 1
            ok, error = await self._audit_shard(file_layout, i, j, seg)
            if ok:
                entry.passed += 1
                healthy.setdefault(i, []).append(j)
                self.counters.audits_passed += 1
            else:
                self.counters.audits_failed += 1
                if error.startswith("unreachable"):
                    entry.unreachable += 1
                else:
                    entry.failed += 1
                entry.error = error
            for term in record.terms:
                if term.node_id == hoster:
                    term.audits += 1
                    term.audits_passed += int(ok)

        await asyncio.gather(*(audit_one(i, j) for i in range(len(record.segments)) for j in range(file_layout.n)))
        per_segment = [len(healthy.get(i, [])) for i in range(len(record.segments))]
        before = checker.file_health(per_segment, file_layout.k, file_layout.n)
        reply = storage_pb2.CheckFileReply(health=before.value, healthy_per_segment=per_segment)
        reply.hosters.extend(sorted(audits.values(), key=lambda a: a.node_id))
        if self.on_verdicts is not None:
            # A hoster that answered but lost or changed bytes loses reliability (as a lying provider does); one
            # that did not answer is left to discovery's pings, which judge liveness.
            verdicts = [(a.node_id, a.failed == 0, a.error if a.failed else "") for a in audits.values()
                        if a.passed or a.failed]  # fmt: skip
            try:
                await self.on_verdicts(verdicts)
            except AvadiosError as exc:
                log.info("could not record audit verdicts: %s", exc.message)
        if repair:
            bad = {a.node_id for a in audits.values() if a.passed < a.shards}
            unreachable = {a.node_id for a in audits.values() if a.unreachable}
            repaired, lost = await self._repair(record, file_layout, healthy, bad, unreachable)
            reply.shards_repaired = repaired
            reply.unrepairable_segments.extend(lost)
            per_segment = [len(healthy.get(i, [])) for i in range(len(record.segments))]
        after = checker.file_health(per_segment, file_layout.k, file_layout.n)
        record.health = after.value
        down = {h for h, a in audits.items() if a.unreachable == a.shards}
        record.hosters_alive[:] = sorted({h for s in record.segments for h in s.hosters} - down)
        record.last_audit_unix = int(time.time())
        try:
            reply.paid_micro = await self._settle_term(record)
        except AvadiosError as exc:  # the ledger busy or the hold expired: the next check tries again
            reply.paid_micro = 0
            log.warning("settling a storage term failed: %s", exc.message)
        self.index.save(cap.file_id, record)
        reply.file.CopyFrom(self.info(record, file_layout, isinstance(cap, ReadCap)))
        return reply

    async def _audit_shard(
        self, file_layout: FileLayout, i: int, j: int, seg: storage_pb2.SegmentPlacement
    ) -> tuple[bool, str]:
        hoster, address = seg.hosters[j], file_layout.shard_hashes[i][j]
        pool = seg.challenges[j]
        try:
            if not pool.items:  # refill: fetch the shard (checked by its hash) and draw new challenges
                async with self._sem:
                    data = await self.hosters.fetch(hoster, address)
                if shard_hash(data) != address:
                    return False, "served bytes that do not match the shard's hash"
                pool.CopyFrom(_challenges(data))
            challenge = pool.items.pop(0)
            async with self._sem:
                digest = await self.hosters.audit(hoster, address, challenge.nonce, challenge.offset, challenge.length)
        except AvadiosError as exc:
            kind = "unreachable" if exc.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else "lost"
            return False, f"{kind}: {exc.message}"
        c = checker.Challenge(challenge.nonce, challenge.offset, challenge.length, challenge.expected)
        if not checker.passed(c, digest):
            return False, "wrong answer to an audit challenge (the shard's bytes changed)"
        return True, ""

    async def _repair(
        self,
        record: storage_pb2.OwnedFile,
        file_layout: FileLayout,
        healthy: dict[int, list[int]],
        bad: set[str],
        unreachable: set[str],
    ) -> tuple[int, list[int]]:
        plans, lost = repairer.plan(
            {i: healthy.get(i, []) for i in range(len(record.segments))}, file_layout.k, file_layout.n,
            self.repair_threshold,
        )  # fmt: skip
        if not plans:
            return 0, lost
        codec = Codec(file_layout.k, file_layout.n)
        candidates = await self.hosters.candidates(record.local_only)
        ranked = placement.rank(candidates, max(file_layout.segment_lengths) // file_layout.k + 128)
        repaired = 0
        for p in plans:
            seg = record.segments[p.segment]
            hashes = file_layout.shard_hashes[p.segment]
            sources = {}
            for j in p.sources:
                async with self._sem:
                    sources[j] = await self.hosters.fetch(seg.hosters[j], hashes[j])
            try:
                rebuilt = await asyncio.to_thread(repairer.rebuild, codec, sources, p.missing, hashes)
            except ShardCorrupted:
                continue  # a source changed since its audit: the next check tries again
            keep = [seg.hosters[j] for j in range(file_layout.n) if j not in p.missing]
            for j, shard in rebuilt.items():
                # Best a hoster new to the segment; then the one that lost the shard, if it still answers (its disk
                # rotted one file); only then a second shard on one hoster, which a later repair may spread again.
                hoster = placement.replacement(ranked, keep, frozenset(bad | {seg.hosters[j]}), fresh_only=True)
                if hoster is None and seg.hosters[j] not in unreachable and seg.hosters[j] not in keep:
                    hoster = seg.hosters[j]
                for avoid in (frozenset(bad), frozenset()):
                    hoster = hoster or placement.replacement(ranked, keep, avoid)
                if hoster is None:
                    continue
                try:
                    async with self._sem:
                        await self.hosters.store(hoster, hashes[j], shard)
                except AvadiosError:
                    continue
                seg.hosters[j] = hoster
                seg.challenges[j].CopyFrom(_challenges(shard))
                keep.append(hoster)
                healthy.setdefault(p.segment, []).append(j)
                repaired += 1
                self.counters.repairs += 1
        return repaired, lost

    async def remove(self, cap_text: str) -> int:
        cap = parse_any_cap(cap_text)
        record, file_layout = self.index.load(cap.file_id)
        placed = [(h, file_layout.shard_hashes[i][j]) for i, s in enumerate(record.segments)
                  for j, h in enumerate(s.hosters)]  # fmt: skip
        deleted = await self._delete_all(placed)
        try:
            await self._settle_term(record, renew=False, force=True)  # hosters are paid the audits passed so far
        except AvadiosError as exc:
            log.warning("settling a removed file's term failed: %s", exc.message)
        self.index.remove(cap.file_id)
        return deleted

    def list(self) -> list[storage_pb2.FileInfo]:
        out = []
        for file_id in self.index.ids():
            try:
                record, file_layout = self.index.load(file_id)
            except AvadiosError:
                continue
            out.append(self.info(record, file_layout, True))
        return out

    def info(self, record: storage_pb2.OwnedFile, file_layout: FileLayout, with_cap: bool) -> storage_pb2.FileInfo:
        cap = parse_read_cap(record.cap)
        hosters = {h for s in record.segments for h in s.hosters}
        return storage_pb2.FileInfo(
            cap=record.cap if with_cap else "", verify_cap=str(VerifyCap(cap.root)), name=record.name,
            size=file_layout.file_size, segments=file_layout.segment_count, k=file_layout.k, n=file_layout.n,
            shards=file_layout.segment_count * file_layout.n, hosters=len(hosters),
            hosters_alive=len(hosters & set(record.hosters_alive)), health=record.health or Health.HEALTHY.value,
            created_unix=record.created_unix, held_micro=record.held_micro, paid_micro=record.paid_micro,
            local_only=record.local_only,
        )  # fmt: skip
