"""The Proof of Inference score on a toy model: honest answers pass, every kind of lie fails with its reason."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avadios.services.inference.logit_stats import token_stats
from avadios.services.inference.token_text import StopText, answer_text
from avadios.services.verifier import liars
from avadios.services.verifier.score import (
    DEFAULT_POLICY,
    Claim,
    Position,
    Request,
    Rescored,
    ScoringMismatch,
    assess,
)

EOS = 0
VOCAB = [b"", b" Paris", b".", b"\n", b"Q", b":", b" is", b" the", b" capital", b" of", b" France", b" Berlin", b" a"]
STOP = ("\nQ:",)
TOP_K, MIN_P = 6, 0.05
MODEL = blake3.blake3(b"toy model").digest()
OTHER_MODEL = blake3.blake3(b"another toy model").digest()


def piece(token: int) -> bytes:
    return VOCAB[token]


def logits_after(context: tuple[int, ...], model: bytes = MODEL) -> np.ndarray:
    """A deterministic toy model: the logits after `context` come from a hash of model and context."""
    seed = int.from_bytes(blake3.blake3(model + bytes(context)).digest()[:8], "big")
    return (np.random.default_rng(seed).standard_normal(len(VOCAB)) * 2.5).astype(np.float32)


def generate(
    prompt: tuple[int, ...],
    request: Request,
    seed: int = 0,
    noise: float = 0.0,
    model: bytes = MODEL,
) -> Claim:
    """What an honest provider does (with its float noise in the logprobs it reports)."""
    rng = np.random.default_rng(seed)
    tokens: list[int] = []
    logprobs: list[float] = []
    text = StopText(STOP)
    shown, finish = "", "length"
    while len(tokens) < request.max_tokens:
        logits = logits_after(prompt + tuple(tokens), model).astype(np.float64)
        logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        if request.greedy:
            token = int(np.argmax(logits))
        else:  # top-k, then top-p, then min-p on raw probabilities, then temperature: llama.cpp's order
            order = np.argsort(-logits)[:TOP_K]
            probs = np.exp(logp[order]) / np.exp(logp[order]).sum()
            keep = int(np.searchsorted(np.cumsum(probs), request.top_p) + 1)
            order = order[: max(1, keep)]
            order = order[logits[order] >= logits[order[0]] + math.log(MIN_P)]
            weights = np.exp((logits[order] - logits[order[0]]) / request.temperature)
            token = int(rng.choice(order, p=weights / weights.sum()))
        tokens.append(token)
        logprobs.append(min(0.0, float(logp[token]) + float(rng.uniform(-noise, noise))))
        if token == EOS:
            finish = "stop"
            break
        shown += text.feed(piece(token))
        if text.stopped:
            finish = "stop"
            break
    shown += text.finish()
    return Claim(model, tuple(tokens), shown, tuple(logprobs), len(prompt), len(tokens), finish)


def rescore(prompt: tuple[int, ...], claim: Claim, model: bytes = MODEL) -> Rescored:
    """What Inference.Score returns for the claimed tokens."""
    positions = []
    for j, token in enumerate(claim.token_ids):
        s = token_stats(logits_after(prompt + claim.token_ids[:j], model), token, TOP_K)
        positions.append(Position(j, s.logprob, s.rank, s.top_logprob, s.top_k_logprob, s.mass_above, s.top_k_mass))
    return Rescored(
        model_hash=model,
        prompt_tokens=len(prompt),
        pieces=tuple(piece(t) for t in claim.token_ids),
        end_of_generation=tuple(t == EOS for t in claim.token_ids),
        stop=STOP,
        positions=tuple(positions),
        top_k=TOP_K,
        min_p=MIN_P,
    )


PROMPT = (4, 5, 7, 8, 9, 10, 4)
GREEDY = Request(MODEL, max_tokens=12, temperature=0.0)
SAMPLED = Request(MODEL, max_tokens=12, temperature=0.9, top_p=0.95)


def judge(request: Request, claim: Claim, prompt: tuple[int, ...] = PROMPT) -> tuple[bool, str]:
    result = assess(request, claim, rescore(prompt, claim))
    return result.passed, result.reason


prompts = st.lists(st.integers(1, len(VOCAB) - 1), min_size=1, max_size=8).map(tuple)


@settings(max_examples=60)
@given(prompts, st.integers(0, 2**32), st.booleans())
def test_an_honest_answer_passes_with_float_noise_in_its_logprobs(
    prompt: tuple[int, ...], seed: int, greedy: bool
) -> None:
    request = GREEDY if greedy else SAMPLED
    claim = generate(prompt, request, seed=seed, noise=0.1)
    result = assess(request, claim, rescore(prompt, claim))
    assert result.passed, result.reason
    assert 0.85 < result.score <= 1.0


def test_an_exact_honest_answer_scores_one() -> None:
    claim = generate(PROMPT, GREEDY)
    result = assess(GREEDY, claim, rescore(PROMPT, claim))
    assert result.passed and result.score == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=40)
@given(prompts, st.integers(0, 2**32))
def test_random_tokens_fail(prompt: tuple[int, ...], seed: int) -> None:
    honest = generate(prompt, GREEDY)
    lie = liars.random_text(honest, random.Random(seed), len(VOCAB), piece, STOP, GREEDY.max_tokens)
    assert not judge(GREEDY, lie, prompt)[0]


def test_another_models_answer_under_the_claimed_hash_fails() -> None:
    honest = generate(PROMPT, GREEDY)
    other = generate(PROMPT, replace(GREEDY, model_hash=OTHER_MODEL), model=OTHER_MODEL)
    passed, reason = judge(GREEDY, liars.wrong_model(honest, other))
    assert not passed and "greedy choice" in reason


def test_an_answer_labelled_with_another_model_fails_before_any_scoring() -> None:
    honest = generate(PROMPT, GREEDY)
    result = assess(GREEDY, replace(honest, model_hash=OTHER_MODEL), rescore(PROMPT, honest))
    assert not result.passed and "another model" in result.reason


@pytest.mark.parametrize("seed", range(20))
def test_a_truncated_answer_ended_with_an_end_token_fails(seed: int) -> None:
    honest = generate(PROMPT, GREEDY)
    lie = liars.truncated(honest, random.Random(seed), EOS, piece, STOP)
    assert lie is not None
    passed, reason = judge(GREEDY, lie)
    assert not passed and "greedy choice" in reason


def test_a_truncated_answer_that_still_says_stop_fails_on_its_finish() -> None:
    honest = generate(PROMPT, GREEDY)
    cut = honest.token_ids[:3]
    text, _ = answer_text([piece(t) for t in cut], STOP)
    lie = replace(honest, token_ids=cut, text=text, logprobs=honest.logprobs[:3], completion_tokens=3)
    passed, reason = judge(GREEDY, replace(lie, finish_reason="stop"))
    assert not passed and "truncated" in reason
    passed, reason = judge(GREEDY, replace(lie, finish_reason="length"))
    assert not passed and "max_tokens" in reason


def test_an_answer_to_another_prompt_fails() -> None:
    honest = generate(PROMPT, GREEDY)
    elsewhere = generate((4, 11, 12, 4), GREEDY)
    assert elsewhere.token_ids != honest.token_ids
    assert not judge(GREEDY, liars.copied(honest, elsewhere))[0]
    assert not judge(GREEDY, liars.cached(honest, elsewhere))[0]


@pytest.mark.parametrize("seed", range(30))
def test_made_up_logprobs_on_honest_tokens_fail(seed: int) -> None:
    honest = generate(PROMPT, GREEDY)
    passed, reason = judge(GREEDY, liars.fake_logprobs(honest, random.Random(seed)))
    assert not passed and "logprob" in reason


def test_text_that_is_not_the_tokens_text_fails() -> None:
    honest = generate(PROMPT, GREEDY)
    passed, reason = judge(GREEDY, replace(honest, text=honest.text + " Berlin"))
    assert not passed and "text" in reason


def test_usage_that_does_not_fit_fails() -> None:
    honest = generate(PROMPT, GREEDY)
    assert "completion tokens" in judge(GREEDY, replace(honest, completion_tokens=len(honest.token_ids) + 1))[1]
    assert "prompt tokens" in judge(GREEDY, replace(honest, prompt_tokens=len(PROMPT) - 1))[1]


def test_an_end_token_in_the_middle_fails() -> None:
    honest = generate(PROMPT, GREEDY)
    tokens = (*honest.token_ids[:2], EOS, *honest.token_ids[2:])[: GREEDY.max_tokens]
    lie = replace(honest, token_ids=tokens, logprobs=(-0.1,) * len(tokens), completion_tokens=len(tokens))
    assert "before the end" in judge(GREEDY, lie)[1]


def test_more_tokens_than_asked_for_fail() -> None:
    request = replace(GREEDY, max_tokens=40)
    honest = generate(PROMPT, request)
    assert not judge(replace(request, max_tokens=len(honest.token_ids) - 1), honest)[0]


def test_a_stop_string_before_the_last_token_fails() -> None:
    # tokens "\n", "Q", ":" complete the stop string; anything after it was never generated
    tokens = (1, 3, 4, 5, 2)
    claim = Claim(MODEL, tokens, " Paris", (-0.1,) * 5, len(PROMPT), 5, "stop")
    passed, reason = judge(replace(GREEDY, temperature=1.0), claim)
    assert not passed and "stop string appears before" in reason


def test_a_logprob_that_is_not_a_log_probability_fails() -> None:
    honest = generate(PROMPT, GREEDY)
    for bad in (math.nan, math.inf, 0.5):
        assert "log-probability" in judge(GREEDY, replace(honest, logprobs=(bad, *honest.logprobs[1:])))[1]


def test_a_rescoring_of_other_tokens_or_without_the_last_token_is_a_caller_error() -> None:
    honest = generate(PROMPT, GREEDY)
    scored = rescore(PROMPT, honest)
    with pytest.raises(ScoringMismatch):
        assess(GREEDY, honest, replace(scored, positions=scored.positions[:-1]))
    with pytest.raises(ScoringMismatch):
        assess(GREEDY, honest, replace(scored, model_hash=OTHER_MODEL))
    with pytest.raises(ScoringMismatch):
        assess(GREEDY, honest, replace(scored, pieces=scored.pieces[:-1]))


def test_spot_checked_positions_are_enough_when_the_last_one_is_among_them() -> None:
    honest = generate(PROMPT, GREEDY)
    scored = rescore(PROMPT, honest)
    some = tuple(p for p in scored.positions if p.index % 3 == 0 or p.index == len(honest.token_ids) - 1)
    result = assess(GREEDY, honest, replace(scored, positions=some))
    assert result.passed and result.positions <= len(honest.token_ids)


def test_the_allowed_gap_shrinks_toward_its_floor_as_answers_grow() -> None:
    gaps = [DEFAULT_POLICY.allowed_mean_gap(n) for n in (1, 4, 16, 64, 1024)]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] == pytest.approx(DEFAULT_POLICY.gap_floor, abs=0.01)
    assert DEFAULT_POLICY.threshold(16) == pytest.approx(math.exp(-DEFAULT_POLICY.allowed_mean_gap(16)))
