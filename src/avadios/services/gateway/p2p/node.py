"""The gateway's P2P node: the gRPC service peers call on TCP 4001 (TLS bound to the node identity, signed
envelopes) and the client that dials peers. What a body means is not its business: handlers per body type do."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import blake3
import grpc
from google.protobuf.message import DecodeError, Message

from avadios.errors import AvadiosError, InvalidArgument, RpcError, Unavailable
from avadios.identity import Identity
from avadios.multiaddr import Multiaddr
from avadios.services.gateway.p2p.envelope import (
    CLOCK_SKEW_S,
    MAX_BODY_BYTES,
    BadSignature,
    ReplayGuard,
    UnknownMessageType,
    open_envelope,
    seal_bytes,
    type_name,
)
from avadios.services.gateway.p2p.tls import NodeTls, PeerUnauthenticated, fetch_server_cert, peer_key_from_cert
from avadios.v1 import discovery_pb2, p2p_pb2, p2p_pb2_grpc

log = logging.getLogger("avadios.gateway.p2p")
M = TypeVar("M", bound=Message)
# A body handler: (body bytes, the sender's verified node id, seconds left) -> (reply type, reply body bytes).
BodyHandler = Callable[[bytes, str, float], Awaitable[tuple[str, bytes]]]
SERVE_TIMEOUT_S = 10.0  # how long one incoming message may take to answer
GRPC_LIMIT_SLACK = 64 * 1024  # let an oversized body reach our check, which names the limit


@dataclass(slots=True)
class Link:
    """A pinned, authenticated channel to one peer address."""

    node_id: str
    channel: grpc.aio.Channel
    stub: p2p_pb2_grpc.P2PStub


class P2PNode:
    """Serves P2P.Call and dials peers. `local_profile` gives this node's signed profile (from discovery)."""

    def __init__(
        self,
        identity: Identity,
        host: str,
        port: int,
        local_profile: Callable[[], Awaitable[discovery_pb2.SignedRecord]],
        load: Callable[[], float] = lambda: 0.0,
        max_body: int = MAX_BODY_BYTES,
        skew_s: float = CLOCK_SKEW_S,
        reply_delay_s: float = 0.0,
        run_dir: Any = None,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.host, self.port = host, port
        self.max_body, self.skew_s = max_body, skew_s
        self.reply_delay_s = reply_delay_s
        self.tls = NodeTls.create(identity, run_dir)
        self._local_profile = local_profile
        self._load = load
        self._guard = ReplayGuard(2 * skew_s)
        self._reply_guard = ReplayGuard(2 * skew_s)
        self._peer_keys: dict[bytes, bytes] = {}  # BLAKE3 of a client certificate PEM -> the key it proves
        self._links: dict[str, Link] = {}
        self._link_lock = asyncio.Lock()
        self._server: grpc.aio.Server | None = None
        self.handlers: dict[str, BodyHandler] = {
            type_name(p2p_pb2.PingRequest): typed_handler(p2p_pb2.PingRequest, self._on_ping),
            type_name(p2p_pb2.HelloRequest): typed_handler(p2p_pb2.HelloRequest, self._on_hello),
        }
        self.served = 0
        self.refused: Counter[str] = Counter()
        # Called with ("in" | "out", body type) for every message answered or sent: the gateway's metrics count them.
        self.on_message: Callable[[str, str], None] = lambda direction, body_type: None

    @property
    def options(self) -> list[tuple[str, int]]:
        limit = self.max_body + GRPC_LIMIT_SLACK
        return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]

    # ---- serving -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = grpc.aio.server(options=self.options)
        # protoc's gRPC modules carry no type hints
        p2p_pb2_grpc.add_P2PServicer_to_server(_Servicer(self), self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_secure_port(f"{self.host}:{self.port}", self.tls.server_credentials())
        await self._server.start()
        log.info("P2P listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        for link in list(self._links.values()):
            await link.channel.close()
        self._links.clear()
        if self._server is not None:
            await self._server.stop(grace=1.0)
        shutil.rmtree(self.tls.client_files[0].parent, ignore_errors=True)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _tls_peer_key(self, context: grpc.aio.ServicerContext) -> bytes:
        certs = context.auth_context().get("x509_pem_cert") or []
        if not certs:
            raise PeerUnauthenticated("no client certificate")
        pem = certs[0]
        digest = blake3.blake3(pem).digest()
        key = self._peer_keys.get(digest)
        if key is None:
            key = peer_key_from_cert(pem)
            if len(self._peer_keys) > 10_000:
                self._peer_keys.clear()
            self._peer_keys[digest] = key
        return key

    async def serve(self, env: p2p_pb2.Envelope, context: grpc.aio.ServicerContext) -> p2p_pb2.Envelope:
        try:
            tls_key = self._tls_peer_key(context)
            sender = open_envelope(env, self.node_id, self._guard, self.max_body, self.skew_s)
            if env.sender_key != tls_key:
                raise BadSignature("envelope sender is not the peer the TLS handshake authenticated")
            handler = self.handlers.get(env.type)
            if handler is None:
                raise UnknownMessageType(f"unknown message type {env.type!r}")
            remaining = context.time_remaining()
            timeout = SERVE_TIMEOUT_S if remaining is None else min(SERVE_TIMEOUT_S, remaining)
            reply_type, reply_body = await handler(env.body, sender, timeout)
        except AvadiosError as exc:
            self.refused[type(exc).__name__] += 1
            log.info("refused P2P message: %s", exc.message)
            await context.abort(exc.code, exc.message)
        self.served += 1
        self.on_message("in", env.type)
        if self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)
        return seal_bytes(self.identity, sender, reply_type, reply_body, in_reply_to=env.nonce)

    async def _on_ping(self, request: p2p_pb2.PingRequest, sender: str) -> p2p_pb2.PingReply:
        return p2p_pb2.PingReply(node_id=self.node_id, load=self._load())

    async def _on_hello(self, request: p2p_pb2.HelloRequest, sender: str) -> p2p_pb2.HelloReply:
        return p2p_pb2.HelloReply(profile=await self._local_profile())

    # ---- dialing -----------------------------------------------------------------------------------------

    async def link(self, addr: Multiaddr, fresh: bool = False) -> Link:
        """An authenticated channel to `addr`: fetch its certificate, check the identity it proves (and the
        pinned /p2p/ id), then pin exactly that certificate."""
        key = addr.address
        async with self._link_lock:
            link = self._links.get(key)
            if link is not None and not fresh and (not addr.node_id or link.node_id == addr.node_id):
                return link
            if link is not None:
                self._links.pop(key, None)
                await link.channel.close()
            pem, node_id = await fetch_server_cert(self.tls, addr.host, addr.port)
            if addr.node_id and node_id != addr.node_id:
                raise PeerUnauthenticated(f"the node at {key} is {node_id[:16]}…, not the pinned {addr.node_id[:16]}…")
            options = [*self.options, ("grpc.ssl_target_name_override", "avadios-node")]
            channel = grpc.aio.secure_channel(
                f"{addr.host}:{addr.port}", self.tls.channel_credentials(pem), options=options
            )
            link = Link(node_id, channel, p2p_pb2_grpc.P2PStub(channel))  # type: ignore[no-untyped-call]
            self._links[key] = link
            return link

    async def forget(self, addr: Multiaddr) -> None:
        async with self._link_lock:
            link = self._links.pop(addr.address, None)
        if link is not None:
            await link.channel.close()

    async def request(
        self, addr: Multiaddr, body: Message, reply_class: type[M], timeout: float = 5.0
    ) -> tuple[M, str, float]:
        """Send one signed request; returns (verified reply, peer node id, round trip in ms of the call)."""
        reply_body, sender, rtt_ms = await self.request_bytes(
            addr, type_name(body), body.SerializeToString(), type_name(reply_class), timeout
        )
        return reply_class.FromString(reply_body), sender, rtt_ms

    async def request_bytes(
        self, addr: Multiaddr, body_type: str, body: bytes, reply_type: str, timeout: float = 5.0
    ) -> tuple[bytes, str, float]:
        """Send one signed body of `body_type`; returns (the verified reply body, which must be a `reply_type`,
        the peer's node id, round trip in ms). A channel that fails (e.g. the peer restarted with a new
        certificate) is rebuilt once."""
        if len(body) > self.max_body:
            raise InvalidArgument(f"a P2P body is at most {self.max_body} bytes, this one is {len(body)}")
        for attempt in (0, 1):
            link = await self.link(addr, fresh=attempt == 1)
            env = seal_bytes(self.identity, link.node_id, body_type, body)
            started = time.perf_counter()
            try:
                reply = await link.stub.Call(env, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and attempt == 0:
                    continue
                raise RpcError(exc.code(), exc.details() or exc.code().name) from None
            rtt_ms = (time.perf_counter() - started) * 1000
            sender = open_envelope(reply, self.node_id, self._reply_guard, self.max_body, self.skew_s)
            if sender != link.node_id or reply.in_reply_to != env.nonce:
                raise BadSignature("the reply is not from the peer we called, or not for our request")
            if reply.type != reply_type:
                raise UnknownMessageType(f"expected a {reply_type} reply, got {reply.type!r}")
            self.on_message("out", body_type)
            return reply.body, sender, rtt_ms
        raise Unavailable(f"peer at {addr} is unreachable")


def typed_handler(message_class: type[M], handle: Callable[[M, str], Awaitable[Message]]) -> BodyHandler:
    """A body handler for a message type the gateway itself answers (Ping, Hello): decoded, then handled."""

    async def on_body(body: bytes, sender: str, timeout: float) -> tuple[str, bytes]:
        try:
            request = message_class.FromString(body)
        except DecodeError:
            raise InvalidArgument(f"body is not a valid {type_name(message_class)}") from None
        reply = await handle(request, sender)
        return type_name(reply), reply.SerializeToString()

    return on_body


class _Servicer(p2p_pb2_grpc.P2PServicer):
    def __init__(self, node: P2PNode) -> None:
        self.node = node

    async def Call(self, request: p2p_pb2.Envelope, context: grpc.aio.ServicerContext) -> p2p_pb2.Envelope:
        return await self.node.serve(request, context)
