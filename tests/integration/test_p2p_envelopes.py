"""The P2P link (TLS gRPC on 127.0.0.1): refused envelopes get a clear status; honest traffic keeps working."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from nacl.signing import SigningKey

from avadios.errors import AvadiosError
from avadios.identity import Identity
from avadios.multiaddr import Multiaddr
from avadios.services.gateway.p2p.envelope import _signed_bytes, seal
from avadios.services.gateway.p2p.node import P2PNode
from avadios.v1 import discovery_pb2, p2p_pb2

MAX_BODY = 64 * 1024


async def _no_profile() -> discovery_pb2.SignedRecord:
    return discovery_pb2.SignedRecord()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[P2PNode, P2PNode]]:
    server = P2PNode(Identity(SigningKey.generate()), "127.0.0.1", 0, _no_profile, max_body=MAX_BODY)
    client = P2PNode(Identity(SigningKey.generate()), "127.0.0.1", 0, _no_profile, max_body=MAX_BODY)
    await server.start()
    await client.start()
    yield server, client
    await client.stop()
    await server.stop()


async def _send(client: P2PNode, server: P2PNode, env: p2p_pb2.Envelope) -> grpc.aio.AioRpcError:
    link = await client.link(Multiaddr("127.0.0.1", server.port))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await link.stub.Call(env, timeout=5)
    return info.value


async def _honest_ping_works(client: P2PNode, server: P2PNode) -> None:
    reply, node_id, rtt = await client.request(
        Multiaddr("127.0.0.1", server.port, node_id=server.node_id), p2p_pb2.PingRequest(), p2p_pb2.PingReply
    )
    assert node_id == server.node_id == reply.node_id and rtt > 0


async def test_a_replayed_envelope_is_refused(pair) -> None:
    server, client = pair
    env = seal(client.identity, server.node_id, p2p_pb2.PingRequest())
    link = await client.link(Multiaddr("127.0.0.1", server.port))
    await link.stub.Call(env, timeout=5)
    err = await _send(client, server, env)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and "replayed" in err.details()
    await _honest_ping_works(client, server)


async def test_a_tampered_body_is_refused(pair) -> None:
    server, client = pair
    env = seal(client.identity, server.node_id, p2p_pb2.PingRequest())
    env.body = p2p_pb2.HelloRequest().SerializeToString() + b"\x0a\x00"
    err = await _send(client, server, env)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "bad envelope signature" in err.details()
    await _honest_ping_works(client, server)


async def test_an_envelope_for_another_node_is_refused(pair) -> None:
    server, client = pair
    err = await _send(client, server, seal(client.identity, client.node_id, p2p_pb2.PingRequest()))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "not to this node" in err.details()
    await _honest_ping_works(client, server)


async def test_an_expired_timestamp_is_refused(pair) -> None:
    server, client = pair
    env = seal(client.identity, server.node_id, p2p_pb2.PingRequest())
    env.timestamp_ms -= 90_000
    env.signature = client.identity.sign(_signed_bytes(env))  # properly signed, just too old
    err = await _send(client, server, env)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "±60 s" in err.details()
    await _honest_ping_works(client, server)


async def test_an_oversized_message_is_refused(pair) -> None:
    server, client = pair
    env = seal(client.identity, server.node_id, p2p_pb2.PingRequest())
    env.body = b"\x00" * (MAX_BODY + 1)
    err = await _send(client, server, env)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "over the limit" in err.details()
    await _honest_ping_works(client, server)


async def test_an_unknown_message_type_is_refused(pair) -> None:
    server, client = pair
    err = await _send(client, server, seal(client.identity, server.node_id, discovery_pb2.RecordSet()))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED and "unknown message type" in err.details()
    await _honest_ping_works(client, server)


async def test_a_sender_other_than_the_tls_peer_is_refused(pair) -> None:
    server, client = pair
    impostor = Identity(SigningKey.generate())
    err = await _send(client, server, seal(impostor, server.node_id, p2p_pb2.PingRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "TLS" in err.details()
    await _honest_ping_works(client, server)


async def test_dialing_a_pinned_id_that_the_peer_cannot_prove_is_refused(pair) -> None:
    server, client = pair
    with pytest.raises(AvadiosError, match="not the pinned"):
        await client.request(
            Multiaddr("127.0.0.1", server.port, node_id="0" * 64), p2p_pb2.PingRequest(), p2p_pb2.PingReply
        )
    await _honest_ping_works(client, server)
