"""DHT simulation: N signed-DHT nodes in one event loop on 127.0.0.1 (real UDP sockets).

Measures join time, provider-lookup hops and latency (p50/p95) and how long a new node takes to become
findable. Run: .venv/bin/python bench/bench_dht.py [--nodes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Sequence

from nacl.signing import SigningKey

from avadios.identity import Identity
from avadios.records import provider_key, sign_record
from avadios.services.discovery.dht import DhtNode
from avadios.v1 import discovery_pb2


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def entry(node: DhtNode, model: str) -> discovery_pb2.SignedRecord:
    payload = discovery_pb2.ProviderEntry(node_id=node.identity.node_id, model=model, price_micro_autom_per_1k=100)
    return sign_record(node.identity, provider_key(model), payload.SerializeToString(), 1, 3600)


async def main(count: int, models: int, providers_per_model: int, lookups: int, seed: int) -> None:
    rng = random.Random(seed)
    nodes = [DhtNode(Identity(SigningKey(rng.randbytes(32))), "127.0.0.1", 0, rpc_timeout_s=2.0) for _ in range(count)]
    for node in nodes:
        await node.listen()
    started = time.perf_counter()
    joins = []
    for i, node in enumerate(nodes[1:], 1):
        t = time.perf_counter()
        await node.bootstrap([("127.0.0.1", nodes[rng.randrange(i)].port)])
        joins.append(time.perf_counter() - t)
    print(
        f"{count} nodes joined in {time.perf_counter() - started:.1f} s (join p50 {pct(joins, 0.5) * 1000:.1f} ms, "
        f"p95 {pct(joins, 0.95) * 1000:.1f} ms)"
    )
    contacts = [len(n.contacts()) for n in nodes]
    print(f"routing table size: mean {statistics.mean(contacts):.1f}, min {min(contacts)}")

    names = [f"model-{m}" for m in range(models)]
    providers = {name: rng.sample(nodes, providers_per_model) for name in names}
    for name, group in providers.items():
        for node in group:
            await node.put(entry(node, name))

    hops: list[int] = []
    latency: list[float] = []
    recall: list[float] = []
    for _ in range(lookups):
        reader, name = rng.choice(nodes), rng.choice(names)
        t = time.perf_counter()
        found = await reader.get(provider_key(name))
        latency.append((time.perf_counter() - t) * 1000)
        hops.append(found.hops)
        recall.append(len(found.records) / providers_per_model)
    print(
        f"provider lookups: {lookups}, hops p50 {pct(hops, 0.5)} p95 {pct(hops, 0.95)} max {max(hops)}, "
        f"latency p50 {pct(latency, 0.5):.2f} ms p95 {pct(latency, 0.95):.2f} ms, "
        f"providers found {statistics.mean(recall) * 100:.1f}% of {providers_per_model}"
    )

    findable: list[float] = []
    for _ in range(10):
        newcomer = DhtNode(Identity(SigningKey(rng.randbytes(32))), "127.0.0.1", 0, rpc_timeout_s=2.0)
        await newcomer.listen()
        model = f"new-{len(findable)}"
        t = time.perf_counter()
        await newcomer.bootstrap([("127.0.0.1", rng.choice(nodes).port)])
        await newcomer.put(entry(newcomer, model))
        for _ in range(100):
            reader = rng.choice(nodes)
            try:
                found = await asyncio.wait_for(reader.get(provider_key(model)), 10)
            except TimeoutError:
                print(f"lookup from a node with {len(reader.contacts())} contacts took over 10 s")
                continue
            if found.records:
                break
            await asyncio.sleep(0.01)
        findable.append((time.perf_counter() - t) * 1000)
        nodes.append(newcomer)
    print(
        f"new node findable (join + publish + a lookup from a random node finds it): "
        f"p50 {pct(findable, 0.5):.1f} ms, max {max(findable):.1f} ms"
    )
    for node in nodes:
        node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--providers", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    a = parser.parse_args()
    asyncio.run(main(a.nodes, a.models, a.providers, a.lookups, a.seed))
