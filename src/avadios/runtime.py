"""What every service process shares: config, JSON logs, NATS with reconnects, heartbeats, clean shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.descriptor import ServiceDescriptor
from nats.aio.client import Client as NatsClient

from avadios import __version__, identity
from avadios.config import NodeConfig, load_config
from avadios.logs import setup_logging
from avadios.transport import NatsServer, connect
from avadios.v1 import common_pb2

HEARTBEAT_SUBJECT = "avadios.heartbeat"
HEARTBEAT_INTERVAL_S = 1.0


class Room(Protocol):
    """A service's own part: its servicer (None for the gateway, which serves HTTP) and its health."""

    @property
    def descriptor(self) -> ServiceDescriptor | None: ...

    @property
    def servicer(self) -> object: ...

    def health(self) -> common_pb2.HealthReply: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """Handed to a room's factory: everything it needs, nothing global."""

    name: str
    config: NodeConfig
    replica: int
    node_id: str
    nc: NatsClient
    started: float

    @property
    def instance(self) -> str:
        # The pid alone is not unique once services run in containers (every container has its own pid 1),
        # so the host name joins it; `avadios.probe` also uses it to find this container's own heartbeat.
        return f"{self.name}-{self.replica}-{os.getpid()}@{socket.gethostname()}"

    def base_health(self, status: int, detail: str = "", **fields: Any) -> common_pb2.HealthReply:
        return common_pb2.HealthReply(
            status=status,  # type: ignore[arg-type]
            service=self.name,
            instance=self.instance,
            replica=self.replica,
            pid=os.getpid(),
            detail=detail,
            uptime_s=time.monotonic() - self.started,
            **fields,
        )


RoomFactory = Callable[[ServiceContext], Awaitable[Room]]


async def _heartbeat(ctx: ServiceContext, room: Room) -> None:
    subject = f"{HEARTBEAT_SUBJECT}.{ctx.name}"
    while True:
        with contextlib.suppress(Exception):  # NATS may be restarting; the next beat goes out when it is back
            await ctx.nc.publish(subject, room.health().SerializeToString())
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)


async def serve(name: str, factory: RoomFactory) -> None:
    """Run one service process until SIGTERM or SIGINT."""
    config = load_config()
    replica = int(os.environ.get("AVADIOS_REPLICA", "0"))
    node = identity.load_or_create(config.home)
    log = setup_logging(name, config.log_level, node=node.node_id[:16], replica=replica, pid=os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    nc = await connect(config.effective_nats_url, f"avadios-{name}-{replica}")
    ctx = ServiceContext(name, config, replica, node.node_id, nc, time.monotonic())
    room = await factory(ctx)
    server = None
    if room.descriptor is not None:
        server = NatsServer(
            nc,
            name,
            room.descriptor,
            room.servicer,
            version=__version__,
            metadata={"node": node.node_id, "replica": str(replica)},
        )
        await server.start()
    beat = asyncio.create_task(_heartbeat(ctx, room))
    log.info("service started", extra={"nats_url": config.effective_nats_url, "version": __version__})
    try:
        await room.start()
        await stop.wait()
    finally:
        log.info("service stopping")
        beat.cancel()
        if server is not None:
            await server.stop()
        await room.stop()
        # drain() hands in-flight replies over; close() also ends nats-py's reconnect loop, which would otherwise
        # keep the process alive forever when NATS went down first (e.g. the supervisor was killed).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), 2.0)
        with contextlib.suppress(Exception):
            await nc.close()
        log.info("service stopped")


def main(name: str, factory: RoomFactory, argv: list[str] | None = None) -> None:
    """A service's entry point (`python -m avadios.services.<name>`): no options of its own, only --help."""
    parser = argparse.ArgumentParser(
        prog=f"python -m avadios.services.{name}",
        description=f"Run the {name} service of an AVADIOS node until SIGTERM. `avadios up` starts it (and every "
        "other service); run by hand, it reads the same config: the home's config.toml and AVADIOS_* variables "
        "(AVADIOS_HOME, AVADIOS_NATS_URL, ...), and connects to the node's NATS.",
    )
    parser.parse_args(argv)
    # Plain asyncio, not uvloop: grpc.aio (the gateway's P2P side) hangs on outgoing calls under uvloop here.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(name, factory))
