"""Ledger replication through the gateway: what peers send (gossip, catch-up requests) is checked at the door and
forwarded to this node's ledger over NATS; what the ledger broadcasts goes to every peer discovery knows."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from google.protobuf.message import Message

from avadios.errors import AvadiosError, InvalidArgument
from avadios.ledger.block import HASH_BYTES, KEY_BYTES, MAX_VOTE_HASHES, SIGNATURE_BYTES, check_shape
from avadios.multiaddr import Multiaddr, parse
from avadios.transport import Stub
from avadios.v1 import discovery_pb2, ledger_pb2, p2p_pb2
from services.gateway.envelope import type_name
from services.gateway.p2p import P2PNode

log = logging.getLogger("avadios.gateway.ledger")
MAX_GOSSIP_ITEMS = 256
MAX_PAGE = 1000
PEERS_TTL_S = 2.0
SEND_TIMEOUT_S = 3.0
FORWARD_TIMEOUT_S = 10.0


def check_gossip_batch(batch: ledger_pb2.LedgerGossipBatch) -> None:
    """Everything a gossip batch must satisfy before it reaches the ledger: an item count, one block or vote per
    item, field sizes. Signatures need the network id: the ledger checks them (and refuses the batch) next."""
    if not 0 < len(batch.items) <= MAX_GOSSIP_ITEMS:
        raise InvalidArgument(f"a gossip batch holds 1 to {MAX_GOSSIP_ITEMS} items, not {len(batch.items)}")
    for index, item in enumerate(batch.items):
        try:
            which = item.WhichOneof("item")
            if which == "block":
                check_shape(item.block)
            elif which == "vote":
                vote = item.vote
                if len(vote.representative) != KEY_BYTES or len(vote.signature) != SIGNATURE_BYTES:
                    raise InvalidArgument("a vote needs a 32-byte representative and a 64-byte signature")
                hashes = vote.block_hashes
                if not 0 < len(hashes) <= MAX_VOTE_HASHES or any(len(h) != HASH_BYTES for h in hashes):
                    raise InvalidArgument(f"a vote covers 1 to {MAX_VOTE_HASHES} hashes of {HASH_BYTES} bytes")
            else:
                raise InvalidArgument("the item holds neither a block nor a vote")
        except AvadiosError as exc:
            raise InvalidArgument(f"gossip item {index}: {exc.message}") from None


class LedgerRelay:
    """Registers the ledger's message types on the P2P node and serves the ledger side of Peering."""

    def __init__(self, node: P2PNode, ledger: Stub, discovery: Stub) -> None:
        self.node = node
        self.ledger = ledger
        self.discovery = discovery
        self._peers: list[Multiaddr] = []
        self._peers_at = 0.0
        self._peers_lock = asyncio.Lock()
        handlers: dict[type[Message], Callable[[Message, str], Awaitable[Message]]] = {
            ledger_pb2.LedgerGossipBatch: self._on_gossip,
            ledger_pb2.LedgerFrontiersRequest: self._on_frontiers,
            ledger_pb2.LedgerChainRequest: self._on_chain,
        }
        for message_class, handler in handlers.items():
            node.handlers[type_name(message_class)] = (message_class, handler)

    # ---- from peers: checked, then forwarded to our ledger ------------------------------------------------

    async def _on_gossip(self, request: Message, sender: str) -> Message:
        assert isinstance(request, ledger_pb2.LedgerGossipBatch)
        check_gossip_batch(request)
        reply: ledger_pb2.LedgerGossipAck = await self.ledger.GossipBatch(request, timeout=FORWARD_TIMEOUT_S)
        return reply

    async def _on_frontiers(self, request: Message, sender: str) -> Message:
        assert isinstance(request, ledger_pb2.LedgerFrontiersRequest)
        if request.start and len(request.start) != KEY_BYTES:
            raise InvalidArgument(f"start must be empty or a {KEY_BYTES}-byte account")
        if request.limit > MAX_PAGE:
            raise InvalidArgument(f"at most {MAX_PAGE} frontiers a page")
        reply: ledger_pb2.LedgerFrontiersReply = await self.ledger.GetFrontiers(request, timeout=FORWARD_TIMEOUT_S)
        return reply

    async def _on_chain(self, request: Message, sender: str) -> Message:
        assert isinstance(request, ledger_pb2.LedgerChainRequest)
        if len(request.account) != KEY_BYTES:
            raise InvalidArgument(f"account must be a {KEY_BYTES}-byte key")
        if request.limit > MAX_PAGE:
            raise InvalidArgument(f"at most {MAX_PAGE} blocks a page")
        reply: ledger_pb2.LedgerChainReply = await self.ledger.GetChain(request, timeout=FORWARD_TIMEOUT_S)
        return reply

    # ---- to peers -----------------------------------------------------------------------------------------

    async def peers(self) -> list[Multiaddr]:
        """Peers discovery knows (with a P2P address), cached briefly: a busy ledger broadcasts many times a second."""
        async with self._peers_lock:
            if time.monotonic() - self._peers_at < PEERS_TTL_S:
                return self._peers
            listing: discovery_pb2.ListPeersReply = await self.discovery.ListPeers(
                discovery_pb2.ListPeersRequest(), timeout=5.0
            )
            found: list[Multiaddr] = []
            for peer in listing.peers:
                if peer.node_id == self.node.node_id:
                    continue
                for text in peer.addresses:
                    if "/tcp/" not in text:
                        continue
                    try:
                        addr = parse(text)
                    except ValueError:
                        continue
                    found.append(addr if addr.node_id else addr.with_node_id(peer.node_id))
                    break
            self._peers, self._peers_at = found, time.monotonic()
            return found

    async def broadcast(self, batch: ledger_pb2.LedgerGossipBatch) -> p2p_pb2.PeerBroadcastReply:
        check_gossip_batch(batch)
        peers = await self.peers()

        async def send(addr: Multiaddr) -> str:
            try:
                await self.node.request(addr, batch, ledger_pb2.LedgerGossipAck, timeout=SEND_TIMEOUT_S)
            except AvadiosError as exc:
                return f"{(addr.node_id or addr.address)[:16]}: {exc.message}"
            except Exception as exc:  # a dial that fails below gRPC (refused socket, TLS): the peer is just away
                return f"{(addr.node_id or addr.address)[:16]}: {type(exc).__name__}: {exc}"
            return ""

        failures = [f for f in await asyncio.gather(*(send(a) for a in peers)) if f]
        if failures:
            log.debug("ledger broadcast failures: %s", failures)
        return p2p_pb2.PeerBroadcastReply(peers=len(peers), delivered=len(peers) - len(failures), failures=failures)

    async def frontiers(self, request: p2p_pb2.PeerLedgerFrontiersRequest) -> ledger_pb2.LedgerFrontiersReply:
        reply, _, _ = await self.node.request(
            _addr(request.multiaddr), request.request, ledger_pb2.LedgerFrontiersReply, timeout=FORWARD_TIMEOUT_S
        )
        return reply

    async def chain(self, request: p2p_pb2.PeerLedgerChainRequest) -> ledger_pb2.LedgerChainReply:
        reply, _, _ = await self.node.request(
            _addr(request.multiaddr), request.request, ledger_pb2.LedgerChainReply, timeout=FORWARD_TIMEOUT_S
        )
        return reply


def _addr(text: str) -> Multiaddr:
    try:
        addr = parse(text)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if addr.transport != "tcp":
        raise InvalidArgument(f"{text} is not a P2P (tcp) address")
    return addr
