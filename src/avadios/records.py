"""Signed, versioned, expiring records that other nodes store: signed on store, validated at every door.

A record is valid when its Ed25519 signature covers (domain tag, key, owner key, seq, expiry, BLAKE3 of the
payload), it has not expired, it does not expire absurdly far ahead, its key belongs to its owner
(profile/<node id of the owner>) or, for provider sets, its entry names its owner, and it fits the size limit.
Validators raise `RecordRefused` (a ValueError) with a reason a person can read. As in hivemind's DHT
validators, a record is checked both when a peer asks us to store it and when a lookup returns it, so a value
another node handed over is never used unchecked.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Protocol

import blake3
from google.protobuf.message import DecodeError

from avadios.identity import Identity, node_id_for, verify
from avadios.v1 import discovery_pb2

RECORD_DOMAIN = b"avadios/record/v1\x00"
CREDENTIAL_DOMAIN = b"avadios/dht-node/v1\x00"
PROFILE_PREFIX = "profile/"
MAX_OFFERED_STORAGE_BYTES = 1 << 50  # a profile claiming more free space than this is a lie, not a big disk
PROVIDER_PREFIX = "provider/"
MAX_RECORD_BYTES = 3072  # a provider set of 20 must fit one DHT datagram next to its envelope
MAX_TTL_S = 24 * 3600
MAX_PROVIDERS = 20
DHT_ID_BYTES = 20


class RecordRefused(ValueError):
    """A record that must not be stored or believed; the message says why."""


def profile_key(node_id: str) -> str:
    return PROFILE_PREFIX + node_id


def provider_key(model: str) -> str:
    return PROVIDER_PREFIX + model


def dht_key(key: str) -> bytes:
    """The 160-bit Kademlia key of a record key."""
    return blake3.blake3(key.encode()).digest()[:DHT_ID_BYTES]


def dht_id_for(public_key: bytes) -> bytes:
    """A node's DHT id comes from its key (never chosen by the node): the first 160 bits of BLAKE3(key)."""
    return blake3.blake3(public_key).digest()[:DHT_ID_BYTES]


def _signed_bytes(record: discovery_pb2.SignedRecord) -> bytes:
    key = record.key.encode()
    return b"".join(
        (
            RECORD_DOMAIN,
            struct.pack(">H", len(key)),
            key,
            record.owner_key,
            struct.pack(">Qq", record.seq, record.expires_unix),
            blake3.blake3(record.payload).digest(),
        )
    )


def sign_record(identity: Identity, key: str, payload: bytes, seq: int, ttl_s: float) -> discovery_pb2.SignedRecord:
    record = discovery_pb2.SignedRecord(
        key=key,
        owner_key=identity.public_key,
        seq=seq,
        expires_unix=int(time.time() + ttl_s),
        payload=payload,
    )
    record.signature = identity.sign(_signed_bytes(record))
    return record


@dataclass(frozen=True, slots=True)
class VerifiedRecord:
    """A record that passed validation, with what its payload says."""

    record: discovery_pb2.SignedRecord
    owner_id: str
    profile: discovery_pb2.CapabilityProfile | None = None
    provider: discovery_pb2.ProviderEntry | None = None


class NamespaceValidator(Protocol):
    """What one record namespace ("profile/", "provider/", …) adds to the checks every record passes: its key
    and payload rules. A new kind of record registers one of these; nothing else here changes."""

    prefix: str

    def validate(self, record: discovery_pb2.SignedRecord, owner_id: str) -> VerifiedRecord: ...


class ProfileValidator:
    """profile/<node id>: a node's own capability profile, signed by that node."""

    prefix = PROFILE_PREFIX

    def validate(self, record: discovery_pb2.SignedRecord, owner_id: str) -> VerifiedRecord:
        if record.key != profile_key(owner_id):
            raise RecordRefused(f"record {record.key!r} belongs to another node than its signer {owner_id[:16]}…")
        try:
            profile = discovery_pb2.CapabilityProfile.FromString(record.payload)
        except DecodeError:
            raise RecordRefused("profile payload is not a CapabilityProfile") from None
        if profile.node_id != owner_id or profile.public_key != record.owner_key:
            raise RecordRefused("profile names another node than its signer")
        if profile.HasField("storage") and profile.storage.free_bytes > MAX_OFFERED_STORAGE_BYTES:
            raise RecordRefused("profile offers more storage than any node has (over 1 PiB)")
        return VerifiedRecord(record, owner_id, profile=profile)


class ProviderValidator:
    """provider/<model>: one signed entry per provider of a model, each naming its signer."""

    prefix = PROVIDER_PREFIX

    def validate(self, record: discovery_pb2.SignedRecord, owner_id: str) -> VerifiedRecord:
        try:
            entry = discovery_pb2.ProviderEntry.FromString(record.payload)
        except DecodeError:
            raise RecordRefused("provider payload is not a ProviderEntry") from None
        if entry.node_id != owner_id:
            raise RecordRefused("provider entry names another node than its signer")
        if provider_key(entry.model) != record.key:
            raise RecordRefused(f"provider entry for {entry.model!r} stored under {record.key!r}")
        return VerifiedRecord(record, owner_id, provider=entry)


# One validator per record namespace, by the prefix its keys start with.
VALIDATORS: dict[str, NamespaceValidator] = {v.prefix: v for v in (ProfileValidator(), ProviderValidator())}


def validate_record(record: discovery_pb2.SignedRecord, now: float | None = None) -> VerifiedRecord:
    """Return what the record says, or raise RecordRefused with the reason: first what every record must pass
    (size, signature, expiry), then its namespace's own rules."""
    now = time.time() if now is None else now
    size = record.ByteSize()
    if size > MAX_RECORD_BYTES:
        raise RecordRefused(f"record of {size} bytes is over the {MAX_RECORD_BYTES} byte limit")
    if len(record.owner_key) != 32 or len(record.signature) != 64:
        raise RecordRefused("record has no valid owner key or signature")
    if not verify(record.owner_key, _signed_bytes(record), record.signature):
        raise RecordRefused(f"bad signature on record {record.key!r}")
    if record.expires_unix <= now:
        raise RecordRefused(f"record {record.key!r} expired {int(now - record.expires_unix)} s ago")
    if record.expires_unix > now + MAX_TTL_S:
        raise RecordRefused(f"record {record.key!r} expires more than {MAX_TTL_S} s ahead")
    namespace, slash, _ = record.key.partition("/")
    validator = VALIDATORS.get(namespace + slash)
    if validator is None:
        raise RecordRefused(f"unknown record namespace in key {record.key!r}")
    return validator.validate(record, node_id_for(record.owner_key))


def newer(candidate: discovery_pb2.SignedRecord, current: discovery_pb2.SignedRecord | None) -> bool:
    """Whether a valid `candidate` may replace `current` (same key, same owner): only a higher seq does."""
    return current is None or candidate.seq > current.seq


def merge(
    current: list[discovery_pb2.SignedRecord], incoming: list[discovery_pb2.SignedRecord], now: float | None = None
) -> tuple[list[discovery_pb2.SignedRecord], list[str]]:
    """Merge valid records of one key: one per owner, the highest seq wins, at most MAX_PROVIDERS (those that
    expire last). Returns the merged list and the reasons for every incoming record that was refused."""
    now = time.time() if now is None else now
    by_owner: dict[bytes, discovery_pb2.SignedRecord] = {}
    for record in current:
        if record.expires_unix > now:
            by_owner[record.owner_key] = record
    refused: list[str] = []
    for record in incoming:
        try:
            validate_record(record, now)
        except RecordRefused as exc:
            refused.append(str(exc))
            continue
        existing = by_owner.get(record.owner_key)
        if existing is not None and record.seq == existing.seq and record.signature == existing.signature:
            continue
        if not newer(record, existing):
            assert existing is not None
            refused.append(f"record {record.key!r} has seq {record.seq}, not newer than the stored {existing.seq}")
            continue
        by_owner[record.owner_key] = record
    kept = sorted(by_owner.values(), key=lambda r: -r.expires_unix)[:MAX_PROVIDERS]
    return kept, refused


# ---- DHT contact credentials ------------------------------------------------------------------------------


def _credential_bytes(cred: discovery_pb2.NodeCredential) -> bytes:
    host = cred.host.encode()
    return b"".join(
        (
            CREDENTIAL_DOMAIN,
            cred.dht_id,
            cred.public_key,
            struct.pack(">H", len(host)),
            host,
            struct.pack(">Hq", cred.port, cred.expires_unix),
        )
    )


def sign_credential(identity: Identity, host: str, port: int, ttl_s: float) -> discovery_pb2.NodeCredential:
    cred = discovery_pb2.NodeCredential(
        dht_id=dht_id_for(identity.public_key),
        public_key=identity.public_key,
        host=host,
        port=port,
        expires_unix=int(time.time() + ttl_s),
    )
    cred.signature = identity.sign(_credential_bytes(cred))
    return cred


def validate_credential(
    cred: discovery_pb2.NodeCredential, address: tuple[str, int] | None, now: float | None = None
) -> None:
    """A contact is believed only when its DHT id is derived from its key, the key signed the credential,
    the credential is current and (when we know where the datagram came from) names that address."""
    now = time.time() if now is None else now
    if len(cred.public_key) != 32 or len(cred.signature) != 64:
        raise RecordRefused("credential has no valid key or signature")
    if cred.dht_id != dht_id_for(cred.public_key):
        raise RecordRefused("node id does not match its key")
    if not verify(cred.public_key, _credential_bytes(cred), cred.signature):
        raise RecordRefused("bad signature on node credential")
    if cred.expires_unix <= now:
        raise RecordRefused("node credential expired")
    if cred.expires_unix > now + MAX_TTL_S:
        raise RecordRefused("node credential expires too far ahead")
    if address is not None and (cred.host, cred.port) != (address[0], address[1]):
        raise RecordRefused(f"credential for {cred.host}:{cred.port} used from {address[0]}:{address[1]}")
