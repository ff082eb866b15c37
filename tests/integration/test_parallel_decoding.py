"""Parallel decoding on the real model: answers decoded together equal the same prompts decoded alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from avadios.services.inference.batch import BatchEngine, BatchSampling
from avadios.services.inference.engine import SAMPLER_MIN_P, SAMPLER_TOP_K, Engine, Sampling

PROMPTS = (
    "Q: What is the capital of France?\nA:",
    "Q: Name three colours.\nA:",
    "The history of Rome begins",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "Q: How many legs does a spider have?\nA:",
    "The best way to learn a language is",
    "Water boils at",
)
TOKENS = 24
SLOTS = 4  # the automatic maximum (config.MAX_AUTO_PARALLEL)


@pytest.fixture(scope="module")
async def engine(default_model: Path) -> AsyncIterator[Engine]:
    engine = await Engine.load(default_model, 1024, 2)
    yield engine
    engine.close()


async def alone(engine: Engine, prompt: str, sampling: Sampling) -> str:
    """The single-sequence path from an empty cache: what a request on an idle replica gets."""
    engine.llm.n_tokens = 0
    return "".join([p.text async for p in engine.generate(engine.tokenize_prompt(prompt), sampling)])


async def together(engine: Engine, prompts: tuple[str, ...], sampling: Sampling) -> list[str]:
    batch = BatchEngine(engine.llm, SLOTS, 1024, engine.threads)
    plain = BatchSampling(
        sampling.max_tokens, sampling.temperature, sampling.top_p, sampling.seed, (), SAMPLER_TOP_K, SAMPLER_MIN_P
    )

    async def one(prompt: str) -> str:
        return "".join([p.text async for p in batch.generate(engine.tokenize_prompt(prompt), plain)])

    try:
        return list(await asyncio.gather(*(one(p) for p in prompts)))
    finally:
        batch.close()


async def test_greedy_answers_decoded_in_parallel_equal_the_single_sequence_answers(engine: Engine) -> None:
    greedy = Sampling(TOKENS, 0.0, 1.0, None, ())
    expected = [await alone(engine, p, greedy) for p in PROMPTS]
    got = await together(engine, PROMPTS, greedy)  # 8 prompts through 4 slots: joins and leaves mid-batch
    assert all(expected), expected
    assert got == expected


async def test_seeded_sampling_in_parallel_equals_the_single_sequence_answers(engine: Engine) -> None:
    seeded = Sampling(TOKENS, 0.8, 0.95, 1234, ())
    expected = [await alone(engine, p, seeded) for p in PROMPTS[:SLOTS]]
    got = await together(engine, PROMPTS[:SLOTS], seeded)
    assert got == expected
