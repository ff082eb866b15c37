"""Aggregate decode tokens/s at 1, 2, 4 and 8 concurrent clients, as a ratio to the single-client figure, on a node
(its default config: parallel slots) and on llama-cpp-python's own `llama_cpp.server` (the peer baseline) on the
same model, with p50/p95 time to first token at the largest client count.

    .venv/bin/python -m bench.concurrency [--rounds 3] [--max-tokens 48] [--threads 2] [--clients 1,2,4,8]

Every client streams one greedy completion of its own prompt (`max_tokens` each); a level's aggregate figure is
the tokens all its clients received over the wall time from the first request sent to the last token. In every
round each level runs on both servers back to back, alternating which goes first, so machine noise (others'
work on a shared machine) hits both alike; the figures are medians over the rounds. The node's tier 0 cache is
bypassed (Cache-Control: no-cache).

On a machine others are using, wall time mostly measures their load; the CPU time the serving processes spent
(every process of the node; the llama_cpp.server process) does not. So each level also reports tokens per CPU
second of the server: on an idle machine, where the server's threads have the cores to themselves, its ratio to
the single-client figure is what the wall-time ratio would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from avadios.config import NodeConfig
from avadios.models import default_model_path
from bench.common import percentile
from tests.helpers import Node

SUBJECTS = (
    "a lighthouse keeper", "a mountain village", "a lost dog", "an old clockmaker", "a river in spring",
    "a baker in Paris", "a sailing ship", "a desert caravan", "a library at night", "a young astronomer",
)


def prompt(i: int) -> str:
    return f"Q: Write a long story about {SUBJECTS[i % len(SUBJECTS)]}.\nA:"


@dataclass(frozen=True, slots=True)
class Level:
    tokens: int
    seconds: float
    cpu_seconds: float
    first_token_s: tuple[float, ...]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_seconds


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


async def one_client(client: httpx.AsyncClient, i: int, max_tokens: int, started: float) -> tuple[int, float]:
    body = {"model": "default", "prompt": prompt(i), "max_tokens": max_tokens, "temperature": 0, "stream": True}
    tokens, first = 0, 0.0
    headers = {"Cache-Control": "no-cache"}
    async with client.stream("POST", "/v1/completions", json=body, headers=headers) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("choices") and event["choices"][0].get("text"):
                tokens += 1
                first = first or time.perf_counter() - started
    return tokens, first


async def level(base_url: str, clients: int, max_tokens: int, server: list[psutil.Process]) -> Level:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        cpu = cpu_seconds(server)
        started = time.perf_counter()
        results = await asyncio.gather(*(one_client(client, i, max_tokens, started) for i in range(clients)))
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(server) - cpu
    return Level(sum(t for t, _ in results), seconds, cpu, tuple(f for _, f in results))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_peer(model: Path, threads: int, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_threads", str(threads),
        "--n_threads_batch", str(threads), "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port),
        "--verbose", "False",
        # its default lets a new request interrupt the running one (that client's stream just ends): make it queue
        "--interrupt_requests", "False",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not start; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--parallel", type=int, default=0, help="the node's inference_parallel (0: its default)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    model = default_model_path(NodeConfig())
    with tempfile.TemporaryDirectory() as tmp:
        env = {"AVADIOS_INFERENCE_THREADS": str(args.threads), "AVADIOS_INFERENCE_PARALLEL": str(args.parallel)}
        node = Node(Path(tmp) / "home", env=env).start()
        peer_port = free_port()
        peer = start_peer(model, args.threads, peer_port, Path(tmp) / "peer.log")
        servers = {"node": node.api_url, "llama_cpp.server": f"http://127.0.0.1:{peer_port}"}
        assert node.proc is not None
        processes = {
            "node": [psutil.Process(node.proc.pid), *node.descendants()],
            "llama_cpp.server": [psutil.Process(peer.pid)],
        }
        slots = httpx.get(node.api_url + "/health").json()["services"]["inference"][0]["queue"]["slots"]
        results: dict[str, dict[int, list[Level]]] = {name: {n: [] for n in counts} for name in servers}
        try:
            for name, url in servers.items():  # warm both up (first decode allocates buffers)
                asyncio.run(level(url, 1, 4, processes[name]))
            for r in range(args.rounds):
                for n in counts:
                    order = list(servers) if (r + n) % 2 == 0 else list(reversed(servers))
                    for name in order:
                        result = asyncio.run(level(servers[name], n, args.max_tokens, processes[name]))
                        results[name][n].append(result)
                        print(
                            f"round {r + 1} {name:17s} {n} clients: {result.tokens_per_s:6.1f} tok/s, "
                            f"{result.tokens_per_cpu_s:6.1f} tok/CPU-s",
                            file=sys.stderr,
                        )
        finally:
            peer.terminate()
            peer.wait(timeout=30)
            node.stop()
    print(f"\nmodel {model.name}, {args.threads} threads, node slots {slots}, {args.max_tokens} tokens per client, "
          f"{args.rounds} rounds, {os.cpu_count()} cores")
    heads = [f"{name} {unit} (x 1 client)" for unit in ("tok/s", "tok/CPU-s") for name in servers]
    print(f"{'clients':>8} | " + " | ".join(heads))
    for n in counts:
        cells = []
        for unit in ("tokens_per_s", "tokens_per_cpu_s"):
            for name in servers:
                # the ratio per round (both levels of a round saw the same machine), then the median over rounds
                pairs = zip(results[name][n], results[name][1], strict=True)
                ratios = [getattr(lv, unit) / getattr(one, unit) for lv, one in pairs]
                rate = statistics.median(getattr(lv, unit) for lv in results[name][n])
                cells.append(f"{rate:7.1f} ({statistics.median(ratios):.2f}x)")
        print(f"{n:>8} | " + " | ".join(cells))
    top = max(counts)
    for name in servers:
        firsts = [f for lv in results[name][top] for f in lv.first_token_s]
        print(f"time to first token at {top} clients, {name}: p50 {percentile(firsts, 50):.3f} s, "
              f"p95 {percentile(firsts, 95):.3f} s")


if __name__ == "__main__":
    main()
