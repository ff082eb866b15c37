"""Re-scoring answers with this node's own model (the inference service's Score) and signing the verdicts: what a
requester that holds the model does for every answer, and what a provider asked to score its peers does."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from avadios.errors import AvadiosError, InvalidArgument
from avadios.identity import Identity
from avadios.services.verifier.score import Assessment, Claim, Request, Rescored, ScoringMismatch, assess
from avadios.services.verifier.signing import report_for
from avadios.v1 import inference_pb2, verifier_pb2
from avadios.v1.inference_nats import InferenceClient

log = logging.getLogger("avadios.verifier.scoring")
SCORE_TIMEOUT_S = 60.0


class WrongModel(AvadiosError):
    """This node cannot score for the request: it holds another build of the model (or none)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def request_terms(request: inference_pb2.GenerateRequest, model_hash: bytes) -> Request:
    """What the requester asked for, as the score judges answers (max_tokens is always set on a network request)."""
    sampling = request.sampling
    return Request(model_hash, sampling.max_tokens, sampling.temperature, sampling.top_p or 1.0)


def score_request(request: inference_pb2.GenerateRequest, token_ids: Sequence[int]) -> inference_pb2.ScoreRequest:
    score = inference_pb2.ScoreRequest(
        request_id=request.request_id, model=request.model, token_ids=token_ids, stop=request.sampling.stop
    )
    if request.HasField("chat"):
        score.chat.CopyFrom(request.chat)
    else:
        score.prompt = request.prompt
    return score


async def rescore(
    inference: InferenceClient,
    request: inference_pb2.GenerateRequest,
    model_hash: bytes,
    result: verifier_pb2.ProviderResult,
) -> Assessment:
    """One answer against this node's re-scoring of it. Raises WrongModel when this node's model is not the
    requested one; every fault of the answer itself is a failed Assessment with the reason."""
    try:
        reply = await inference.Score(score_request(request, result.token_ids), timeout=SCORE_TIMEOUT_S)
    except AvadiosError as exc:
        if exc.code is grpc.StatusCode.INVALID_ARGUMENT and "token_ids" in exc.message:
            return Assessment(False, 0.0, f"the answer's tokens do not fit the model: {exc.message}")
        raise
    if reply.model_hash != model_hash:
        raise WrongModel(f"this node's {request.model!r} is another build than the requested one")
    try:
        return assess(request_terms(request, model_hash), Claim.from_result(result), Rescored.from_reply(reply))
    except ScoringMismatch as exc:  # the result's own numbers do not fit its tokens: its fault, not ours
        return Assessment(False, 0.0, str(exc))


async def score_all(
    inference: InferenceClient,
    identity: Identity,
    request: inference_pb2.GenerateRequest,
    model_hash: bytes,
    results: Sequence[verifier_pb2.ProviderResult],
) -> list[verifier_pb2.ScoreReport]:
    """A signed report for every result; identical answers are re-scored once."""
    if not request.sampling.max_tokens:
        raise InvalidArgument("a network request names max_tokens")
    assessed: dict[bytes, Assessment] = {}
    reports = []
    for result in results:
        key = _claims_key(result)
        if key not in assessed:
            assessed[key] = await rescore(inference, request, model_hash, result)
        reports.append(report_for(identity, result, assessed[key], model_hash))
    return reports


def _claims_key(result: verifier_pb2.ProviderResult) -> bytes:
    """Two results share an assessment only when everything the score looks at is the same, not just the tokens
    (a liar may copy the tokens and fake the logprobs)."""
    claims = verifier_pb2.ProviderResult(
        model_hash=result.model_hash,
        token_ids=result.token_ids,
        text=result.text,
        logprobs=result.logprobs,
        usage=result.usage,
        finish_reason=result.finish_reason,
    )
    return claims.SerializeToString(deterministic=True)
