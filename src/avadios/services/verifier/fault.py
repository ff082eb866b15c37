"""A devnet's lying provider (the `devnet_fault` test knob, refused on a node outside a devnet): it answers offers
with one kind of lie from src/avadios/services/verifier/liars.py and, asked to score, fails every answer it sees.

What each lie needs that a pure liar cannot make up (the tokens' text under the claimed model, another model's
answer, answers it has seen before) comes from the node's own inference service and from what passes through it.
A lie it cannot make yet (no earlier answer to copy, an answer too short to cut) is random text instead.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from avadios.config import DEVNET_MARKER
from avadios.identity import Identity
from avadios.services.inference.token_text import answer_text
from avadios.services.verifier import liars
from avadios.services.verifier.score import Claim
from avadios.services.verifier.scoring import score_request
from avadios.services.verifier.signing import sign_report
from avadios.v1 import inference_pb2, verifier_pb2
from avadios.v1.inference_nats import InferenceClient

OTHER_MODEL = "devnet-liar"  # the second model a wrong-model liar's devnet home holds (<home>/models/)
RANDOM_VOCAB = 256  # token ids every byte-level vocabulary has


class FaultRefused(ValueError):
    pass


def check_fault(kind: str, home: Path) -> str:
    """The fault to run, or "" for none; raises FaultRefused for an unknown kind or a node outside a devnet."""
    if not kind:
        return ""
    if kind not in liars.KINDS:
        raise FaultRefused(f"devnet_fault {kind!r} is not one of {', '.join(liars.KINDS)}")
    if not (home / DEVNET_MARKER).exists():
        raise FaultRefused("devnet_fault is a test knob for devnet nodes only; this node is not in a devnet")
    return kind


class Fault:
    def __init__(self, kind: str, inference: InferenceClient, seed: int = 0) -> None:
        self.kind = kind
        self.inference = inference
        self.rng = random.Random(seed)
        self.seen: deque[verifier_pb2.ProviderResult] = deque(maxlen=32)  # others' answers (scored for a requester)
        self.own: deque[Claim] = deque(maxlen=32)  # this node's earlier honest answers

    def remember(self, results: Sequence[verifier_pb2.ProviderResult]) -> None:
        self.seen.extend(results)

    async def _text(self, request: inference_pb2.GenerateRequest, tokens: Sequence[int]) -> tuple[str, tuple[str, ...]]:
        reply = await self.inference.Score(score_request(request, tokens), timeout=30.0)
        text, _ = answer_text(list(reply.pieces), list(reply.stop))
        return text, tuple(reply.stop)

    async def _as_claimed(self, request: inference_pb2.GenerateRequest, honest: Claim, other: Claim) -> Claim:
        """`other`'s tokens passed off as this request's answer by the claimed model."""
        tokens = other.token_ids[: request.sampling.max_tokens]
        text, _ = await self._text(request, tokens)
        finish = other.finish_reason if len(tokens) == len(other.token_ids) else "length"
        return Claim(
            honest.model_hash, tokens, text, other.logprobs[: len(tokens)], honest.prompt_tokens, len(tokens), finish
        )

    async def _random(self, request: inference_pb2.GenerateRequest, honest: Claim) -> Claim:
        tokens = tuple(self.rng.randrange(RANDOM_VOCAB) for _ in range(request.sampling.max_tokens))
        logprobs = tuple(self.rng.uniform(-3.0, 0.0) for _ in tokens)
        return await self._as_claimed(request, honest, Claim(b"", tokens, "", logprobs, 0, len(tokens), "length"))

    async def lie(
        self, request: inference_pb2.GenerateRequest, result: verifier_pb2.ProviderResult
    ) -> verifier_pb2.ProviderResult:
        honest = Claim.from_result(result)
        claim = await self._lie(request, honest)
        self.own.append(honest)
        return liars.to_result(claim, result.request_id, result.price)

    async def _lie(self, request: inference_pb2.GenerateRequest, honest: Claim) -> Claim:
        if self.kind == liars.FAKE_LOGPROBS:
            return liars.fake_logprobs(honest, self.rng)
        if self.kind == liars.WRONG_MODEL:
            other = inference_pb2.GenerateRequest()
            other.CopyFrom(request)
            other.model = OTHER_MODEL
            chunks = [c async for c in self.inference.Generate(other, timeout=60.0)]
            tokens = tuple(t for c in chunks for t in c.token_ids)
            logprobs = tuple(x for c in chunks for x in c.logprobs)
            answer = Claim(b"", tokens, "", logprobs, 0, len(tokens), chunks[-1].finish_reason)
            return await self._as_claimed(request, honest, answer)
        if self.kind == liars.TRUNCATED and honest.finish_reason == "stop" and len(honest.token_ids) > 2:
            keep = self.rng.randrange(1, len(honest.token_ids) - 1)
            tokens = (*honest.token_ids[:keep], honest.token_ids[-1])  # cut, then the model's own end token
            text, _ = await self._text(request, tokens[:-1])
            logprobs = (*honest.logprobs[:keep], honest.logprobs[-1])
            return Claim(honest.model_hash, tokens, text, logprobs, honest.prompt_tokens, len(tokens), "stop")
        if self.kind == liars.COPY and self.seen:
            return await self._as_claimed(request, honest, Claim.from_result(self.rng.choice(list(self.seen))))
        if self.kind == liars.CACHED and self.own:
            return await self._as_claimed(request, honest, self.rng.choice(list(self.own)))
        return await self._random(request, honest)

    def slander(self, report: verifier_pb2.ScoreReport, identity: Identity) -> verifier_pb2.ScoreReport:
        """A lying scorer fails whatever it was asked to score, under its own signature."""
        lie = verifier_pb2.ScoreReport()
        lie.CopyFrom(report)
        lie.passed, lie.score, lie.reason = False, 0.0, "claimed logprobs do not match (a lying scorer's report)"
        return sign_report(identity, lie)
