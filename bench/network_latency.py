"""End-to-end latency of a paid, verified network request (N providers) against the same request answered by the
requester's own model (tier 1), on one machine: a devnet of 1 + N nodes, each with the default model.

Each network request routes, holds, offers to N providers, waits for their signed answers, re-scores every
distinct answer on the requester (which holds the model) and settles. The figures are the whole HTTP request, as
a client sees it. On one 2-core machine the N providers and the requester share the cores, so this measures the
protocol's cost plus N-fold contention; on separate machines the providers work in parallel.

Run: .venv/bin/python -m bench.network_latency --requests 20 [--replicas 3] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from avadios import devnet
from avadios.config import load_config
from avadios.models import default_model_path
from bench.common import percentile

SETTINGS = {"ping_interval_s": 2.0, "dht_rpc_timeout_s": 1.0, "network_timeout_s": 60.0, "network_hold_s": 120.0}
PROMPTS = [
    "What is the capital of France?",
    "Name a large animal.",
    "What colour is the sky?",
    "How many legs does a spider have?",
    "What do bees make?",
]


def _ask(
    client: httpx.Client, node: devnet.DevnetNode, prompt: str, tier: str, replicas: int, max_tokens: int
) -> float:
    body: dict[str, Any] = {
        "model": "gemma-3-270m-q4_k_m",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "avadios": {"replicas": replicas},
    }
    started = time.perf_counter()
    reply = client.post(
        node.api_url + "/v1/chat/completions",
        json=body,
        headers={"X-Avadios-Tier": tier, "Cache-Control": "no-store"},
    )
    elapsed = time.perf_counter() - started
    if reply.status_code != 200 or reply.headers.get("x-avadios-tier") != ("network" if tier == "network" else "1"):
        raise SystemExit(f"{tier} request failed: {reply.status_code} {reply.text[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    model = default_model_path(load_config(env={}))
    with tempfile.TemporaryDirectory(prefix="avadios-netbench-") as tmp:
        directory = Path(tmp)
        nodes: list[devnet.DevnetNode] = []
        for index in range(1, args.replicas + 2):
            bootstrap = [nodes[-1].multiaddr] if nodes else []
            nodes.append(devnet.create_node(directory, index, model, bootstrap, dict(SETTINGS)))
        devnet.write_genesis(directory, nodes)
        try:
            for node in nodes:
                devnet.start(node)
            devnet.wait_healthy(nodes, timeout=300)
            requester = nodes[0]
            with httpx.Client(timeout=300.0) as client:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    route = client.get(requester.api_url + "/api/route/gemma-3-270m-q4_k_m").json()
                    if len(route.get("ranked", [])) >= args.replicas:
                        break
                    time.sleep(1.0)
                for prompt in PROMPTS[:2]:  # warm both paths: model pages, TLS links, first holds
                    _ask(client, requester, prompt, "local", args.replicas, args.max_tokens)
                    _ask(client, requester, prompt, "network", args.replicas, args.max_tokens)
                local, network = [], []
                for i in range(args.requests):
                    prompt = PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS))  # distinct requests
                    local.append(_ask(client, requester, prompt, "local", args.replicas, args.max_tokens))
                    network.append(_ask(client, requester, prompt, "network", args.replicas, args.max_tokens))
                jobs = client.get(requester.api_url + f"/api/jobs?limit={args.requests}").json()["jobs"]
        finally:
            for node in nodes:
                devnet.stop(node)
    provider_ms = [p["latency_ms"] for job in jobs for p in job["providers"]]
    slowest = [max(p["latency_ms"] for p in job["providers"]) for job in jobs]
    totals = [job["duration_ms"] for job in jobs]
    print(f"default model, greedy, max_tokens {args.max_tokens}, N = {args.replicas}, {args.requests} requests each")
    for name, values in (("local tier 1", local), (f"network N={args.replicas}", network)):
        ms = [v * 1000 for v in values]
        print(
            f"{name:>14}: p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms  "
            f"mean {statistics.fmean(ms):7.1f} ms"
        )
    print(f"network ÷ local (p50): {percentile(network, 50) / percentile(local, 50):.2f}")
    print(
        f"inside a network request (mean): provider answer {statistics.fmean(provider_ms):.1f} ms, slowest of N "
        f"{statistics.fmean(slowest):.1f} ms, whole job {statistics.fmean(totals):.1f} ms "
        f"(route + hold + verify + settle: {statistics.fmean(totals) - statistics.fmean(slowest):.1f} ms)"
    )
    print(f"all accepted: {all(job['accepted'] for job in jobs)}")


if __name__ == "__main__":
    main()
