"""Tokens/s through the whole stack (HTTP -> gateway -> NATS -> inference) against llama-cpp-python called
directly on the same model, prompt and greedy settings, and the latency the stack adds to a 1-token request.

    .venv/bin/python -m bench.stack_vs_direct [--rounds 5] [--latency-samples 60] [--threads 2]

Both sides stream and run interleaved in the same run, so machine noise hits both alike. The node's
tier 0 cache is bypassed (Cache-Control: no-cache) so every stack request really runs the model.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
from llama_cpp import Llama

from avadios.config import NodeConfig
from avadios.models import default_model_path
from bench.common import percentile, summary_ms
from tests.helpers import Node

PROMPT = "Q: Write a long story about a lighthouse keeper and the sea.\nA:"


def direct_decode(llm: Llama, max_tokens: int) -> tuple[int, float, float]:
    """(tokens, seconds from first to last token, seconds to first token) for one streamed greedy completion."""
    started = time.perf_counter()
    first = last = 0.0
    pieces = 0
    for chunk in llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True):
        now = time.perf_counter()
        if chunk["choices"][0]["text"]:  # type: ignore[index]
            pieces += 1
            first = first or now
            last = now
    return pieces, last - first, first - started


def stack_decode(client: httpx.Client, max_tokens: int) -> tuple[int, float, float]:
    body = {"model": "default", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = last = 0.0
    pieces = 0
    with client.stream("POST", "/v1/completions", json=body, headers={"Cache-Control": "no-cache"}) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"]:
                now = time.perf_counter()
                pieces += 1
                first = first or now
                last = now
    return pieces, last - first, first - started


def one_token_direct(llm: Llama) -> float:
    started = time.perf_counter()
    llm.create_completion(PROMPT, max_tokens=1, temperature=0.0)
    return time.perf_counter() - started


def one_token_stack(client: httpx.Client) -> float:
    body = {"model": "default", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    started = time.perf_counter()
    reply = client.post("/v1/completions", json=body, headers={"Cache-Control": "no-cache"})
    reply.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--latency-samples", type=int, default=60)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    model = default_model_path(NodeConfig())
    llm = Llama(model_path=str(model), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    with tempfile.TemporaryDirectory() as home:
        node = Node(Path(home), env={"AVADIOS_INFERENCE_THREADS": str(args.threads)}).start()
        try:
            client = httpx.Client(base_url=node.api_url, timeout=300)
            stack_decode(client, 8)  # warm both sides
            direct_decode(llm, 8)
            direct_rates, stack_rates = [], []
            for _ in range(args.rounds):
                n, seconds, _ = direct_decode(llm, args.max_tokens)
                direct_rates.append((n - 1) / seconds)
                n_stack, seconds, _ = stack_decode(client, args.max_tokens)
                stack_rates.append((n_stack - 1) / seconds)
                assert n_stack == n, f"the stack produced {n_stack} pieces, direct {n}: not the same generation"
            direct_latency, stack_latency = [], []
            for _ in range(args.latency_samples):
                direct_latency.append(one_token_direct(llm))
                stack_latency.append(one_token_stack(client))
        finally:
            node.stop()

    direct = percentile(direct_rates, 50)
    stack = percentile(stack_rates, 50)
    print(f"model {model.name}, threads {args.threads}, {args.max_tokens} greedy tokens, {args.rounds} rounds")
    print(f"decode direct (llama-cpp-python): {direct:.1f} tok/s (median)")
    print(f"decode whole stack (HTTP->gateway->NATS->inference): {stack:.1f} tok/s (median)")
    print(f"ratio stack/direct: {stack / direct:.3f} (goal >= 0.95)")
    print(f"1-token request direct: {summary_ms(direct_latency)}")
    print(f"1-token request stack:  {summary_ms(stack_latency)}")
    added_p50 = (percentile(stack_latency, 50) - percentile(direct_latency, 50)) * 1000
    added_p99 = (percentile(stack_latency, 99) - percentile(direct_latency, 99)) * 1000
    print(f"added latency of the stack: p50 {added_p50:.2f} ms, p99 {added_p99:.2f} ms (goal p50 <= 3 ms)")


if __name__ == "__main__":
    main()
