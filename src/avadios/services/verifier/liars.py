"""Lying providers for tests, the benchmark and the devnet's test-only fault setting: each kind of lie, made from
an honest answer (pure: randomness, tokens' text and other answers are passed in).

Every liar here is as strong as its kind allows: its text is the text of its tokens, its usage and finish reason
fit its tokens, and it reports the claimed model's prompt length (tokenizing is cheap), so the only thing left
to catch is the lie itself.

    random          random token ids, random logprobs, finish "length" at max_tokens
    wrong-model     another model's answer (the tiny test GGUF, a requantization) under the claimed model's hash
    truncated       the honest answer cut short and ended with an end-of-generation token, finish "stop"
    copy            another provider's earlier answer to a different prompt, re-signed as this one's
    cached          an answer to a different (e.g. similar) prompt from the liar's own cache
    fake-logprobs   the honest tokens and text with made-up logprobs (the model was never run: tokens copied)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from avadios.services.inference.token_text import answer_text
from avadios.services.verifier.score import Claim
from avadios.v1 import verifier_pb2

RANDOM = "random"
WRONG_MODEL = "wrong-model"
TRUNCATED = "truncated"
COPY = "copy"
CACHED = "cached"
FAKE_LOGPROBS = "fake-logprobs"
KINDS = (RANDOM, WRONG_MODEL, TRUNCATED, COPY, CACHED, FAKE_LOGPROBS)

Piece = Callable[[int], bytes]  # a token's text bytes under the claimed model's vocabulary


def random_text(
    honest: Claim, rng: random.Random, vocab_size: int, piece: Piece, stop: Sequence[str], max_tokens: int
) -> Claim:
    tokens = tuple(rng.randrange(vocab_size) for _ in range(max_tokens))
    text, _ = answer_text([piece(t) for t in tokens], stop)
    return replace(
        honest,
        token_ids=tokens,
        text=text,
        logprobs=tuple(rng.uniform(-3.0, 0.0) for _ in tokens),
        completion_tokens=len(tokens),
        finish_reason="length",
    )


def other_answer(honest: Claim, other: Claim) -> Claim:
    """`other` (another model's answer, or an answer to another prompt) passed off as the honest answer:
    the claimed model and this prompt's length are the honest ones, everything the model said is `other`'s."""
    return replace(other, model_hash=honest.model_hash, prompt_tokens=honest.prompt_tokens)


def wrong_model(honest: Claim, other_model_answer: Claim) -> Claim:
    return other_answer(honest, other_model_answer)


def copied(honest: Claim, earlier_answer: Claim) -> Claim:
    return other_answer(honest, earlier_answer)


def cached(honest: Claim, cached_answer: Claim) -> Claim:
    return other_answer(honest, cached_answer)


def truncated(honest: Claim, rng: random.Random, end_token: int, piece: Piece, stop: Sequence[str]) -> Claim | None:
    """The honest answer cut after a random number of its tokens and ended there with `end_token`; None when
    the answer is too short to cut (one token and its end)."""
    body = honest.token_ids[:-1] if honest.finish_reason == "stop" else honest.token_ids
    if len(body) < 2:
        return None
    keep = rng.randrange(1, len(body))
    tokens = (*body[:keep], end_token)
    text, _ = answer_text([piece(t) for t in body[:keep]], stop)
    # The end token's logprob is a guess: the logprob of the token it replaced looks like a real number there.
    logprobs = (*honest.logprobs[:keep], honest.logprobs[keep])
    return replace(
        honest, token_ids=tokens, text=text, logprobs=logprobs, completion_tokens=len(tokens), finish_reason="stop"
    )


def fake_logprobs(honest: Claim, rng: random.Random) -> Claim:
    """Made-up numbers in one of three styles: one constant, uniform noise, or 'confident' small values."""
    n = len(honest.token_ids)
    style = rng.randrange(3)
    if style == 0:
        value = rng.uniform(-1.0, 0.0)
        fakes = tuple(value for _ in range(n))
    elif style == 1:
        fakes = tuple(rng.uniform(-2.5, 0.0) for _ in range(n))
    else:
        fakes = tuple(-abs(rng.gauss(0.0, 0.3)) for _ in range(n))
    return replace(honest, logprobs=fakes)


def replayed(earlier: verifier_pb2.ProviderResult, request_id: str) -> verifier_pb2.ProviderResult:
    """Another provider's signed result sent again as the answer to `request_id`, its signature untouched."""
    result = verifier_pb2.ProviderResult()
    result.CopyFrom(earlier)
    result.request_id = request_id
    return result


def to_result(claim: Claim, request_id: str, price: int) -> verifier_pb2.ProviderResult:
    """An unsigned ProviderResult saying what `claim` says (sign it with signing.sign_result)."""
    result = verifier_pb2.ProviderResult(
        request_id=request_id,
        model_hash=claim.model_hash,
        token_ids=claim.token_ids,
        text=claim.text,
        logprobs=claim.logprobs,
        finish_reason=claim.finish_reason,
        price=price,
    )
    result.usage.prompt_tokens = claim.prompt_tokens
    result.usage.completion_tokens = claim.completion_tokens
    return result
