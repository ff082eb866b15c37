"""One node's storage service as a real process on a real NATS: a local-only file goes in streamed and comes back
byte-identical, shards on disk hold no plaintext, bad capabilities write nothing, a flipped byte on disk is caught
by the audit and repaired, and the hoster's quota refuses politely."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from avadios import files
from avadios.errors import RpcError
from avadios.transport import NatsChannel, connect
from avadios.v1 import storage_pb2
from avadios.v1.storage_nats import StorageClient
from tests.helpers import NatsProcess

TEXT = b"Meeting notes: the launch code word is PELICAN-47. " * 20_000  # ~1 MiB, several segments


@pytest.fixture
def storage_process(nats_server: NatsProcess, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "AVADIOS_HOME": str(home),
        "AVADIOS_NATS_URL": nats_server.url,
        "AVADIOS_STORAGE_K": "3",
        "AVADIOS_STORAGE_N": "5",
        "AVADIOS_STORAGE_QUOTA_BYTES": str(4 << 20),
    }
    log = (tmp_path / "storage.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "avadios.services.storage"], env=env, stdout=log, stderr=log)
    try:
        yield home
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest_asyncio.fixture
async def client(nats_server: NatsProcess, storage_process: Path) -> AsyncIterator[StorageClient]:
    nc = await connect(nats_server.url, "test")
    client = StorageClient(NatsChannel(nc), default_timeout=30.0)

    async def up() -> bool:
        try:
            await client.Hosting(storage_pb2.HostingRequest(), timeout=1.0)
            return True
        except Exception:
            return False

    for _ in range(100):
        if await up():
            break
        await asyncio.sleep(0.1)
    yield client
    await nc.close()


async def put_text(client: StorageClient, tmp_path: Path, data: bytes = TEXT) -> storage_pb2.FileInfo:
    source = tmp_path / "notes.txt"
    source.write_bytes(data)
    with source.open("rb") as f:
        return await files.put_stream(client, f, "notes.txt", local_only=True)


def raw_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


async def test_a_local_file_round_trips_byte_identical_and_disk_holds_no_plaintext(
    client: StorageClient, storage_process: Path, tmp_path: Path
) -> None:
    info = await put_text(client, tmp_path)
    assert info.cap.startswith("avadios:file:1:") and info.size == len(TEXT)
    assert info.segments == 4 and info.k == 3 and info.n == 5 and info.health == "healthy"
    path, written = await files.get_to_path(client, info.cap, tmp_path / "back.txt")
    assert path.read_bytes() == TEXT and written == len(TEXT)
    shards = raw_bytes(storage_process / "storage" / "shards")
    assert len(shards) > len(TEXT)  # the shards are there (5/3 of the ciphertext) ...
    assert b"PELICAN-47" not in shards and b"Meeting notes" not in shards  # ... and hold no plaintext
    listed = (await client.ListFiles(storage_pb2.ListFilesRequest())).files
    assert [(f.name, f.size, f.shards) for f in listed] == [("notes.txt", len(TEXT), 20)]
    hosting = await client.Hosting(storage_pb2.HostingRequest())
    shard_files = list((storage_process / "storage" / "shards").rglob("*.shard"))
    assert hosting.shards == len(shard_files) == 20
    assert hosting.used_bytes == sum(p.stat().st_size for p in shard_files)


async def test_a_wrong_or_truncated_capability_is_refused_and_writes_nothing(
    client: StorageClient, tmp_path: Path
) -> None:
    info = await put_text(client, tmp_path)
    wrong_key = info.cap[:-10] + ("a" if info.cap[-10] != "a" else "b") + info.cap[-9:]
    out = tmp_path / "out"
    out.mkdir()
    for bad, words in [(info.cap[:-5], "cut or altered"), (wrong_key, "does not open"), ("hello", "should start")]:
        with pytest.raises(RpcError, match=words):
            await files.get_to_path(client, bad, out / "x.txt")
    assert list(out.iterdir()) == []  # no partial plaintext, no temporary file left


async def test_a_flipped_byte_on_disk_is_caught_by_the_audit_and_repaired(
    client: StorageClient, storage_process: Path, tmp_path: Path
) -> None:
    info = await put_text(client, tmp_path)
    victim = sorted((storage_process / "storage" / "shards").rglob("*.shard"))[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    check = await client.CheckFile(storage_pb2.CheckFileRequest(cap=info.cap, repair=True))
    assert check.health == "degraded" and check.shards_repaired == 1
    assert check.hosters[0].failed == 1 and "rotted" in check.hosters[0].error
    assert check.file.health == "healthy"
    again = await client.CheckFile(storage_pb2.CheckFileRequest(cap=info.cap))
    assert again.health == "healthy" and list(again.healthy_per_segment) == [5, 5, 5, 5]
    path, _ = await files.get_to_path(client, info.cap, tmp_path / "back.txt")
    assert path.read_bytes() == TEXT


async def test_over_quota_the_put_is_refused_politely_and_nothing_is_left_behind(
    client: StorageClient, storage_process: Path, tmp_path: Path
) -> None:
    big = os.urandom(3 << 20)  # 3 MiB × 5/3 is over the 4 MiB quota
    with pytest.raises(RpcError, match="quota") as refused:
        await put_text(client, tmp_path, big)
    assert refused.value.reason == "quota_exceeded" or "quota" in refused.value.message
    hosting = await client.Hosting(storage_pb2.HostingRequest())
    assert hosting.shards == 0 and hosting.used_bytes == 0 and hosting.refused_over_quota >= 1
    assert (await client.ListFiles(storage_pb2.ListFilesRequest())).files == []


async def test_an_upload_cut_off_part_way_is_aborted_and_leaves_no_shards_and_no_file(
    client: StorageClient, tmp_path: Path
) -> None:
    class Failing:
        """A source that fails after a few segments, as a disk error or a killed client would."""

        def __init__(self) -> None:
            self.reads = 0

        def read(self, size: int) -> bytes:
            self.reads += 1
            if self.reads > 5:
                raise OSError("the disk went away")
            return os.urandom(size)

    with pytest.raises(OSError, match="went away"):
        await files.put_stream(client, Failing(), "broken.bin", local_only=True)  # type: ignore[arg-type]
    hosting = await client.Hosting(storage_pb2.HostingRequest())
    assert hosting.shards == 0 and hosting.used_bytes == 0  # the shards of the first segments were deleted
    assert (await client.ListFiles(storage_pb2.ListFilesRequest())).files == []
