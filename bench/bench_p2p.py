"""P2P costs: envelope seal + open per message, and request round trip over the TLS gRPC link on 127.0.0.1.

Run: .venv/bin/python bench/bench_p2p.py
"""

from __future__ import annotations

import asyncio
import time

from nacl.signing import SigningKey

from avadios.identity import Identity
from avadios.multiaddr import Multiaddr
from avadios.services.gateway.p2p.envelope import ReplayGuard, open_envelope, seal
from avadios.services.gateway.p2p.node import P2PNode
from avadios.v1 import discovery_pb2, p2p_pb2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _profile() -> discovery_pb2.SignedRecord:
    return discovery_pb2.SignedRecord()


async def main(messages: int = 5000, calls: int = 1000) -> None:
    a, b = Identity(SigningKey.generate()), Identity(SigningKey.generate())
    body = p2p_pb2.PingReply(node_id=a.node_id, load=0.5)
    t = time.perf_counter()
    envs = [seal(a, b.node_id, body) for _ in range(messages)]
    sealed = time.perf_counter() - t
    guard = ReplayGuard()
    t = time.perf_counter()
    for env in envs:
        open_envelope(env, b.node_id, guard)
    opened = time.perf_counter() - t
    print(
        f"envelope seal {sealed / messages * 1e6:.1f} µs, open (verify + checks) {opened / messages * 1e6:.1f} µs "
        f"per message ({messages} messages, {envs[0].ByteSize()} bytes each)"
    )

    server = P2PNode(a, "127.0.0.1", 0, _profile)
    client = P2PNode(b, "127.0.0.1", 0, _profile)
    await server.start()
    await client.start()
    addr = Multiaddr("127.0.0.1", server.port, node_id=server.node_id)
    t = time.perf_counter()
    await client.request(addr, p2p_pb2.PingRequest(), p2p_pb2.PingReply)
    cold = (time.perf_counter() - t) * 1000
    rtts = []
    for _ in range(calls):
        t = time.perf_counter()
        await client.request(addr, p2p_pb2.PingRequest(), p2p_pb2.PingReply)
        rtts.append((time.perf_counter() - t) * 1000)
    print(
        f"TLS gRPC signed ping: first call {cold:.1f} ms (certificate fetch + handshake), then "
        f"p50 {pct(rtts, 0.5):.2f} ms p95 {pct(rtts, 0.95):.2f} ms ({calls} calls)"
    )
    await client.stop()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
