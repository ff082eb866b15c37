"""Typed calls through the gateway's peer door, for any service that talks to peers (it never opens a socket)."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from avadios.errors import InvalidArgument
from avadios.transport import NatsChannel
from avadios.v1 import p2p_pb2
from avadios.v1.p2p_nats import PeerClient

M = TypeVar("M", bound=Message)
NATS_SLACK_S = 1.0  # the in-node call outlives the peer call it carries, so the peer's own error comes back


class PeerDoorClient:
    """`send` one message to one peer and get its typed reply; `broadcast` to every peer discovery knows."""

    def __init__(self, channel: NatsChannel) -> None:
        self.door = PeerClient(channel)

    async def send(self, peer: str, body: Message, reply_class: type[M], timeout: float = 10.0) -> M:
        """`peer` is a multiaddr (/ip4/H/tcp/P[/p2p/ID]) or a node id discovery knows."""
        request = p2p_pb2.PeerSendRequest(
            peer=peer, type=body.DESCRIPTOR.full_name, body=body.SerializeToString(), timeout_ms=int(timeout * 1000)
        )
        reply = await self.door.Send(request, timeout=timeout + NATS_SLACK_S)
        expected = reply_class.DESCRIPTOR.full_name
        if reply.type != expected:
            raise InvalidArgument(f"peer {reply.node_id[:16]}… answered a {reply.type!r}, not a {expected}")
        try:
            return reply_class.FromString(reply.body)
        except DecodeError:
            raise InvalidArgument(f"peer {reply.node_id[:16]}… sent a malformed {expected}") from None

    async def broadcast(self, body: Message, timeout: float = 3.0) -> p2p_pb2.PeerBroadcastReply:
        request = p2p_pb2.PeerBroadcastRequest(
            type=body.DESCRIPTOR.full_name, body=body.SerializeToString(), timeout_ms=int(timeout * 1000)
        )
        return await self.door.Broadcast(request, timeout=timeout + NATS_SLACK_S)

    async def peers(self) -> list[str]:
        reply = await self.door.Peers(p2p_pb2.PeersRequest(), timeout=10.0)
        return list(reply.multiaddrs)
