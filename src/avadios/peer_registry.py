"""The peer door's registry: which in-node method of which service owns each P2P body type.

A peer's envelope names its body's message type. The gateway checks the envelope and nothing else, then
forwards the body, with the sender's verified node id, to the method registered here for that type; the
owning service checks the body and its reply goes back to the peer. A service that adds peer traffic adds
its messages to its proto and one line below; the gateway's code does not change.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import MethodDescriptor

from avadios.v1 import jobs_pb2, ledger_pb2, storage_pb2


@dataclass(frozen=True, slots=True)
class PeerMethod:
    """An in-node method that serves one P2P body type: its request type is the body, its reply type the reply."""

    service: str  # the in-node service name, e.g. "ledger" (subject avadios.ledger.<Method>)
    method: MethodDescriptor

    @property
    def body_type(self) -> str:
        return self.method.input_type.full_name

    @property
    def reply_type(self) -> str:
        return self.method.output_type.full_name


def _registry(*entries: PeerMethod) -> dict[str, PeerMethod]:
    return {entry.body_type: entry for entry in entries}


_LEDGER = ledger_pb2.DESCRIPTOR.services_by_name["Ledger"].methods_by_name
_VERIFIER = jobs_pb2.DESCRIPTOR.services_by_name["Verifier"].methods_by_name
_STORAGE = storage_pb2.DESCRIPTOR.services_by_name["Storage"].methods_by_name

# One line per P2P body type: the in-node service that owns it and its method.
PEER_METHODS: dict[str, PeerMethod] = _registry(
    PeerMethod("ledger", _LEDGER["GossipBatch"]),
    PeerMethod("ledger", _LEDGER["GetFrontiers"]),
    PeerMethod("ledger", _LEDGER["GetChain"]),
    PeerMethod("verifier", _VERIFIER["Serve"]),
    PeerMethod("verifier", _VERIFIER["ScoreResults"]),
    PeerMethod("storage", _STORAGE["StoreShard"]),
    PeerMethod("storage", _STORAGE["FetchShard"]),
    PeerMethod("storage", _STORAGE["AuditShard"]),
    PeerMethod("storage", _STORAGE["DeleteShard"]),
    PeerMethod("storage", _STORAGE["LocateFile"]),
)


def reply_type_for(body_type: str) -> str:
    """The reply type a peer answers a `body_type` request with ("" for types the door does not forward)."""
    entry = PEER_METHODS.get(body_type)
    return entry.reply_type if entry is not None else ""
