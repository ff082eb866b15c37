"""Ways to serve N sequences at once in one process, on the same model and prompts, greedy: one after another on
one context (the baseline), the batch engine's slots (one `llama_batch` per step over a second context sharing
the weights), and N plain `Llama` objects decoding in N threads (N copies of the context, N x the threads).

    .venv/bin/python -m bench.parallel_engines [--rounds 3] [--sequences 4] [--max-tokens 32] [--threads 2]

Aggregate decode tokens/s of each way ÷ the baseline's, alternating the ways in every round (medians over the
rounds), and whether each way's answers equal the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from pathlib import Path

from llama_cpp import Llama

from avadios.config import NodeConfig
from avadios.models import default_model_path
from avadios.services.inference.batch import BatchEngine, BatchSampling
from avadios.services.inference.engine import SAMPLER_MIN_P, SAMPLER_TOP_K, Engine, Sampling
from bench.concurrency import prompt


async def sequential(engine: Engine, prompts: list[str], max_tokens: int) -> list[str]:
    answers = []
    for text in prompts:
        engine.llm.n_tokens = 0
        greedy = Sampling(max_tokens, 0.0, 1.0, None, ())
        answers.append("".join([p.text async for p in engine.generate(engine.tokenize_prompt(text), greedy)]))
    return answers


async def batched(engine: Engine, batch: BatchEngine, prompts: list[str], max_tokens: int) -> list[str]:
    greedy = BatchSampling(max_tokens, 0.0, 1.0, None, (), SAMPLER_TOP_K, SAMPLER_MIN_P)

    async def one(text: str) -> str:
        return "".join([p.text async for p in batch.generate(engine.tokenize_prompt(text), greedy)])

    return list(await asyncio.gather(*(one(t) for t in prompts)))


def plain_objects(llms: list[Llama], prompts: list[str], max_tokens: int) -> list[str]:
    answers = [""] * len(prompts)

    def run(i: int) -> None:
        llms[i].n_tokens = 0
        reply = llms[i].create_completion(prompts[i], max_tokens=max_tokens, temperature=0.0, top_k=40, min_p=0.05)
        answers[i] = reply["choices"][0]["text"]  # type: ignore[index]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    path = default_model_path(NodeConfig())
    prompts = [prompt(i) for i in range(args.sequences)]
    engine = Engine(path, 1024, args.threads)
    batch = BatchEngine(engine.llm, args.sequences, 1024, args.threads)
    # Each plain object gets its share of the cores, as N replicas would.
    share = max(1, args.threads // args.sequences)
    llms = [Llama(str(Path(path)), n_ctx=1024, n_threads=share, n_threads_batch=share, verbose=False)
            for _ in range(args.sequences)]
    tokens = args.sequences * args.max_tokens
    rates: dict[str, list[float]] = {"one after another": [], "batch engine": [], "plain Llama objects": []}
    equal: dict[str, bool] = {name: True for name in rates}
    ways = {
        "one after another": lambda: asyncio.run(sequential(engine, prompts, args.max_tokens)),
        "batch engine": lambda: asyncio.run(batched(engine, batch, prompts, args.max_tokens)),
        "plain Llama objects": lambda: plain_objects(llms, prompts, args.max_tokens),
    }
    expected = ways["one after another"]()
    for r in range(args.rounds):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        for name in order:
            started = time.perf_counter()
            answers = ways[name]()
            rates[name].append(tokens / (time.perf_counter() - started))
            equal[name] = equal[name] and answers == expected
    batch.close()
    engine.close()
    base = statistics.median(rates["one after another"])
    print(f"{args.sequences} sequences x {args.max_tokens} tokens, {args.threads} threads, {args.rounds} rounds "
          "(tokens/s counts max_tokens per sequence)")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:20s} {rate:7.1f} tok/s  x{rate / base:.2f}  answers equal to one after another: {equal[name]}")


if __name__ == "__main__":
    main()
