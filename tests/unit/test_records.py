"""Signed records and DHT credentials: what is refused, and why."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from avadios.identity import Identity
from avadios.multiaddr import parse
from avadios.records import (
    RecordRefused,
    merge,
    profile_key,
    provider_key,
    sign_credential,
    sign_record,
    validate_credential,
    validate_record,
)
from avadios.v1 import discovery_pb2


def _identity() -> Identity:
    return Identity(SigningKey.generate())


def _profile(node: Identity, price: int = 10) -> bytes:
    return discovery_pb2.CapabilityProfile(
        node_id=node.node_id, public_key=node.public_key, price_micro_autom_per_1k=price
    ).SerializeToString()


def test_a_signed_profile_validates_and_says_who_owns_it() -> None:
    node = _identity()
    checked = validate_record(sign_record(node, profile_key(node.node_id), _profile(node), 1, 60))
    assert checked.owner_id == node.node_id
    assert checked.profile is not None and checked.profile.price_micro_autom_per_1k == 10


def test_a_tampered_payload_is_refused_for_its_signature() -> None:
    node = _identity()
    record = sign_record(node, profile_key(node.node_id), _profile(node), 1, 60)
    record.payload = _profile(node, price=0)
    with pytest.raises(RecordRefused, match="bad signature"):
        validate_record(record)


def test_a_profile_signed_by_another_key_is_refused() -> None:
    victim, attacker = _identity(), _identity()
    record = sign_record(attacker, profile_key(victim.node_id), _profile(victim), 1, 60)
    with pytest.raises(RecordRefused, match="another node"):
        validate_record(record)


def test_a_provider_entry_naming_another_node_is_refused() -> None:
    victim, attacker = _identity(), _identity()
    entry = discovery_pb2.ProviderEntry(node_id=victim.node_id, model="m").SerializeToString()
    with pytest.raises(RecordRefused, match="another node"):
        validate_record(sign_record(attacker, provider_key("m"), entry, 1, 60))


def test_an_expired_record_is_refused() -> None:
    node = _identity()
    record = sign_record(node, profile_key(node.node_id), _profile(node), 1, 60)
    with pytest.raises(RecordRefused, match="expired"):
        validate_record(record, now=time.time() + 120)


def test_merge_keeps_the_newest_record_per_owner_and_refuses_older_ones() -> None:
    a, b = _identity(), _identity()
    key = provider_key("m")

    def entry(node: Identity, seq: int) -> discovery_pb2.SignedRecord:
        payload = discovery_pb2.ProviderEntry(node_id=node.node_id, model="m", price_micro_autom_per_1k=seq)
        return sign_record(node, key, payload.SerializeToString(), seq, 60)

    merged, refused = merge([], [entry(a, 2), entry(b, 1)])
    assert len(merged) == 2 and not refused
    merged, refused = merge(merged, [entry(a, 1)])
    assert any("not newer" in r for r in refused)
    assert {r.seq for r in merged if r.owner_key == a.public_key} == {2}


def test_a_dht_credential_binds_the_id_to_the_key_and_the_address() -> None:
    node, other = _identity(), _identity()
    cred = sign_credential(node, "127.0.0.1", 4002, 60)
    validate_credential(cred, ("127.0.0.1", 4002))
    with pytest.raises(RecordRefused, match="used from"):
        validate_credential(cred, ("127.0.0.1", 4003))
    forged = sign_credential(other, "127.0.0.1", 4002, 60)
    forged.dht_id = cred.dht_id
    with pytest.raises(RecordRefused, match="node id does not match its key"):
        validate_credential(forged, ("127.0.0.1", 4002))


@settings(max_examples=50, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_byte_of_a_signed_record_is_refused(position: int, bit: int) -> None:
    node = Identity(SigningKey(b"\x01" * 32))
    record = sign_record(node, profile_key(node.node_id), _profile(node), 3, 600)
    raw = bytearray(record.SerializeToString())
    raw[position % len(raw)] ^= 1 << bit
    try:
        tampered = discovery_pb2.SignedRecord.FromString(bytes(raw))
    except Exception:
        return  # no longer a record at all
    if tampered == record:
        return  # the flip hit a protobuf encoding detail that decodes to the same record
    with pytest.raises(RecordRefused):
        validate_record(tampered)


def test_multiaddrs_parse_with_and_without_a_pinned_identity() -> None:
    node_id = "ab" * 32
    addr = parse(f"/ip4/127.0.0.1/tcp/4001/p2p/{node_id}")
    assert (addr.host, addr.port, addr.transport, addr.node_id) == ("127.0.0.1", 4001, "tcp", node_id)
    assert str(addr) == f"/ip4/127.0.0.1/tcp/4001/p2p/{node_id}"
    assert parse("/ip4/10.0.0.1/udp/4002").transport == "udp"
    for bad in ("127.0.0.1:4001", "/ip4/localhost/tcp/1", "/ip4/1.2.3.4/tcp/0", "/ip4/1.2.3.4/tcp/1/p2p/xyz"):
        with pytest.raises(ValueError):
            parse(bad)


def test_a_new_namespace_plugs_in_with_one_validator(monkeypatch) -> None:
    from avadios import records

    class JobReceipts:
        prefix = "receipt/"

        def validate(self, record, owner_id):
            if not record.payload.startswith(b"ok"):
                raise records.RecordRefused("a receipt says ok")
            return records.VerifiedRecord(record, owner_id)

    me = Identity(SigningKey.generate())
    record = sign_record(me, "receipt/42", b"ok, paid", seq=1, ttl_s=60)
    with pytest.raises(RecordRefused, match="unknown record namespace"):
        validate_record(record)
    monkeypatch.setitem(records.VALIDATORS, "receipt/", JobReceipts())
    assert validate_record(record).owner_id == me.node_id
    with pytest.raises(RecordRefused, match="a receipt says ok"):
        validate_record(sign_record(me, "receipt/43", b"no", seq=1, ttl_s=60))


def test_a_profile_carries_a_hosters_storage_offer_and_an_impossible_one_is_refused() -> None:
    node = _identity()
    profile = discovery_pb2.CapabilityProfile.FromString(_profile(node))
    profile.storage.free_bytes, profile.storage.price_per_gib_month = 10 << 30, 100_000
    checked = validate_record(sign_record(node, profile_key(node.node_id), profile.SerializeToString(), 1, 60))
    assert checked.profile is not None and checked.profile.storage.free_bytes == 10 << 30
    profile.storage.free_bytes = 1 << 51  # two PiB free: a lie to attract shards
    with pytest.raises(RecordRefused, match="more storage"):
        validate_record(sign_record(node, profile_key(node.node_id), profile.SerializeToString(), 2, 60))
