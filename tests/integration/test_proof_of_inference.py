"""Proof of Inference on the real default model, through the inference service over NATS: providers' signed
answers (Generate with want_tokens), the requester's re-scoring (Score), the score, signed reports, the majority."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import grpc
import pytest
import pytest_asyncio
from nacl.signing import SigningKey

from avadios.config import NodeConfig
from avadios.errors import RpcError
from avadios.identity import Identity
from avadios.runtime import ServiceContext
from avadios.services.inference.chat_format import Message
from avadios.services.inference.engine import Engine, Sampling
from avadios.services.inference.service import InferenceRoom
from avadios.services.verifier import liars
from avadios.services.verifier.replay import nats_to_pick, uniforms
from avadios.services.verifier.score import Assessment, Claim, Request, Rescored, assess
from avadios.services.verifier.signing import check_report, check_result, new_result, report_for, sign_result
from avadios.services.verifier.verdict import Candidate, candidate, decide
from avadios.testing.requantize import requantize
from avadios.testing.tiny_gguf import write_tiny_gguf
from avadios.transport import NatsChannel, NatsServer, connect
from avadios.v1 import common_pb2, inference_pb2, verifier_pb2
from avadios.v1.inference_nats import InferenceClient
from tests.helpers import NatsProcess

pytestmark = pytest.mark.slow

INFERENCE = inference_pb2.DESCRIPTOR.services_by_name["Inference"]
MAX_TOKENS = 12


@dataclass
class Setup:
    room: InferenceRoom
    stub: InferenceClient
    model_hash: bytes

    @property
    def engine(self) -> Engine:
        assert self.room._engine is not None
        return self.room._engine


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsProcess]:
    server = NatsProcess()
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module")
async def setup(
    nats: NatsProcess, default_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    home = tmp_path_factory.mktemp("home")
    config = NodeConfig(home=home, default_model_path=str(default_model), inference_threads=2, context_length=1024)
    server_nc = await connect(nats.url, "inference")
    room = await InferenceRoom.create(ServiceContext("inference", config, 0, "node", server_nc, time.monotonic()))
    await room.start()
    assert room._load_task is not None
    await room._load_task
    assert room.health().status == common_pb2.HealthReply.SERVING, room.health().detail
    server = NatsServer(server_nc, "inference", INFERENCE, room)
    await server.start()
    client_nc = await connect(nats.url, "requester")
    stub = InferenceClient(NatsChannel(client_nc))
    model_hash = await asyncio.to_thread(lambda: blake3.blake3(default_model.read_bytes()).digest())
    yield Setup(room, stub, model_hash)
    await server.stop()
    await room.stop()
    await client_nc.close()
    await server_nc.close()


def _identity() -> Identity:
    return Identity(SigningKey.generate())


def _chat(question: str) -> inference_pb2.ChatPrompt:
    return inference_pb2.ChatPrompt(messages=[inference_pb2.ChatMessage(role="user", content=question)])


def _sampling(temperature: float = 0.0, seed: int | None = None, top_p: float = 0.0) -> inference_pb2.SamplingParams:
    params = inference_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=temperature, top_p=top_p)
    if seed is not None:
        params.seed = seed
    return params


def _request(setup: Setup, params: inference_pb2.SamplingParams) -> Request:
    seed = params.seed if params.HasField("seed") else None
    return Request(setup.model_hash, params.max_tokens, params.temperature, params.top_p or 1.0, seed)


async def provide(
    setup: Setup, provider: Identity, question: str, params: inference_pb2.SamplingParams, request_id: str = "job-1"
) -> verifier_pb2.ProviderResult:
    """What an honest provider does: generate with want_tokens, sign the result."""
    generate = inference_pb2.GenerateRequest(
        request_id=request_id, chat=_chat(question), sampling=params, want_tokens=True
    )
    chunks = [c async for c in setup.stub.Generate(generate)]
    return sign_result(provider, new_result(request_id, chunks[-1].model_hash, chunks, price=1200))


async def rescore(setup: Setup, result: verifier_pb2.ProviderResult, question: str, want_top: bool = False) -> Rescored:
    score = inference_pb2.ScoreRequest(
        request_id=result.request_id, chat=_chat(question), token_ids=result.token_ids, want_top=want_top
    )
    return Rescored.from_reply(await setup.stub.Score(score))


async def verify(
    setup: Setup, result: verifier_pb2.ProviderResult, question: str, params: inference_pb2.SamplingParams
) -> Assessment:
    """What the requester does with a result: check it at the door, re-score it, assess it."""
    check_result(result, request_id=result.request_id, model_hash=setup.model_hash)
    request = _request(setup, params)
    rescored = await rescore(setup, result, question, want_top=request.replayable)
    return assess(request, Claim.from_result(result), rescored)


QUESTIONS = ["What is the capital of France?", "Name a large animal.", "Why is the sky blue?"]


async def test_a_provider_answer_carries_every_token_with_its_logprob_and_repeats_exactly(setup: Setup) -> None:
    provider = _identity()
    first = await provide(setup, provider, QUESTIONS[0], _sampling())
    again = await provide(setup, provider, QUESTIONS[0], _sampling())
    assert "Paris" in first.text
    assert first.model_hash == setup.model_hash
    assert len(first.token_ids) == len(first.logprobs) == first.usage.completion_tokens > 0
    assert all(x <= 0.0 for x in first.logprobs)
    assert (list(again.token_ids), list(again.logprobs), again.text) == (
        list(first.token_ids),
        list(first.logprobs),
        first.text,
    )


async def test_a_plain_generate_carries_no_tokens(setup: Setup) -> None:
    chunks = [c async for c in setup.stub.Generate(inference_pb2.GenerateRequest(chat=_chat(QUESTIONS[0])))]
    assert "Paris" in "".join(c.text for c in chunks)
    assert not any(c.token_ids or c.logprobs or c.model_hash for c in chunks)


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize(("temperature", "seed", "top_p"), [(0.0, None, 0.0), (0.8, 11, 0.95), (1.0, 5, 0.0)])
async def test_honest_answers_pass_greedy_and_seeded_sampling(
    setup: Setup, question: str, temperature: float, seed: int | None, top_p: float
) -> None:
    params = _sampling(temperature, seed, top_p)
    result = await provide(setup, _identity(), question, params)
    assessment = await verify(setup, result, question, params)
    assert assessment.passed, assessment.reason
    assert assessment.positions == len(result.token_ids)


@pytest.mark.parametrize("seed", [1, 77, 4096, 2**31 - 1])
async def test_a_seeded_answers_first_token_replays_exactly_and_every_token_is_the_samplers_pick(
    setup: Setup, seed: int
) -> None:
    params = _sampling(1.0, seed, 0.95)
    result = await provide(setup, _identity(), "Tell me about the ocean.", params)
    rescored = await rescore(setup, result, "Tell me about the ocean.", want_top=True)
    draws = uniforms(seed, len(result.token_ids))
    first = rescored.positions[0]
    assert nats_to_pick(result.token_ids[0], first.top_ids, first.top_logprobs, draws[0], 1.0, 0.95, 0.05) == 0.0
    assessment = assess(_request(setup, params), Claim.from_result(result), rescored)
    assert assessment.passed, assessment.reason
    assert assessment.replay_nats <= 0.25


@pytest.fixture(scope="module")
def wrong_models(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wrong-models")
    return {
        "tiny": write_tiny_gguf(folder / "tiny.gguf"),
        "q2_k": requantize(default_model, folder / "q2_k.gguf", "Q2_K", threads=2),
    }


async def _other_model_answer(path: Path, question: str, temperature: float, seed: int | None) -> Claim:
    other = await Engine.load(path, 512, 2)
    try:
        tokens, stop = other.render_chat([Message("user", question)])
        sampling = Sampling(MAX_TOKENS, temperature, 1.0, seed, stop)
        pieces = [p async for p in other.generate(tokens, sampling, want_tokens=True)]
    finally:
        other.close()
    ids = tuple(t for p in pieces for t in p.token_ids)
    return Claim(b"", ids, "", tuple(x for p in pieces for x in p.logprobs), 0, len(ids), pieces[-1].finish_reason)


LIES = [
    liars.RANDOM,
    f"{liars.WRONG_MODEL}:tiny",
    f"{liars.WRONG_MODEL}:q2_k",
    liars.TRUNCATED,
    liars.COPY,
    liars.CACHED,
    liars.FAKE_LOGPROBS,
]


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "seeded"])
@pytest.mark.parametrize("kind", LIES)
async def test_every_kind_of_liar_fails_verification(
    setup: Setup, wrong_models: dict[str, Path], kind: str, greedy: bool
) -> None:
    question = "Why is the sky blue?"
    params = _sampling(0.0) if greedy else _sampling(0.8, 21)
    honest_result = await provide(setup, _identity(), question, params)
    honest = Claim.from_result(honest_result)
    engine, rng = setup.engine, random.Random(kind)
    _, stop = engine.render_chat([Message("user", question)])
    piece = engine.piece
    if kind == liars.RANDOM:
        lie = liars.random_text(honest, rng, engine.n_vocab, piece, stop, MAX_TOKENS)
    elif kind.startswith(liars.WRONG_MODEL):
        other = await _other_model_answer(wrong_models[kind.split(":")[1]], question, params.temperature, 21)
        lie = liars.wrong_model(honest, other, piece, stop, MAX_TOKENS)
    elif kind == liars.TRUNCATED:
        cut = liars.truncated(honest, rng, engine.llm.token_eos(), piece, stop)
        assert cut is not None
        lie = cut
    elif kind in (liars.COPY, liars.CACHED):
        elsewhere = "What is the capital of France?" if kind == liars.COPY else "Why is the sky grey?"
        earlier = Claim.from_result(await provide(setup, _identity(), elsewhere, params, request_id="job-0"))
        lie = (liars.copied if kind == liars.COPY else liars.cached)(honest, earlier, piece, stop, MAX_TOKENS)
    else:
        lie = liars.fake_logprobs(honest, rng)
    assert lie.token_ids != honest.token_ids or lie.logprobs != honest.logprobs
    result = sign_result(_identity(), liars.to_result(lie, "job-1", price=1))
    assessment = await verify(setup, result, question, params)
    assert not assessment.passed, f"{kind} passed with score {assessment.score:.3f}"
    assert assessment.reason


async def test_two_honest_providers_outvote_a_liar_and_a_liar_majority_fails(setup: Setup) -> None:
    question, params = "What is the capital of France?", _sampling()
    requester = _identity()
    honest_a, honest_b, liar_c, liar_d = (_identity() for _ in range(4))
    results = [await provide(setup, p, question, params) for p in (honest_a, honest_b)]
    other = Claim.from_result(await provide(setup, liar_c, "Name a large animal.", params, request_id="job-0"))
    engine = setup.engine
    _, stop = engine.render_chat([Message("user", question)])
    for liar in (liar_c, liar_d):
        lie = liars.copied(Claim.from_result(results[0]), other, engine.piece, stop, MAX_TOKENS)
        results.append(sign_result(liar, liars.to_result(lie, "job-1", price=1)))

    async def candidates(chosen: list[verifier_pb2.ProviderResult]) -> list[Candidate]:
        out = []
        for result in chosen:
            chosen_keys = {r.provider_key for r in chosen}
            check_result(result, request_id="job-1", model_hash=setup.model_hash, providers=chosen_keys)
            assessment = await verify(setup, result, question, params)
            report = report_for(requester, result, assessment, setup.model_hash)
            check_report(report, result, scorers={requester.public_key})
            out.append(candidate(result, [report]))
        return out

    verdict = decide(await candidates(results[:3]), requested=3, reproducible=True)
    assert verdict.accepted, verdict.reason
    assert set(verdict.agreeing) == {honest_a.public_key, honest_b.public_key}
    assert verdict.failed == (liar_c.public_key,)
    verdict = decide(await candidates([results[0], *results[2:]]), requested=3, reproducible=True)
    assert not verdict.accepted and verdict.answer == b""
    assert set(verdict.failed) == {liar_c.public_key, liar_d.public_key}


async def test_rescoring_does_not_depend_on_what_the_replica_did_before(setup: Setup) -> None:
    result = await provide(setup, _identity(), QUESTIONS[2], _sampling(0.8, 3))
    warm = await rescore(setup, result, QUESTIONS[2], want_top=True)  # right after its generation: prompt re-used
    _ = [c async for c in setup.stub.Generate(inference_pb2.GenerateRequest(chat=_chat(QUESTIONS[0])))]
    cold = await rescore(setup, result, QUESTIONS[2], want_top=True)
    assert warm == cold
    assert abs(warm.positions[0].logprob - result.logprobs[0]) < 1e-6  # the first token's numbers are the generator's


@pytest.mark.parametrize(
    ("token_ids", "positions", "message"),
    [
        ([], [], "nothing to score"),
        ([5, 2**31], [], "vocabulary"),
        ([5, 6, 7], [2, 1], "ascend"),
        ([5, 6, 7], [3], "ascend"),
    ],
)
async def test_score_refuses_what_it_cannot_score(
    setup: Setup, token_ids: list[int], positions: list[int], message: str
) -> None:
    request = inference_pb2.ScoreRequest(chat=_chat("Hi"), token_ids=token_ids, positions=positions)
    with pytest.raises(RpcError) as err:
        await setup.stub.Score(request)
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT and message in err.value.message
