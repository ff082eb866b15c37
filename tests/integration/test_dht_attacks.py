"""Attacks on a live DHT (real UDP sockets on 127.0.0.1): each is refused and the good record kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from kademlia.node import Node
from nacl.signing import SigningKey

from avadios.identity import Identity
from avadios.records import dht_key, profile_key, provider_key, sign_credential, sign_record
from avadios.services.discovery.dht import DhtNode
from avadios.v1 import discovery_pb2


def _profile(node: Identity, price: int) -> bytes:
    return discovery_pb2.CapabilityProfile(
        node_id=node.node_id, public_key=node.public_key, price_micro_autom_per_1k=price
    ).SerializeToString()


@pytest.fixture
async def mesh() -> AsyncIterator[list[DhtNode]]:
    nodes = [DhtNode(Identity(SigningKey.generate()), "127.0.0.1", 0, rpc_timeout_s=1.0) for _ in range(6)]
    for node in nodes:
        await node.listen()
    for i, node in enumerate(nodes[1:], 1):
        await node.bootstrap([("127.0.0.1", nodes[i - 1].port)])
    yield nodes
    for node in nodes:
        node.stop()


async def _publish_honest(mesh: list[DhtNode]) -> tuple[DhtNode, discovery_pb2.SignedRecord]:
    honest = mesh[0]
    key = profile_key(honest.identity.node_id)
    await honest.put(sign_record(honest.identity, key, _profile(honest.identity, 100), 1, 600))
    good = sign_record(honest.identity, key, _profile(honest.identity, 200), 2, 600)
    assert await honest.put(good) > 0
    return honest, good


async def _store_everywhere(attacker: DhtNode, mesh: list[DhtNode], record: discovery_pb2.SignedRecord) -> list[dict]:
    value = discovery_pb2.RecordSet(records=[record]).SerializeToString()
    replies = []
    for node in mesh[1:]:
        reply = await attacker.proto._call(("127.0.0.1", node.port), None, "store", dht_key(record.key), value)
        assert reply is not None
        replies.append(reply)
    return replies


async def _assert_good_record_kept(mesh: list[DhtNode], good: discovery_pb2.SignedRecord) -> None:
    for reader in mesh[1:]:
        found = await reader.get(good.key)
        assert [r.SerializeToString() for r in found.records] == [good.SerializeToString()]


@pytest.fixture
async def attacker() -> AsyncIterator[DhtNode]:
    node = DhtNode(Identity(SigningKey.generate()), "127.0.0.1", 0, rpc_timeout_s=1.0)
    await node.listen()
    yield node
    node.stop()


async def test_a_forged_profile_store_is_refused_and_the_good_profile_kept(mesh, attacker) -> None:
    _, good = await _publish_honest(mesh)
    forged = discovery_pb2.SignedRecord()
    forged.CopyFrom(good)
    forged.seq = 99
    forged.payload = discovery_pb2.CapabilityProfile.FromString(good.payload).SerializeToString() + b"\x30\x00"
    replies = await _store_everywhere(attacker, mesh, forged)
    assert all(not r["ok"] and "bad signature" in r["refused"][0] for r in replies)
    await _assert_good_record_kept(mesh, good)


async def test_a_replayed_older_profile_is_refused_and_the_newer_kept(mesh, attacker) -> None:
    honest, good = await _publish_honest(mesh)
    old = sign_record(honest.identity, good.key, _profile(honest.identity, 1), 1, 600)
    replies = await _store_everywhere(attacker, mesh, old)
    assert any("not newer" in reason for r in replies for reason in r["refused"])
    assert not any(r["ok"] for r in replies)
    await _assert_good_record_kept(mesh, good)


async def test_a_record_signed_by_another_key_is_refused(mesh, attacker) -> None:
    honest, good = await _publish_honest(mesh)
    stolen = sign_record(attacker.identity, good.key, _profile(honest.identity, 0), 50, 600)
    replies = await _store_everywhere(attacker, mesh, stolen)
    assert all(not r["ok"] and "another node" in r["refused"][0] for r in replies)
    entry = discovery_pb2.ProviderEntry(node_id=honest.identity.node_id, model="m").SerializeToString()
    replies = await _store_everywhere(attacker, mesh, sign_record(attacker.identity, provider_key("m"), entry, 1, 600))
    assert all(not r["ok"] for r in replies)
    await _assert_good_record_kept(mesh, good)


async def test_a_node_id_that_does_not_match_its_key_never_enters_a_routing_table(mesh, attacker) -> None:
    victim = mesh[0]
    forged = sign_credential(attacker.identity, "127.0.0.1", attacker.port, 600)
    forged.dht_id = victim.node.id  # claim the victim's id with the attacker's key
    forged.signature = attacker.identity.sign(b"irrelevant")
    target = mesh[3]
    result = await attacker.proto.ping(("127.0.0.1", target.port), forged.SerializeToString())
    assert result[0] and "node id does not match its key" in result[1]["error"]
    assert all(c.port != attacker.port for c in target.contacts())
    assert target.proto.refused["node id does not match its key"] >= 1


async def test_a_lookup_refuses_forged_values_a_malicious_node_returns(mesh, attacker) -> None:
    _, good = await _publish_honest(mesh)
    await attacker.bootstrap([("127.0.0.1", mesh[2].port)])
    # The attacker serves a forged copy straight from its own storage, bypassing validation.
    forged = discovery_pb2.SignedRecord()
    forged.CopyFrom(good)
    forged.seq = 1000
    attacker.storage._sets[dht_key(good.key)] = [forged]
    reader = mesh[4]
    asked = await reader.proto.call_find_value(
        Node(attacker.node.id, "127.0.0.1", attacker.port), Node(dht_key(good.key))
    )
    assert asked[0] and not isinstance(asked[1], dict)  # answered, but no value survived validation
    assert reader.proto.refused[f"bad signature on record {good.key!r}"] == 1
    await _assert_good_record_kept(mesh, good)


async def test_routing_table_and_records_survive_a_restart(mesh, tmp_path) -> None:
    _, good = await _publish_honest(mesh)
    node = mesh[2]
    node.save(tmp_path / "state.pb")
    port, ident = node.port, node.identity
    node.stop()
    await asyncio.sleep(0.05)  # the UDP socket closes on the next loop turn
    again = DhtNode(ident, "127.0.0.1", port, rpc_timeout_s=1.0)
    saved = again.load(tmp_path / "state.pb")
    await again.listen()
    try:
        assert [r.seq for r in again.storage.records(dht_key(good.key))] == [2]
        assert len(saved) >= 3
        await again.bootstrap(saved)  # saved contacts re-enter only by answering with valid credentials
        assert {c.port for c in again.contacts()} >= {n.port for n in mesh if n is not node}
    finally:
        again.stop()
