"""The gateway process: the HTTP API served by uvicorn inside the service runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from google.protobuf.descriptor import ServiceDescriptor

from avadios.identity import load_or_create, load_or_create_api_key
from avadios.runtime import ServiceContext
from avadios.services.gateway.app import Gateway, build_app
from avadios.services.gateway.p2p.door import PeerDoor
from avadios.services.gateway.p2p.node import P2PNode
from avadios.transport import NatsChannel
from avadios.v1 import common_pb2, discovery_pb2, p2p_pb2
from avadios.v1.discovery_nats import DiscoveryClient

log = logging.getLogger("avadios.gateway")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service runtime owns SIGTERM/SIGINT and stops uvicorn itself, in order.
        yield


class GatewayRoom:
    # Beside HTTP and P2P, the gateway serves the peer door in the node: the only way other services reach peers.
    descriptor: ServiceDescriptor | None = p2p_pb2.DESCRIPTOR.services_by_name["Peer"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        config = ctx.config
        # Beyond loopback the API is reachable by others: then every call needs the node's API key.
        api_key = None if config.api_is_local else load_or_create_api_key(config.home)
        channel = NatsChannel(ctx.nc)
        self.gateway = Gateway(config, channel, ctx.node_id, api_key)
        self.p2p = _p2p_node(ctx, channel)
        messages = self.gateway.metrics.p2p_messages
        self.p2p.on_message = lambda direction, body_type: messages.labels(direction, body_type).inc()
        self.door = PeerDoor(self.p2p, channel, self.health)
        app = build_app(self.gateway)
        self._server = _Server(
            uvicorn.Config(
                app,
                host=config.api_host,
                port=config.api_port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=3,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, ctx: ServiceContext) -> GatewayRoom:
        room = cls(ctx)
        await room.gateway.board.subscribe(ctx.nc)
        return room

    @property
    def servicer(self) -> object:
        return self.door

    async def start(self) -> None:
        await self.p2p.start()
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        await self._server.serve()
        if not self._server.started:
            log.error("the HTTP API could not listen on %s:%s", self.ctx.config.api_host, self.ctx.config.api_port)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        await self.p2p.stop()

    def health(self) -> common_pb2.HealthReply:
        status = common_pb2.HealthReply.SERVING if self._server.started else common_pb2.HealthReply.LOADING
        return self.ctx.base_health(status, f"HTTP API on {self.ctx.config.api_url}")


def _p2p_node(ctx: ServiceContext, channel: NatsChannel) -> P2PNode:
    config = ctx.config
    discovery = DiscoveryClient(channel)

    async def local_profile() -> discovery_pb2.SignedRecord:
        return await discovery.LocalProfile(discovery_pb2.LocalProfileRequest())

    return P2PNode(
        load_or_create(config.home),
        config.p2p_host,
        config.p2p_port,
        local_profile,
        max_body=config.p2p_max_body_bytes,
        reply_delay_s=config.p2p_test_delay_ms / 1000,
        run_dir=config.run_dir,
    )
