"""The gateway process: the HTTP API served by uvicorn inside the service runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from google.protobuf.descriptor import ServiceDescriptor

from avadios.identity import load_or_create_api_key
from avadios.runtime import ServiceContext
from avadios.transport import NatsChannel
from avadios.v1 import common_pb2
from services.gateway.app import Gateway, build_app

log = logging.getLogger("avadios.gateway")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service runtime owns SIGTERM/SIGINT and stops uvicorn itself, in order.
        yield


class GatewayRoom:
    descriptor: ServiceDescriptor | None = None  # the gateway serves HTTP (and later P2P), not an in-node NATS service

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        config = ctx.config
        # Beyond loopback the API is reachable by others: then every call needs the node's API key.
        api_key = None if config.api_is_local else load_or_create_api_key(config.home)
        self.gateway = Gateway(config, NatsChannel(ctx.nc), ctx.node_id, api_key)
        self._server = _Server(
            uvicorn.Config(
                build_app(self.gateway),
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
        return None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        await self._server.serve()
        if not self._server.started:
            log.error("the HTTP API could not listen on %s:%s", self.ctx.config.api_host, self.ctx.config.api_port)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    def health(self) -> common_pb2.HealthReply:
        status = common_pb2.HealthReply.SERVING if self._server.started else common_pb2.HealthReply.LOADING
        return self.ctx.base_health(status, f"HTTP API on {self.ctx.config.api_url}")
