"""Health probes for containers: `python -m avadios.probe SERVICE [--ready]` exits 0 when healthy, 1 when not.

Compose healthchecks and Kubernetes exec probes run this inside the service's own container. Inference, cache,
ledger and discovery have no HTTP port, so they are judged by their heartbeat on NATS; a probe must judge
*this* container and not whichever replica answers a queue-group request first, so it waits for a heartbeat
whose instance carries this container's host name (see `ServiceContext.instance`).

- live (default): the process is up and its event loop runs (a heartbeat arrives; for the gateway, the
  HTTP server answers `/metrics`). A failing liveness probe restarts the container.
- `--ready`: it can take work (heartbeat status SERVING; gateway `/health` is 200, which needs a ready
  inference replica somewhere on the node; discovery serves once it has published the node's profile,
  which needs inference to list its models). A failing readiness probe only takes it out of rotation.
- `nats`: the NATS server's own monitoring endpoint `/healthz` (port 8222 unless `--monitor-port`).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import urllib.error
import urllib.request

from nats.aio.msg import Msg

from avadios.config import SERVICES, load_config
from avadios.errors import Unavailable
from avadios.runtime import HEARTBEAT_INTERVAL_S, HEARTBEAT_SUBJECT
from avadios.transport import connect_within
from avadios.v1 import common_pb2

HTTP_SERVICES = ("gateway", "nats")  # judged by HTTP; every other service of the node by its heartbeat
NATS_SERVICES = tuple(s for s in SERVICES if s not in HTTP_SERVICES)
Status = common_pb2.HealthReply.Status


class Unhealthy(Exception):
    """The probed service is not healthy; the message says why, in one line."""


def _http_ok(url: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                raise Unhealthy(f"{url} answered {response.status}")
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unhealthy(f"{url} unreachable: {exc}") from None


async def _own_heartbeat(service: str, ready: bool, timeout: float) -> str:
    """Wait for a heartbeat of `service` from this host; return its detail line."""
    config = load_config()
    host = socket.gethostname()
    try:
        nc = await connect_within(config.effective_nats_url, f"avadios-probe-{service}", timeout)
    except Unavailable as exc:
        raise Unhealthy(exc.message) from None
    seen: asyncio.Queue[common_pb2.HealthReply] = asyncio.Queue()

    async def on_beat(msg: Msg) -> None:
        try:
            reply = common_pb2.HealthReply.FromString(msg.data)
        except Exception:
            return
        if reply.instance.endswith("@" + host):
            seen.put_nowait(reply)

    last: common_pb2.HealthReply | None = None
    try:
        await nc.subscribe(f"{HEARTBEAT_SUBJECT}.{service}", cb=on_beat)
        async with asyncio.timeout(timeout):
            while True:
                last = await seen.get()
                if not ready or last.status == Status.SERVING:
                    return f"{last.instance} {Status.Name(last.status).lower()}: {last.detail}"
    except TimeoutError:
        if last is None:
            raise Unhealthy(f"no heartbeat from {service} on host {host} within {timeout:.1f}s") from None
        raise Unhealthy(f"{last.instance} is {Status.Name(last.status).lower()}: {last.detail}") from None
    finally:
        await nc.close()


def probe(service: str, ready: bool, timeout: float, monitor_port: int) -> str:
    """Check `service` in this container; return a one-line description or raise `Unhealthy`."""
    if service == "nats":
        url = f"http://127.0.0.1:{monitor_port}/healthz"
        _http_ok(url, timeout)
        return f"{url} ok"
    if service == "gateway":
        config = load_config()
        url = f"http://127.0.0.1:{config.api_port}{'/health' if ready else '/metrics'}"
        _http_ok(url, timeout)
        return f"{url} ok"
    return asyncio.run(_own_heartbeat(service, ready, timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avadios.probe", description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=(*NATS_SERVICES, *HTTP_SERVICES))
    parser.add_argument("--ready", action="store_true", help="check readiness (can take work), not just liveness")
    # Heartbeats come every second; 3.5 of them is what the gateway itself waits before calling one stale.
    parser.add_argument("--timeout", type=float, default=HEARTBEAT_INTERVAL_S * 3.5, help="seconds to wait")
    parser.add_argument("--monitor-port", type=int, default=8222, help="NATS monitoring port (nats only)")
    args = parser.parse_args(argv)
    try:
        line = probe(args.service, args.ready, args.timeout, args.monitor_port)
    except Unhealthy as exc:
        print(f"{args.service}: unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"{args.service}: healthy: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
