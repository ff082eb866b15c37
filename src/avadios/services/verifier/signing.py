"""Signed results and score reports: the canonical bytes each signature covers, signing, and the checks at the door.

Protobuf serialisation is not canonical, so signatures cover a fixed byte layout of every field but the
signature: a domain tag (a result signature can never pass as a report signature, or as any other AVADIOS
signature), then each field in proto order, strings and bytes with a 4-byte big-endian length, integers as
big-endian u32/u64, floats as big-endian IEEE-754 binary32 (the bits the message carries).

    result:  "avadios/poi-result/v1\\0" | request_id | model_hash | u32 n, n × u32 token | text
             | u32 n, n × f32 logprob | u32 prompt_tokens | u32 completion_tokens | finish_reason | u64 price
             | provider_key
    report:  "avadios/poi-score/v1\\0" | request_id | result_digest | provider_key | model_hash | f32 score
             | u8 passed | reason | u32 positions_scored | u32 rule | scorer_key

A report names the result it scored by `result_digest` = BLAKE3(result's canonical bytes), so it cannot be
moved to another answer; the digest covers the provider's key, so a copied answer re-signed by another node is
another result.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Sequence

import blake3

from avadios.identity import Identity, verify
from avadios.services.verifier.errors import BadSignature, Malformed, NotChosen, WrongRequest
from avadios.services.verifier.score import RULE, Assessment
from avadios.v1 import inference_pb2, verifier_pb2

RESULT_DOMAIN = b"avadios/poi-result/v1\x00"
REPORT_DOMAIN = b"avadios/poi-score/v1\x00"
KEY_BYTES = 32
HASH_BYTES = 32
SIGNATURE_BYTES = 64
MAX_REQUEST_ID = 64  # bytes of UTF-8, as the ledger's HOLD block carries it
MAX_TOKENS = 8192  # far above any context this network serves today
MAX_TEXT_BYTES = 256 * 1024
MAX_REASON_BYTES = 1024
FINISH_REASONS = ("stop", "length")

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _var(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _u32s(values: Sequence[int]) -> bytes:
    return _U32.pack(len(values)) + struct.pack(f">{len(values)}I", *values)


def _f32s(values: Sequence[float]) -> bytes:
    return _U32.pack(len(values)) + struct.pack(f">{len(values)}f", *values)


def result_signed_bytes(result: verifier_pb2.ProviderResult) -> bytes:
    return b"".join(
        (
            RESULT_DOMAIN,
            _var(result.request_id.encode()),
            _var(result.model_hash),
            _u32s(result.token_ids),
            _var(result.text.encode()),
            _f32s(result.logprobs),
            _U32.pack(result.usage.prompt_tokens),
            _U32.pack(result.usage.completion_tokens),
            _var(result.finish_reason.encode()),
            _U64.pack(result.price),
            _var(result.provider_key),
        )
    )


def result_digest(result: verifier_pb2.ProviderResult) -> bytes:
    """What a score report names: BLAKE3 of the result's canonical bytes (the signature excluded)."""
    return blake3.blake3(result_signed_bytes(result)).digest()


def report_signed_bytes(report: verifier_pb2.ScoreReport) -> bytes:
    return b"".join(
        (
            REPORT_DOMAIN,
            _var(report.request_id.encode()),
            _var(report.result_digest),
            _var(report.provider_key),
            _var(report.model_hash),
            struct.pack(">f", report.score),
            bytes([1 if report.passed else 0]),
            _var(report.reason.encode()),
            _U32.pack(report.positions_scored),
            _U32.pack(report.rule),
            _var(report.scorer_key),
        )
    )


def new_result(
    request_id: str,
    model_hash: bytes,
    chunks: Sequence[inference_pb2.GenerateChunk],
    price: int,
) -> verifier_pb2.ProviderResult:
    """A provider's (unsigned) result from the chunks of one `Generate(want_tokens=True)` stream."""
    last = chunks[-1] if chunks else inference_pb2.GenerateChunk()
    if not last.finish_reason:
        raise Malformed("the generation did not finish: its last chunk has no finish_reason")
    result = verifier_pb2.ProviderResult(
        request_id=request_id,
        model_hash=model_hash,
        token_ids=[t for c in chunks for t in c.token_ids],
        text="".join(c.text for c in chunks),
        logprobs=[x for c in chunks for x in c.logprobs],
        finish_reason=last.finish_reason,
        price=price,
    )
    result.usage.CopyFrom(last.usage)
    return result


def sign_result(identity: Identity, result: verifier_pb2.ProviderResult) -> verifier_pb2.ProviderResult:
    """Sign `result` in place with the provider's node key (its public key becomes provider_key); returns it."""
    result.provider_key = identity.public_key
    result.signature = identity.sign(result_signed_bytes(result))
    return result


def sign_report(identity: Identity, report: verifier_pb2.ScoreReport) -> verifier_pb2.ScoreReport:
    report.scorer_key = identity.public_key
    report.signature = identity.sign(report_signed_bytes(report))
    return report


def report_for(
    identity: Identity, result: verifier_pb2.ProviderResult, assessment: Assessment, model_hash: bytes
) -> verifier_pb2.ScoreReport:
    """The scorer's signed report on `result`, from its assessment (src/avadios/services/verifier/score.py)."""
    report = verifier_pb2.ScoreReport(
        request_id=result.request_id,
        result_digest=result_digest(result),
        provider_key=result.provider_key,
        model_hash=model_hash,
        score=assessment.score,
        passed=assessment.passed,
        reason=assessment.reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore"),
        positions_scored=assessment.positions,
        rule=RULE,
    )
    return sign_report(identity, report)


def check_result_shape(result: verifier_pb2.ProviderResult) -> None:
    """Sizes and shapes only: what must hold before anything else looks at a result."""
    if not result.request_id or len(result.request_id.encode()) > MAX_REQUEST_ID:
        raise Malformed(f"request_id must be 1..{MAX_REQUEST_ID} bytes")
    if len(result.model_hash) != HASH_BYTES:
        raise Malformed(f"model_hash must be {HASH_BYTES} bytes, not {len(result.model_hash)}")
    if len(result.provider_key) != KEY_BYTES or len(result.signature) != SIGNATURE_BYTES:
        raise Malformed(f"provider_key must be {KEY_BYTES} bytes and signature {SIGNATURE_BYTES}")
    n = len(result.token_ids)
    if not 1 <= n <= MAX_TOKENS:
        raise Malformed(f"a result carries 1..{MAX_TOKENS} tokens, not {n}")
    if len(result.logprobs) != n:
        raise Malformed(f"{len(result.logprobs)} logprobs for {n} tokens: one per token")
    if not all(math.isfinite(x) for x in result.logprobs):
        raise Malformed("a logprob is not a finite number")
    if len(result.text.encode()) > MAX_TEXT_BYTES:
        raise Malformed(f"text is over {MAX_TEXT_BYTES} bytes")
    if result.finish_reason not in FINISH_REASONS:
        raise Malformed(f"finish_reason {result.finish_reason!r} is not one of {', '.join(FINISH_REASONS)}")


def check_result(
    result: verifier_pb2.ProviderResult,
    *,
    request_id: str,
    model_hash: bytes,
    providers: Collection[bytes] | None = None,
) -> None:
    """Raise a `Refused` with the reason unless `result` is well formed, signed by its provider_key, for this
    request and model, and (when `providers` is given) from one of the chosen providers' keys."""
    check_result_shape(result)
    if not verify(result.provider_key, result_signed_bytes(result), result.signature):
        raise BadSignature("the result's signature does not verify against its provider_key")
    if result.request_id != request_id:
        raise WrongRequest(f"the result answers request {result.request_id!r}, not {request_id!r}")
    if result.model_hash != model_hash:
        raise WrongRequest(f"the result was made with model {result.model_hash.hex()[:16]}…, not the requested one")
    if providers is not None and result.provider_key not in providers:
        raise NotChosen("the result is signed by a node that was not chosen for this request")


def check_report(
    report: verifier_pb2.ScoreReport,
    result: verifier_pb2.ProviderResult,
    *,
    scorers: Collection[bytes] | None = None,
) -> None:
    """Raise a `Refused` unless `report` is well formed, signed by its scorer_key, about exactly `result`, not by
    the result's own provider, and (when `scorers` is given) by one of the scorers asked."""
    if len(report.scorer_key) != KEY_BYTES or len(report.signature) != SIGNATURE_BYTES:
        raise Malformed(f"scorer_key must be {KEY_BYTES} bytes and signature {SIGNATURE_BYTES}")
    if len(report.reason.encode()) > MAX_REASON_BYTES or not 0.0 <= report.score <= 1.0:
        raise Malformed(f"score must be within 0..1 and reason at most {MAX_REASON_BYTES} bytes")
    if not verify(report.scorer_key, report_signed_bytes(report), report.signature):
        raise BadSignature("the report's signature does not verify against its scorer_key")
    if report.request_id != result.request_id or report.result_digest != result_digest(result):
        raise WrongRequest("the report is about another result than this one")
    if report.provider_key != result.provider_key:
        raise WrongRequest("the report names another provider than the result's")
    if report.scorer_key == result.provider_key:
        raise NotChosen("a provider cannot score its own result")
    if scorers is not None and report.scorer_key not in scorers:
        raise NotChosen("the report is signed by a node that was not asked to score")
