"""The tier pipeline without HTTP: which tier answers, what tier 0 keeps, and errors before the first chunk."""

from __future__ import annotations

import asyncio

import pytest

from avadios.errors import Busy, NotFound, Unavailable
from avadios.services.gateway.pipeline import CachePolicy, Tier
from avadios.v1 import inference_pb2
from tests.gateway_fakes import MODEL, FakeCache, FakeInference, fake_pipeline


def ask(text: str, temperature: float = 0.0, model: str = "", seed: int | None = None) -> inference_pb2.GenerateRequest:
    sampling = inference_pb2.SamplingParams(temperature=temperature)
    if seed is not None:
        sampling.seed = seed
    chat = inference_pb2.ChatPrompt(messages=[inference_pb2.ChatMessage(role="user", content=text)])
    return inference_pb2.GenerateRequest(request_id="r", model=model, sampling=sampling, chat=chat)


async def settle() -> None:
    await asyncio.sleep(0.01)  # tier 0 stores run in the background


async def test_a_greedy_answer_comes_from_the_model_then_from_tier_0_with_the_same_text() -> None:
    inference, cache = FakeInference(), FakeCache()
    pipeline = fake_pipeline(inference, cache)
    first = await pipeline.answer(ask("capital of France?"))
    assert (first.tier, first.model) == (Tier.LOCAL, MODEL)
    done = await first.collect()
    assert done.text == "Paris" and done.last.finish_reason == "stop"
    await settle()
    again = await pipeline.answer(ask("capital of France?", model="default"))  # the default model, by name
    assert again.tier is Tier.CACHE
    replay = await again.collect()
    assert replay.text == "Paris" and replay.last.usage.completion_tokens == 2
    assert len(inference.requests) == 1


async def test_sampling_without_a_seed_never_touches_tier_0_but_a_seed_does() -> None:
    inference, cache = FakeInference(), FakeCache()
    pipeline = fake_pipeline(inference, cache)
    for _ in range(2):
        await (await pipeline.answer(ask("story", temperature=0.8))).collect()
        await settle()
    assert cache.lookups == 0 and not cache.entries
    await (await pipeline.answer(ask("story", temperature=0.8, seed=7))).collect()
    await settle()
    assert (await pipeline.answer(ask("story", temperature=0.8, seed=7))).tier is Tier.CACHE


async def test_the_cache_policy_skips_lookup_or_store() -> None:
    inference, cache = FakeInference(), FakeCache()
    pipeline = fake_pipeline(inference, cache)
    await (await pipeline.answer(ask("q"), CachePolicy(lookup=False, store=False))).collect()
    await settle()
    assert not cache.entries and cache.lookups == 0
    await (await pipeline.answer(ask("q"), CachePolicy(lookup=False))).collect()
    await settle()
    assert len(cache.entries) == 1 and cache.lookups == 0  # a fresh answer refreshes tier 0
    assert (await pipeline.answer(ask("q"), CachePolicy(lookup=False))).tier is Tier.LOCAL
    assert (await pipeline.answer(ask("q"))).tier is Tier.CACHE


async def test_errors_surface_before_the_first_chunk() -> None:
    pipeline = fake_pipeline(FakeInference(), FakeCache())
    with pytest.raises(NotFound, match="'nope' does not exist"):
        await pipeline.answer(ask("q", model="nope"))
    busy = fake_pipeline(FakeInference(error=Busy("queue full")), FakeCache())
    with pytest.raises(Busy):
        await busy.answer(ask("q", temperature=0.5))
    empty = fake_pipeline(FakeInference(pieces=()), FakeCache())
    empty_answer = await empty.answer(ask("q", temperature=0.5))  # a finish chunk alone is still an answer
    assert (await empty_answer.collect()).text == ""


async def test_a_stream_that_ends_without_any_chunk_is_unavailable() -> None:
    inference = FakeInference()

    def nothing(request: inference_pb2.GenerateRequest, **_: object) -> object:
        async def chunks():
            return
            yield

        return chunks()

    inference.Generate = nothing  # type: ignore[assignment, method-assign]
    with pytest.raises(Unavailable, match="without an answer"):
        await fake_pipeline(inference, FakeCache()).answer(ask("q"))
