"""The Proof of Inference score: a provider's claimed answer against a teacher-forced re-scoring of it (pure).

The provider generated token by token and reports, per token, the log-probability the model gave the chosen
token at that moment (GenerateChunk.logprobs). The scorer runs the declared model once over prompt + the
claimed tokens (Inference.Score) and gets, per position, the same log-probability, the token's rank and the
sampler's cut-offs. An honest answer differs from its re-scoring only by float noise: one batched prefill does
not round like one-token decoding (measured here: mean |Δ| ≈ 0.05 nats per answer, single tokens up to ≈ 0.5,
and the greedy token is not always the re-scored top-1 where two tokens are within ≈ 0.3 nats).

`assess` fails an answer on the first of these that does not hold (the reason names it), in this order:

1. Shape: one logprob per token, at least one token, at most max_tokens, no end-of-generation token before
   the last one, usage = (the scorer's prompt length, the number of tokens).
2. Text: the claimed text is exactly the tokens' text (concatenated pieces, cut before the first stop string,
   UTF-8 with broken sequences dropped), as the generator builds it (src/avadios/services/inference/token_text.py).
3. Finish: "length" needs exactly max_tokens tokens and no stop; "stop" needs the last token to be an
   end-of-generation token or to complete the first stop string. A truncated answer fails here, or, if the
   liar appended an end token where the model would not stop, in step 4.
4. Support, per re-scored position, with `tie` nats of slack for float noise:
   greedy (temperature 0): the token is the best one, or within `tie` of it;
   sampled: the token is inside what the sampler could pick: within the top-k (logprob ≥ the k-th best −
   tie), min-p (logprob ≥ best + ln min_p − tie), and top-p (mass of the tokens above it, renormalized over
   the top-k, below top_p · e^(2·tie)).
5. Logprobs: |claimed − re-scored| ≤ `max_gap` at every position (a single made-up number), and the score
   exp(−mean |claimed − re-scored|) ≥ threshold(n), where n is the number of re-scored positions.

The score is the geometric mean of min(p_claimed, p_rescored) / max(p_claimed, p_rescored) over the tokens:
1.0 for identical numbers, e^(−0.05) ≈ 0.95 for a typical honest answer. One number is noisy over a few tokens,
so the allowed mean gap shrinks with the number of tokens like a mean of noise does:
mean_gap ≤ gap_floor + gap_spread / sqrt(n). Another model than claimed (a requantization of the same weights
included) moves every logprob, so its mean gap stays high however many tokens it writes. The constants and the
margin they leave are measured by bench/poi_rates.py and published in docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from avadios.services.inference.token_text import answer_text
from avadios.v1 import inference_pb2, verifier_pb2

RULE = 1  # bump when the checks or the default policy change: reports carry it


class ScoringMismatch(ValueError):
    """The re-scoring does not fit the claim (another model, other tokens or positions): a caller error, not a
    verdict on the provider."""


@dataclass(frozen=True, slots=True)
class Request:
    """What the requester asked for: the verifier judges answers against this, never against the claim."""

    model_hash: bytes
    max_tokens: int
    temperature: float  # 0 = greedy
    top_p: float = 1.0  # 1.0 = off

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True, slots=True)
class Claim:
    """What a provider says it generated."""

    model_hash: bytes
    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

    @classmethod
    def from_result(cls, result: verifier_pb2.ProviderResult) -> Claim:
        return cls(
            model_hash=result.model_hash,
            token_ids=tuple(result.token_ids),
            text=result.text,
            logprobs=tuple(result.logprobs),
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            finish_reason=result.finish_reason,
        )


@dataclass(frozen=True, slots=True)
class Position:
    """One re-scored candidate token (inference TokenScore)."""

    index: int
    logprob: float
    rank: int
    top_logprob: float
    top_k_logprob: float
    mass_above: float
    top_k_mass: float


@dataclass(frozen=True, slots=True)
class Rescored:
    """The scorer's view of the claimed tokens (inference ScoreReply)."""

    model_hash: bytes
    prompt_tokens: int
    pieces: tuple[bytes, ...]
    end_of_generation: tuple[bool, ...]
    stop: tuple[str, ...]
    positions: tuple[Position, ...]
    top_k: int
    min_p: float

    @classmethod
    def from_reply(cls, reply: inference_pb2.ScoreReply) -> Rescored:
        return cls(
            model_hash=reply.model_hash,
            prompt_tokens=reply.prompt_tokens,
            pieces=tuple(reply.pieces),
            end_of_generation=tuple(reply.end_of_generation),
            stop=tuple(reply.stop),
            positions=tuple(
                Position(s.position, s.logprob, s.rank, s.top_logprob, s.top_k_logprob, s.mass_above, s.top_k_mass)
                for s in reply.scores
            ),
            top_k=reply.top_k,
            min_p=reply.min_p,
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """The slack for float noise and the thresholds (nats: natural-log units). Defaults: see docs/benchmarks.md."""

    tie: float = 0.5  # how far below the best (or a cut-off) an honest token may re-score
    max_gap: float = 1.5  # no single claimed logprob may be further than this from its re-scoring
    gap_floor: float = 0.08  # allowed mean gap = gap_floor + gap_spread / sqrt(positions)
    gap_spread: float = 0.3

    def allowed_mean_gap(self, positions: int) -> float:
        return self.gap_floor + self.gap_spread / math.sqrt(max(1, positions))

    def threshold(self, positions: int) -> float:
        """The score an answer of `positions` re-scored tokens must reach."""
        return math.exp(-self.allowed_mean_gap(positions))


DEFAULT_POLICY = Policy()


@dataclass(frozen=True, slots=True)
class Assessment:
    passed: bool
    score: float  # exp(-mean gap) once checks 1-4 pass, else 0.0
    reason: str  # "" when passed
    mean_gap: float = math.nan  # nats, over the re-scored positions
    max_gap: float = math.nan
    positions: int = 0


def _fail(reason: str, positions: int = 0) -> Assessment:
    return Assessment(False, 0.0, reason, positions=positions)


def check_fits(claim: Claim, rescored: Rescored) -> None:
    """Raise ScoringMismatch unless `rescored` is a re-scoring of exactly these tokens with the claimed model."""
    if rescored.model_hash != claim.model_hash:
        raise ScoringMismatch("the re-scoring used another model than the one claimed")
    n = len(claim.token_ids)
    if len(rescored.pieces) != n or len(rescored.end_of_generation) != n:
        raise ScoringMismatch(f"the re-scoring covers {len(rescored.pieces)} tokens, the claim has {n}")
    indexes = [p.index for p in rescored.positions]
    if not indexes or indexes != sorted(set(indexes)) or indexes[-1] >= n:
        raise ScoringMismatch("the re-scored positions must ascend and index the claimed tokens")
    if indexes[-1] != n - 1:
        raise ScoringMismatch("the last token must always be re-scored: it is what makes the finish believable")


def assess(request: Request, claim: Claim, rescored: Rescored, policy: Policy = DEFAULT_POLICY) -> Assessment:
    """Score one claimed answer against its re-scoring; see the module docstring for every check."""
    if claim.model_hash != request.model_hash:
        return _fail("the answer was made with another model than the requested one")
    n = len(claim.token_ids)
    if n == 0:
        return _fail("the answer has no tokens")
    check_fits(claim, rescored)
    failure = (
        _check_shape(request, claim, rescored)
        or _check_text_and_finish(request, claim, rescored)
        or _check_support(request, claim, rescored, policy)
    )
    if failure:
        return _fail(failure, len(rescored.positions))
    gaps = [abs(claim.logprobs[p.index] - p.logprob) for p in rescored.positions]
    mean_gap, max_gap = sum(gaps) / len(gaps), max(gaps)
    score = math.exp(-mean_gap)
    worst = max(rescored.positions, key=lambda p: abs(claim.logprobs[p.index] - p.logprob))
    if max_gap > policy.max_gap:
        reason = (
            f"token {worst.index}: claimed logprob {claim.logprobs[worst.index]:.3f}, re-scored {worst.logprob:.3f} "
            f"(more than {policy.max_gap} nats apart)"
        )
        return Assessment(False, score, reason, mean_gap, max_gap, len(gaps))
    if mean_gap > policy.allowed_mean_gap(len(gaps)):
        reason = (
            f"claimed logprobs are {mean_gap:.3f} nats from the re-scoring on average (allowed "
            f"{policy.allowed_mean_gap(len(gaps)):.3f} over {len(gaps)} tokens): not the claimed model's numbers"
        )
        return Assessment(False, score, reason, mean_gap, max_gap, len(gaps))
    return Assessment(True, score, "", mean_gap, max_gap, len(gaps))


def _check_shape(request: Request, claim: Claim, rescored: Rescored) -> str:
    n = len(claim.token_ids)
    if len(claim.logprobs) != n:
        return f"{len(claim.logprobs)} logprobs for {n} tokens"
    if not all(math.isfinite(x) and x <= 1e-3 for x in claim.logprobs):
        return "a claimed logprob is not a log-probability (finite, at most 0)"
    if n > request.max_tokens:
        return f"{n} tokens, more than max_tokens {request.max_tokens}"
    if any(rescored.end_of_generation[:-1]):
        return f"an end-of-generation token at position {rescored.end_of_generation.index(True)}, before the end"
    if claim.completion_tokens != n:
        return f"usage says {claim.completion_tokens} completion tokens for {n} tokens"
    if claim.prompt_tokens != rescored.prompt_tokens:
        return f"usage says {claim.prompt_tokens} prompt tokens; the prompt has {rescored.prompt_tokens}"
    return ""


def _check_text_and_finish(request: Request, claim: Claim, rescored: Rescored) -> str:
    text, cut = answer_text(rescored.pieces, rescored.stop)
    if claim.text != text:
        return "the text is not the text of the tokens"
    _, cut_before_last = answer_text(rescored.pieces[:-1], rescored.stop)
    ended = rescored.end_of_generation[-1]
    if cut_before_last:
        return "a stop string appears before the last token: generation would have stopped there"
    if claim.finish_reason == "length":
        if ended or cut:
            return "finish_reason is length, but the answer ends with an end token or a stop string"
        if len(claim.token_ids) != request.max_tokens:
            return f"finish_reason is length after {len(claim.token_ids)} tokens, not max_tokens {request.max_tokens}"
        return ""
    if claim.finish_reason == "stop":
        if not (ended or cut):
            return "finish_reason is stop, but the answer ends with neither an end token nor a stop string (truncated)"
        return ""
    return f"finish_reason {claim.finish_reason!r} is not stop or length"


def _check_support(request: Request, claim: Claim, rescored: Rescored, policy: Policy) -> str:
    tie = policy.tie
    min_p_floor = math.log(rescored.min_p) if rescored.min_p > 0 else -math.inf
    top_p_limit = request.top_p * math.exp(2 * tie)
    for p in rescored.positions:
        token = claim.token_ids[p.index]
        below_best = p.top_logprob - p.logprob
        if request.greedy:
            if below_best > tie:
                return (
                    f"token {p.index} ({token}) is not the greedy choice: rank {p.rank}, "
                    f"{below_best:.2f} nats below the best"
                )
            continue
        if p.logprob < p.top_k_logprob - tie:
            return f"token {p.index} ({token}) is outside the top-{rescored.top_k}: rank {p.rank}"
        if p.logprob < p.top_logprob + min_p_floor - tie:
            return f"token {p.index} ({token}) is below min-p {rescored.min_p}: {below_best:.2f} nats below the best"
        if request.top_p < 1.0 and p.top_k_mass > 0 and p.mass_above / p.top_k_mass >= top_p_limit:
            return (
                f"token {p.index} ({token}) is outside top-p {request.top_p}: "
                f"{p.mass_above / p.top_k_mass:.3f} of the mass is above it"
            )
    return ""
