"""The owner's flow against in-memory hosters (no processes): a put spreads shards, a get survives n-k dead
hosters and names the segments and hosters missing beyond that, a check repairs onto a hoster new to the segment,
a remove deletes every shard, and a term's payment pays exactly the audits passed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from avadios.errors import Unavailable
from avadios.services.storage import layout, placement
from avadios.services.storage.errors import BadCapability, SegmentsMissing, ShardNotFound
from avadios.services.storage.index import FileIndex
from avadios.services.storage.layout import FileLayout
from avadios.services.storage.owner import Owner

SEGMENT = 4096


class MemoryHosters:
    def __init__(self, names: list[str]) -> None:
        self.shards: dict[str, dict[bytes, bytes]] = {n: {} for n in names}
        self.down: set[str] = set()

    def _up(self, hoster: str) -> dict[bytes, bytes]:
        if hoster in self.down:
            raise Unavailable(f"{hoster} does not answer")
        return self.shards[hoster]

    async def store(self, hoster: str, address: bytes, data: bytes) -> None:
        self._up(hoster)[address] = data

    async def fetch(self, hoster: str, address: bytes) -> bytes:
        try:
            return self._up(hoster)[address]
        except KeyError:
            raise ShardNotFound("holds no shard") from None

    async def audit(self, hoster: str, address: bytes, nonce: bytes, offset: int, length: int) -> bytes:
        from avadios.services.storage import checker

        return checker.answer(await self.fetch(hoster, address), nonce, offset, length)

    async def delete(self, hoster: str, address: bytes) -> None:
        self._up(hoster).pop(address, None)

    async def candidates(self, local_only: bool) -> list[placement.Hoster]:
        return [placement.Hoster(n, 1 << 30, 10, payee=n.encode().ljust(32, b"\0")) for n in self.shards]


class Payments:
    def __init__(self) -> None:
        self.held: dict[bytes, int] = {}
        self.paid: dict[bytes, int] = {}

    async def hold(self, file_id: bytes, prices: dict[bytes, int], ttl_s: float) -> bytes:
        self.held = dict(prices)
        return b"hold-block"

    async def settle(self, hold_block: bytes, paid: dict[bytes, int], failed: dict[bytes, bool]) -> None:
        assert hold_block == b"hold-block" and set(paid) | set(failed) == set(self.held)
        self.paid = dict(paid)


async def put(owner: Owner, data: bytes) -> str:
    upload = await owner.begin("f.bin", 2, 4, False)
    source = io.BytesIO(data)
    index = 0
    while chunk := source.read(SEGMENT):
        await owner.put_segment(upload.upload_id, index, chunk)
        index += 1
    record, _ = await owner.finish(upload.upload_id)
    return record.cap


async def read(owner: Owner, cap: str) -> bytes:
    return b"".join([chunk async for chunk in owner.read(cap)])


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Owner, MemoryHosters, Payments]:
    hosters = MemoryHosters([f"h{i}" for i in range(5)])
    payments = Payments()
    owner = Owner(FileIndex(tmp_path), hosters, 2, 4, SEGMENT, 0, payer=payments, term_s=3600, settle_after_s=0)
    return owner, hosters, payments


async def test_a_file_survives_n_minus_k_dead_hosters_and_beyond_that_the_error_names_what_is_missing(
    setup: tuple[Owner, MemoryHosters, Payments],
) -> None:
    owner, hosters, _ = setup
    data = os.urandom(3 * SEGMENT + 5)
    cap = await put(owner, data)
    assert all(len(s) > 0 for s in hosters.shards.values())
    hosters.down = {"h0", "h1"}
    assert await read(owner, cap) == data
    hosters.down = {"h0", "h1", "h2", "h3"}
    with pytest.raises(SegmentsMissing) as missing:
        await read(owner, cap)
    assert missing.value.segments == [0, 1, 2, 3] and set(missing.value.hosters) <= {"h0", "h1", "h2", "h3"}
    assert "segments 0, 1, 2, 3" in missing.value.message
    hosters.down = set()
    assert await read(owner, cap) == data  # back when they are


async def test_a_check_repairs_lost_shards_and_pays_exactly_the_audits_passed(
    setup: tuple[Owner, MemoryHosters, Payments],
) -> None:
    owner, hosters, payments = setup
    cap = await put(owner, os.urandom(2 * SEGMENT))
    assert payments.held and all(v > 0 for v in payments.held.values())
    lost = sum(len(s) for s in [hosters.shards["h1"]])
    hosters.shards["h1"].clear()  # h1 lost everything it held
    reply = await owner.check(cap, repair=True)
    assert reply.health == "degraded" and reply.shards_repaired == lost
    assert reply.file.health == "healthy"
    assert (await owner.check(cap, repair=False)).health == "healthy"
    h1 = b"h1".ljust(32, b"\0")
    assert h1 not in payments.paid  # it passed none of its audits this term: unpaid
    assert all(payments.paid[p] == payments.held[p] for p in payments.paid)  # the others passed all of theirs
    assert sum(payments.paid.values()) == reply.paid_micro
    assert owner.list()[0].held_micro == sum(payments.held.values()) > 0  # the next term is held at once


async def test_remove_deletes_every_shard_and_forgets_the_file(setup: tuple[Owner, MemoryHosters, Payments]) -> None:
    owner, hosters, _ = setup
    cap = await put(owner, os.urandom(SEGMENT + 1))
    assert await owner.remove(cap) == 8
    assert all(not s for s in hosters.shards.values()) and owner.list() == []


async def test_the_shards_of_an_upload_a_crash_left_unfinished_are_deleted_at_the_next_start(
    setup: tuple[Owner, MemoryHosters, Payments], tmp_path: Path
) -> None:
    owner, hosters, _ = setup
    upload = await owner.begin("big.bin", 2, 4, False)
    for index in range(3):
        await owner.put_segment(upload.upload_id, index, os.urandom(SEGMENT))
    assert sum(len(s) for s in hosters.shards.values()) == 12
    # the service dies here; a new one over the same home finds the journal and deletes what was placed
    restarted = Owner(FileIndex(tmp_path), hosters, 2, 4, SEGMENT, 0)
    hosters.down = {"h0"}
    left_on_h0 = len(hosters.shards["h0"])
    assert await restarted.clean_orphans() == 12 - left_on_h0  # h0 does not answer: its shards wait
    hosters.down = set()
    assert await restarted.clean_orphans() == left_on_h0
    assert sum(len(s) for s in hosters.shards.values()) == 0 and restarted.list() == []
    assert await restarted.clean_orphans() == 0  # the journal is gone


async def test_a_reader_on_another_node_finds_the_file_through_its_owner_and_needs_the_key(
    setup: tuple[Owner, MemoryHosters, Payments], tmp_path: Path
) -> None:
    owner, hosters, _ = setup
    data = os.urandom(2 * SEGMENT + 9)
    cap = await put(owner, data)

    async def ask_the_owner(root: bytes) -> tuple[FileLayout, list[list[str]]]:
        location = owner.location(root)  # what the owner's node answers a FileLocate through the door
        assert b"f.bin" not in location.SerializeToString()  # no name in clear, and no key
        return layout.decode(location.layout, root), [list(s.hosters) for s in location.segments]

    reader_node = Owner(FileIndex(tmp_path / "elsewhere"), hosters, 2, 4, SEGMENT, 0, locate=ask_the_owner)
    assert await read(reader_node, cap) == data
    assert reader_node.list() == []  # it reads the file; it does not own it
    wrong_key = cap[:-4] + ("aaaa" if not cap.endswith("aaaa") else "bbbb")
    with pytest.raises(BadCapability):
        await reader_node.open(wrong_key)
