"""The peer door: two gateways' P2P nodes on 127.0.0.1, each with its node's own NATS. A body a peer sends reaches
the in-node method the registry names for its type, with the sender's verified node id; the owner's reply, or its
refusal, goes back to the sender; the door itself refuses what no service owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from nacl.signing import SigningKey

from avadios.errors import AvadiosError, InvalidArgument
from avadios.identity import Identity
from avadios.multiaddr import parse_tcp
from avadios.peer_registry import PEER_METHODS
from avadios.peering import PeerDoorClient
from avadios.services.gateway.p2p.door import PeerDoor
from avadios.services.gateway.p2p.node import P2PNode
from avadios.transport import NatsChannel, NatsServer, ServerContext, connect
from avadios.v1 import common_pb2, discovery_pb2, ledger_pb2, p2p_pb2
from tests.helpers import NatsProcess

LEDGER = ledger_pb2.DESCRIPTOR.services_by_name["Ledger"]
PEER = p2p_pb2.DESCRIPTOR.services_by_name["Peer"]
DISCOVERY = discovery_pb2.DESCRIPTOR.services_by_name["Discovery"]


class ScriptedLedger:
    """Stands in for the owning service: records who sent what, refuses a frontier page it does not like."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def GetFrontiers(
        self, request: ledger_pb2.LedgerFrontiersRequest, context: ServerContext
    ) -> ledger_pb2.LedgerFrontiersReply:
        self.seen.append((context.peer, request.start))
        if request.limit > 1000:
            raise InvalidArgument("at most 1000 frontiers a page")
        return ledger_pb2.LedgerFrontiersReply(frontiers=[ledger_pb2.LedgerFrontier(account=b"a" * 32, height=7)])


class ScriptedDiscovery:
    """Discovery's peer list, which the door reads to broadcast and to find a bare node id."""

    def __init__(self) -> None:
        self.peers: list[discovery_pb2.PeerInfo] = []

    async def ListPeers(
        self, request: discovery_pb2.ListPeersRequest, context: ServerContext
    ) -> discovery_pb2.ListPeersReply:
        return discovery_pb2.ListPeersReply(peers=self.peers)


async def _no_profile() -> discovery_pb2.SignedRecord:
    return discovery_pb2.SignedRecord()


def _health() -> common_pb2.HealthReply:
    return common_pb2.HealthReply(status=common_pb2.HealthReply.SERVING)


@dataclass
class Gateway:
    nats: NatsProcess
    node: P2PNode
    door: PeerDoor
    servers: list[NatsServer]
    client: PeerDoorClient

    @property
    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.node.port}/p2p/{self.node.node_id}"


async def _gateway(ledger: ScriptedLedger, discovery: ScriptedDiscovery) -> Gateway:
    nats = NatsProcess()
    nats.start()
    nc = await connect(nats.url, "door-test")
    channel = NatsChannel(nc)
    node = P2PNode(Identity(SigningKey.generate()), "127.0.0.1", 0, _no_profile)
    door = PeerDoor(node, channel, _health)
    servers = [
        NatsServer(nc, "gateway", PEER, door),
        NatsServer(nc, "ledger", LEDGER, ledger),
        NatsServer(nc, "discovery", DISCOVERY, discovery),
    ]
    for server in servers:
        await server.start()
    await node.start()
    return Gateway(nats, node, door, servers, PeerDoorClient(channel))


@pytest.fixture
async def two_nodes() -> AsyncIterator[tuple[Gateway, Gateway, ScriptedLedger, ScriptedDiscovery]]:
    ledger_b, discovery_a = ScriptedLedger(), ScriptedDiscovery()
    a = await _gateway(ScriptedLedger(), discovery_a)
    b = await _gateway(ledger_b, ScriptedDiscovery())
    yield a, b, ledger_b, discovery_a
    for gateway in (a, b):
        await gateway.node.stop()
        for server in gateway.servers:
            await server.stop()
        gateway.nats.stop()


async def test_a_registered_body_reaches_its_owner_with_the_verified_sender(two_nodes) -> None:
    a, b, ledger_b, _ = two_nodes
    request = ledger_pb2.LedgerFrontiersRequest(start=b"s" * 32, limit=10)
    reply = await a.client.send(b.multiaddr, request, ledger_pb2.LedgerFrontiersReply)
    assert [f.height for f in reply.frontiers] == [7]
    assert ledger_b.seen == [(a.node.node_id, b"s" * 32)]  # the owner learns who sent it, as the envelope proved


async def test_the_owners_refusal_reaches_the_sending_peer_as_a_status(two_nodes) -> None:
    a, b, _, _ = two_nodes
    with pytest.raises(AvadiosError, match="at most 1000 frontiers") as info:
        await a.client.send(b.multiaddr, ledger_pb2.LedgerFrontiersRequest(limit=5000), ledger_pb2.LedgerFrontiersReply)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_type_no_service_owns_is_refused_before_it_leaves_and_at_the_peer(two_nodes) -> None:
    a, b, _, _ = two_nodes
    with pytest.raises(AvadiosError, match="no peer method is registered") as refused:
        await a.client.send(b.multiaddr, discovery_pb2.RecordSet(), discovery_pb2.RecordSet)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # a peer that sends one anyway, bypassing its own door, gets UNIMPLEMENTED
    with pytest.raises(AvadiosError, match="unknown message type") as info:
        await a.node.request(parse_tcp(b.multiaddr), discovery_pb2.RecordSet(), discovery_pb2.RecordSet)
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED


async def test_a_bare_node_id_is_found_through_discovery_and_broadcast_reaches_every_peer(two_nodes) -> None:
    a, b, ledger_b, discovery_a = two_nodes
    with pytest.raises(AvadiosError, match="no known P2P address") as unknown:
        await a.client.send(b.node.node_id, ledger_pb2.LedgerFrontiersRequest(), ledger_pb2.LedgerFrontiersReply)
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    discovery_a.peers.append(
        discovery_pb2.PeerInfo(node_id=b.node.node_id, addresses=["/ip4/127.0.0.1/udp/1", b.multiaddr])
    )
    a.door._peers_at = 0.0  # the peer list is cached for 2 s; this test does not wait for it
    reply = await a.client.send(b.node.node_id, ledger_pb2.LedgerFrontiersRequest(), ledger_pb2.LedgerFrontiersReply)
    assert reply.frontiers[0].height == 7
    assert await a.client.peers() == [b.multiaddr]
    result = await a.client.broadcast(ledger_pb2.LedgerFrontiersRequest(limit=1))
    assert (result.peers, result.delivered, list(result.failures)) == (1, 1, [])
    assert len(ledger_b.seen) == 2


def test_every_registered_type_is_the_input_of_its_method() -> None:
    assert PEER_METHODS, "the registry is empty"
    for body_type, entry in PEER_METHODS.items():
        assert entry.method.input_type.full_name == body_type
        assert entry.service and entry.reply_type
