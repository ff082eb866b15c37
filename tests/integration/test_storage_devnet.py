"""Files on a devnet of real nodes (NATS, every service, P2P over TLS on 127.0.0.1): an owner spreads a file's
shards over five hosters through the peer door, reads it back with hosters dead, catches a rotted shard and a
hoster that deleted its shards by audit, repairs to full redundancy, and names what is missing when too much is.

One devnet of six nodes serves every test here, in order: node 1 owns the files (its own quota is tiny: it
refuses shards), nodes 2-6 host them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from avadios import devnet
from avadios.errors import RpcError
from avadios.peering import PeerDoorClient
from avadios.transport import NatsChannel, connect
from avadios.v1 import storage_pb2
from tests.helpers import AVADIOS, cli_json, eventually

pytestmark = pytest.mark.slow
K, N = 3, 5
FAST = {
    "ping_interval_s": 1.0,
    "dht_rpc_timeout_s": 1.0,
    "dead_after_failures": 3,
    "profile_ttl_s": 20.0,  # re-published every 10 s: a hoster's storage offer spreads quickly
    "storage_k": K,
    "storage_n": N,
    "storage_audit_interval_s": 0.0,  # the tests audit by hand
    "wallet_auto_receive_s": 0.0,  # hosters' earnings stay pending, where the test counts them
    "storage_term_s": 300.0,  # the owner holds one 5-minute term at upload ...
    "storage_settle_after_s": 0.0,  # ... and settles it at its first audit
    # a test price (micro-AUTOM per GiB-month) high enough that a 5-minute term of ~230 kB is ~10,000 micro-AUTOM
    "storage_price_per_gib_month": 10**12,
}
OWNER_QUOTA = 4096
MARKER = b"Quarterly plan, secret codeword ALBATROSS-93. "
CONTENT = MARKER * 15_000 + os.urandom(1000)  # ~700 KiB: 3 segments of 256 KiB


@dataclass
class Net:
    directory: Path
    nodes: list[devnet.DevnetNode]

    def node(self, index: int) -> devnet.DevnetNode:
        return self.nodes[index - 1]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    directory = tmp_path_factory.mktemp("storagenet")
    from avadios.testing.tiny_gguf import write_tiny_gguf

    model = write_tiny_gguf(directory / "devnet-tiny.gguf")
    nodes: list[devnet.DevnetNode] = []
    for index in range(1, 7):
        bootstrap = [nodes[-1].multiaddr] if nodes else []
        extra = {"storage_quota_bytes": OWNER_QUOTA} if index == 1 else {}
        nodes.append(devnet.create_node(directory, index, model, bootstrap, {**FAST, **extra}))
    devnet.write_genesis(directory, nodes)
    try:
        for node in nodes:
            devnet.start(node)
        devnet.wait_healthy(nodes, timeout=240)
        yield Net(directory, nodes)
    finally:
        for node in nodes:
            devnet.stop(node)


def api(node: devnet.DevnetNode, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, node.api_url + path, timeout=120.0, **kwargs)


def shard_dir(node: devnet.DevnetNode) -> Path:
    return Path(node.home) / "storage" / "shards"


def raw_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def hosting(node: devnet.DevnetNode) -> dict[str, int]:
    body: dict[str, int] = api(node, "GET", "/api/hosting").json()
    return body


def hosters_offering(owner: devnet.DevnetNode) -> int:
    peers = api(owner, "GET", "/api/peers").json()["peers"]
    return sum(1 for p in peers if p["storage_free_bytes"] and p["failures"] == 0)


@pytest.fixture(scope="module")
def stored(net: Net) -> dict[str, Any]:
    owner = net.node(1)
    eventually(lambda: hosters_offering(owner) >= 5, 120, "5 hosters offering storage in their signed profiles")
    reply = api(owner, "POST", "/api/files", files={"file": ("plan.txt", CONTENT)}, data={"k": "3", "n": "5"})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_a_put_spreads_every_segment_over_five_distinct_hosters_that_hold_no_plaintext(
    net: Net, stored: dict[str, Any]
) -> None:
    assert stored["cap"].startswith("avadios:file:1:") and stored["name"] == "plan.txt"
    assert (stored["size"], stored["segments"], stored["shards"], stored["hosters"]) == (len(CONTENT), 3, 15, 5)
    listed = api(net.node(1), "GET", "/api/files").json()["files"]
    assert [(f["cap"], f["health"], f["hosters_alive"]) for f in listed] == [(stored["cap"], "healthy", 5)]
    for index in range(2, 7):  # one shard of each segment on each hoster
        assert hosting(net.node(index))["shards"] == 3
        raw = raw_bytes(shard_dir(net.node(index)))
        assert len(raw) > 100_000 and b"ALBATROSS" not in raw and b"Quarterly plan" not in raw
    assert hosting(net.node(1))["shards"] == 0  # the owner keeps no shard of its own file
    got = api(net.node(1), "GET", f"/api/files/{stored['cap']}")
    assert got.status_code == 200 and got.content == CONTENT
    assert "plan.txt" in got.headers["content-disposition"]
    # each hoster's /metrics counts its shards (heartbeats lag by up to a second); a get fetched k per segment
    eventually(lambda: all(counter(net.node(i), "shards_stored") == 3 for i in range(2, 7)), 10, "metrics")
    eventually(lambda: sum(counter(net.node(i), "shards_served") for i in range(2, 7)) == 3 * K, 10, "served")


def counter(node: devnet.DevnetNode, name: str) -> float:
    prefix = f'avadios_service_counter_total{{service="storage",replica="0",name="{name}"}} '
    lines = [line for line in api(node, "GET", "/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else -1.0


def test_another_node_holding_the_read_cap_reads_the_file_through_its_owner(net: Net, stored: dict[str, Any]) -> None:
    reader = net.node(3)
    got = api(reader, "GET", f"/api/files/{stored['cap']}")
    assert got.status_code == 200 and got.content == CONTENT
    assert api(reader, "GET", "/api/files").json()["files"] == []  # it read the file; it does not own it
    wrong = api(reader, "GET", f"/api/files/{stored['cap'][:-4]}aaaa")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "bad_capability"


def wallet(node: devnet.DevnetNode) -> dict[str, int]:
    body = api(node, "GET", "/api/wallet").json()
    return {k: int(body[k]) for k in ("spendable", "held", "pending")}


def test_hosters_are_paid_their_term_as_audits_pass_and_no_autom_is_created_or_lost(
    net: Net, stored: dict[str, Any]
) -> None:
    owner = net.node(1)
    hosters = [net.node(i) for i in range(2, 7)]
    before = wallet(owner)
    earned_before = [wallet(h)["pending"] for h in hosters]
    record = api(owner, "GET", "/api/files").json()["files"][0]
    assert record["held_micro"] > 5 * 5000 and record["paid_micro"] == 0
    assert before["held"] >= record["held_micro"]  # held at upload, out of the owner's spendable balance
    health = api(owner, "GET", f"/api/files/{stored['cap']}/health").json()  # every audit passes: all paid
    assert health["health"] == "healthy"

    def settled() -> bool:  # the SETTLE reaches each hoster's own ledger replica
        return all(wallet(h)["pending"] > e for h, e in zip(hosters, earned_before, strict=True))

    eventually(settled, 30, "the hosters' payments")
    after = wallet(owner)
    earned = [wallet(h)["pending"] - e for h, e in zip(hosters, earned_before, strict=True)]
    paid = api(owner, "GET", "/api/files").json()["files"][0]["paid_micro"]
    assert all(e > 0 for e in earned) and sum(earned) == paid == record["held_micro"]
    loss = (before["spendable"] + before["held"]) - (after["spendable"] + after["held"])
    assert loss == sum(earned)  # conserved: the owner lost exactly what the hosters earned


def test_a_rotted_shard_is_caught_by_the_audit_and_repair_restores_full_redundancy(
    net: Net, stored: dict[str, Any]
) -> None:
    victim = sorted(shard_dir(net.node(2)).rglob("*.shard"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0x01
    victim.write_bytes(bytes(data))
    health = api(net.node(1), "GET", f"/api/files/{stored['cap']}/health").json()
    assert health["health"] == "degraded" and sorted(health["healthy_per_segment"]) == [4, 5, 5]
    bad = [h for h in health["hosters"] if h["failed"]]
    assert [h["node_id"] for h in bad] == [net.node(2).node_id] and "rotted" in bad[0]["error"]
    # the owner's check with repair (what its background audit does) rebuilds the shard on another hoster
    repaired = asyncio.run(check(net.node(1), stored["cap"], repair=True))
    assert repaired.shards_repaired == 1 and repaired.file.health == "healthy"
    again = api(net.node(1), "GET", f"/api/files/{stored['cap']}/health").json()
    assert again["health"] == "healthy" and again["healthy_per_segment"] == [5, 5, 5]


async def check(node: devnet.DevnetNode, cap: str, repair: bool) -> storage_pb2.CheckFileReply:
    from avadios.v1.storage_nats import StorageClient

    nc = await connect(f"nats://127.0.0.1:{node.nats_port}", "test")
    try:
        return await StorageClient(NatsChannel(nc)).CheckFile(
            storage_pb2.CheckFileRequest(cap=cap, repair=repair), timeout=120.0
        )
    finally:
        await nc.close()


def test_with_n_minus_k_hosters_dead_the_file_reads_back_and_with_more_the_error_names_what_is_missing(
    net: Net, stored: dict[str, Any]
) -> None:
    owner = net.node(1)
    for index in (5, 6):
        devnet.stop(net.node(index), kill=True)
    got = api(owner, "GET", f"/api/files/{stored['cap']}")
    assert got.status_code == 200 and got.content == CONTENT
    devnet.stop(net.node(4), kill=True)
    refused = api(owner, "GET", f"/api/files/{stored['cap']}")
    assert refused.status_code == 503, refused.text
    message = refused.json()["error"]["message"]
    assert "segments 0, 1, 2" in message or "segment" in message
    for index in (4, 5, 6):
        assert net.node(index).node_id[:16] in message
    assert refused.json()["error"]["code"] == "segments_missing"
    devnet.start(net.node(4))  # the file reads again once enough hosters are back
    devnet.wait_healthy([net.node(4)], timeout=120)
    eventually(lambda: api(owner, "GET", f"/api/files/{stored['cap']}").content == CONTENT, 60, "the file back")


def test_a_hoster_that_deleted_its_shards_fails_its_audit(net: Net, stored: dict[str, Any]) -> None:
    hoster = net.node(3)
    before = {p["node_id"]: p for p in api(net.node(1), "GET", "/api/peers").json()["peers"]}[hoster.node_id]
    for path in shard_dir(hoster).rglob("*.shard"):
        path.unlink()
    health = api(net.node(1), "GET", f"/api/files/{stored['cap']}/health").json()
    entry = next(h for h in health["hosters"] if h["node_id"] == hoster.node_id)
    assert entry["failed"] == entry["shards"] >= 1 and entry["passed"] == 0
    assert "holds no shard" in entry["error"]
    # and it loses reliability on the owner's node, so placement ranks it last from now on
    peers = {p["node_id"]: p for p in api(net.node(1), "GET", "/api/peers").json()["peers"]}
    assert "storage audit" in peers[hoster.node_id]["last_rejection"]
    assert peers[hoster.node_id]["reliability"] <= before["reliability"] / 2


def test_a_hoster_over_its_quota_refuses_a_shard_politely_through_the_door(net: Net) -> None:
    async def offer() -> None:
        nc = await connect(f"nats://127.0.0.1:{net.node(2).nats_port}", "test")
        try:
            data = os.urandom(OWNER_QUOTA + 1)
            import blake3

            body = storage_pb2.ShardStore(hash=blake3.blake3(data).digest(), data=data)
            await PeerDoorClient(NatsChannel(nc)).send(net.node(1).node_id, body, storage_pb2.StoreShardReply)
        finally:
            await nc.close()

    with pytest.raises(RpcError, match="quota") as refused:
        asyncio.run(offer())
    assert refused.value.code.name == "RESOURCE_EXHAUSTED"
    assert hosting(net.node(1))["shards"] == 0 and hosting(net.node(1))["refused_over_quota"] == 1


def test_the_files_commands_put_get_list_check_and_remove_a_file(net: Net, tmp_path: Path) -> None:
    home = net.node(1).home
    source = tmp_path / "report.bin"
    source.write_bytes(os.urandom(300_000))
    put = cli_json("files", "put", str(source), "--k", "2", "--n", "3", "--home", home)
    assert put["name"] == "report.bin" and put["size"] == 300_000 and put["k"] == 2 and put["n"] == 3
    out = tmp_path / "out"
    out.mkdir()
    got = cli_json("files", "get", put["cap"], "-o", str(out / "copy.bin"), "--home", home)
    assert got["size"] == 300_000 and (out / "copy.bin").read_bytes() == source.read_bytes()
    listed = {f["name"]: f for f in cli_json("files", "ls", "--home", home)["files"]}
    assert listed["report.bin"]["cap"] == put["cap"] and listed["report.bin"]["shards"] == 6
    checked = cli_json("files", "check", put["cap"], "--home", home)
    assert checked["health"] == "healthy" and checked["healthy_per_segment"] == [3, 3]
    hosted = cli_json("hosting", "--home", net.node(2).home)
    assert hosted["shards"] >= 1 and hosted["audits_passed"] >= 1 and hosted["quota_bytes"] == 10 << 30
    # a capability cut short: a clear error, and nothing written where the file would have gone
    bad = subprocess.run([AVADIOS, "files", "get", put["cap"][:-3], "-o", str(out / "bad.bin"), "--home", home],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "cut or altered" in bad.stderr
    assert sorted(p.name for p in out.iterdir()) == ["copy.bin"]
    removed = cli_json("files", "rm", put["cap"], "--home", home)
    assert removed["shards_deleted"] == 6
    assert "report.bin" not in {f["name"] for f in cli_json("files", "ls", "--home", home)["files"]}
