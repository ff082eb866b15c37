"""The peer door: the one way every service of the node reaches peers, and the way peers reach them.

Out: services call the gateway's in-node `Peer` service over NATS (`Send` to one peer, `Broadcast` to every peer
discovery knows) with a body type and its bytes; the gateway seals them into a signed envelope and returns the
peer's verified reply. In: a peer's envelope is checked here (signature, TLS-bound sender, recipient, time,
nonce, size, a type the registry knows) and its body, never decoded here, goes with the sender's verified node
id to the in-node method that `avadios.peer_registry` names for its type. The owning service checks the body
once; its reply (or its refusal, as a status) goes back to the peer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from avadios.errors import AvadiosError, InvalidArgument, NotFound
from avadios.multiaddr import Multiaddr, first_tcp, parse_tcp
from avadios.peer_registry import PEER_METHODS, PeerMethod, reply_type_for
from avadios.services.gateway.p2p.node import BodyHandler, P2PNode
from avadios.transport import NatsChannel, ServerContext
from avadios.v1 import common_pb2, discovery_pb2, p2p_pb2, p2p_pb2_grpc
from avadios.v1.discovery_nats import DiscoveryClient

log = logging.getLogger("avadios.gateway.door")
PEERS_MISS_TTL_S = 0.25  # a node id not in the cached list asks discovery again, but not more often than this
PEERS_TTL_S = 2.0  # a busy service broadcasts many times a second: discovery's peer list is asked at most this often
DEFAULT_TIMEOUT_S = 10.0
BROADCAST_TIMEOUT_S = 3.0


def forwarder(channel: NatsChannel, entry: PeerMethod) -> BodyHandler:
    """A body handler that hands a peer's body, unopened, to the in-node method that owns its type."""

    async def forward(body: bytes, sender: str, timeout: float) -> tuple[str, bytes]:
        reply = await channel.unary_bytes(entry.service, entry.method.name, body, timeout, peer=sender)
        return entry.reply_type, reply

    return forward


class PeerDoor(p2p_pb2_grpc.PeerServicer):
    """In-node: the gateway's `Peer` service. Registers a forwarder on the P2P node for every registered type."""

    def __init__(self, node: P2PNode, channel: NatsChannel, health: Callable[[], common_pb2.HealthReply]) -> None:
        self.node = node
        self.discovery = DiscoveryClient(channel, default_timeout=5.0)
        self._health = health
        self._peers: list[Multiaddr] = []
        self._peers_at = 0.0
        self._peers_lock = asyncio.Lock()
        for body_type, entry in PEER_METHODS.items():
            node.handlers[body_type] = forwarder(channel, entry)

    # ---- addressing ---------------------------------------------------------------------------------------

    async def peers(self, fresh: bool = False) -> list[Multiaddr]:
        """Peers discovery knows (with a P2P address), cached briefly (`fresh`: asked again unless just asked)."""
        async with self._peers_lock:
            if time.monotonic() - self._peers_at < (PEERS_MISS_TTL_S if fresh else PEERS_TTL_S):
                return self._peers
            listing = await self.discovery.ListPeers(discovery_pb2.ListPeersRequest())
            found = [
                addr
                for peer in listing.peers
                if peer.node_id != self.node.node_id
                and (addr := first_tcp(tuple(peer.addresses), peer.node_id)) is not None
            ]
            self._peers, self._peers_at = found, time.monotonic()
            return found

    async def resolve(self, peer: str) -> Multiaddr:
        """A multiaddr as given, or the P2P address discovery knows for a bare node id."""
        if peer.startswith("/"):
            try:
                return parse_tcp(peer)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        for fresh in (False, True):  # a node id the cached list lacks may be one discovery met a moment ago
            for addr in await self.peers(fresh):
                if addr.node_id == peer:
                    return addr
        raise NotFound(f"no known P2P address for node {peer[:16]}…: it is not among discovery's peers")

    @staticmethod
    def _reply_type(body_type: str) -> str:
        reply_type = reply_type_for(body_type)
        if not reply_type:
            raise InvalidArgument(f"no peer method is registered for body type {body_type!r}")
        return reply_type

    @staticmethod
    def _timeout(timeout_ms: int, context: ServerContext, default: float) -> float:
        timeout = timeout_ms / 1000 if timeout_ms else default
        remaining = context.time_remaining()
        return timeout if remaining is None else max(0.001, min(timeout, remaining - 0.05))

    # ---- the Peer service ---------------------------------------------------------------------------------

    async def Send(self, request: p2p_pb2.PeerSendRequest, context: ServerContext) -> p2p_pb2.PeerSendReply:
        reply_type = self._reply_type(request.type)
        addr = await self.resolve(request.peer)
        timeout = self._timeout(request.timeout_ms, context, DEFAULT_TIMEOUT_S)
        body, node_id, rtt = await self.node.request_bytes(addr, request.type, request.body, reply_type, timeout)
        return p2p_pb2.PeerSendReply(node_id=node_id, type=reply_type, body=body, rtt_ms=rtt)

    async def Broadcast(
        self, request: p2p_pb2.PeerBroadcastRequest, context: ServerContext
    ) -> p2p_pb2.PeerBroadcastReply:
        reply_type = self._reply_type(request.type)
        peers = await self.peers()
        timeout = self._timeout(request.timeout_ms, context, BROADCAST_TIMEOUT_S)

        async def send(addr: Multiaddr) -> str:
            try:
                await self.node.request_bytes(addr, request.type, request.body, reply_type, timeout)
            except AvadiosError as exc:
                return f"{(addr.node_id or addr.address)[:16]}: {exc.message}"
            except Exception as exc:  # a dial that fails below gRPC (refused socket, TLS): the peer is just away
                return f"{(addr.node_id or addr.address)[:16]}: {type(exc).__name__}: {exc}"
            return ""

        failures = [f for f in await asyncio.gather(*(send(a) for a in peers)) if f]
        if failures:
            log.debug("broadcast failures", extra={"type": request.type, "failures": failures})
        return p2p_pb2.PeerBroadcastReply(peers=len(peers), delivered=len(peers) - len(failures), failures=failures)

    async def Peers(self, request: p2p_pb2.PeersRequest, context: ServerContext) -> p2p_pb2.PeersReply:
        return p2p_pb2.PeersReply(multiaddrs=[str(a) for a in await self.peers()])

    async def Hello(self, request: p2p_pb2.PeerAddress, context: ServerContext) -> p2p_pb2.PeerHello:
        addr = await self.resolve(request.multiaddr)
        reply, node_id, rtt = await self.node.request(addr, p2p_pb2.HelloRequest(), p2p_pb2.HelloReply)
        return p2p_pb2.PeerHello(node_id=node_id, profile=reply.profile, rtt_ms=rtt)

    async def Ping(self, request: p2p_pb2.PeerAddress, context: ServerContext) -> p2p_pb2.PeerPing:
        addr = await self.resolve(request.multiaddr)
        timeout = self._timeout(0, context, 5.0)
        reply, node_id, rtt = await self.node.request(addr, p2p_pb2.PingRequest(), p2p_pb2.PingReply, timeout=timeout)
        return p2p_pb2.PeerPing(node_id=node_id, rtt_ms=rtt, load=reply.load)

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self._health()
