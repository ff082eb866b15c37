"""Signed provider results and score reports (what is refused, and why) and the majority rule over N providers."""

from __future__ import annotations

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from avadios.identity import Identity
from avadios.services.verifier import liars
from avadios.services.verifier.errors import BadSignature, Malformed, NotChosen, WrongRequest
from avadios.services.verifier.score import Assessment
from avadios.services.verifier.signing import (
    check_report,
    check_result,
    new_result,
    report_for,
    result_digest,
    sign_result,
)
from avadios.services.verifier.verdict import Candidate, Vote, answer_key, candidate, decide, majority
from avadios.v1 import inference_pb2, verifier_pb2

MODEL = blake3.blake3(b"model").digest()


def _identity() -> Identity:
    return Identity(SigningKey.generate())


def _chunks() -> list[inference_pb2.GenerateChunk]:
    return [
        inference_pb2.GenerateChunk(text=" Paris", token_ids=[7, 8], logprobs=[-0.1, -0.02]),
        inference_pb2.GenerateChunk(text=".", token_ids=[9, 1], logprobs=[-0.3, -0.5]),
        inference_pb2.GenerateChunk(
            finish_reason="stop", usage=inference_pb2.Usage(prompt_tokens=11, completion_tokens=4), model_hash=MODEL
        ),
    ]


def _result(provider: Identity, request_id: str = "job-1") -> verifier_pb2.ProviderResult:
    return sign_result(provider, new_result(request_id, MODEL, _chunks(), price=1500))


def test_a_result_from_generate_chunks_carries_every_token_and_verifies() -> None:
    provider = _identity()
    result = _result(provider)
    assert list(result.token_ids) == [7, 8, 9, 1] and result.text == " Paris." and result.price == 1500
    assert result.usage.completion_tokens == 4 and result.finish_reason == "stop"
    check_result(result, request_id="job-1", model_hash=MODEL, providers={provider.public_key})


def test_an_unfinished_generation_makes_no_result() -> None:
    with pytest.raises(Malformed):
        new_result("job-1", MODEL, _chunks()[:-1], price=1)


FIELDS = {
    "request_id": "job-2",
    "model_hash": blake3.blake3(b"other").digest(),
    "token_ids": [7, 8, 9, 2],
    "text": " Berlin.",
    "logprobs": [-0.1, -0.02, -0.3, -0.4],
    "finish_reason": "length",
    "price": 1501,
}


@settings(max_examples=30)
@given(st.sampled_from(sorted(FIELDS)))
def test_any_tampered_field_breaks_the_signature(field: str) -> None:
    result = _result(_identity())
    if isinstance(FIELDS[field], list):
        del getattr(result, field)[:]
        getattr(result, field).extend(FIELDS[field])
    else:
        setattr(result, field, FIELDS[field])
    with pytest.raises(BadSignature):
        check_result(result, request_id=result.request_id, model_hash=result.model_hash)


@given(st.integers(0, 63), st.integers(0, 7))
def test_any_flipped_signature_bit_is_refused(byte: int, bit: int) -> None:
    result = _result(_identity())
    signature = bytearray(result.signature)
    signature[byte] ^= 1 << bit
    result.signature = bytes(signature)
    with pytest.raises(BadSignature):
        check_result(result, request_id="job-1", model_hash=MODEL)


def test_usage_is_covered_by_the_signature() -> None:
    result = _result(_identity())
    result.usage.prompt_tokens += 1
    with pytest.raises(BadSignature):
        check_result(result, request_id="job-1", model_hash=MODEL)


def test_a_result_for_another_request_or_model_or_from_a_node_not_chosen_is_refused() -> None:
    provider = _identity()
    result = _result(provider)
    with pytest.raises(WrongRequest):
        check_result(result, request_id="job-9", model_hash=MODEL)
    with pytest.raises(WrongRequest):
        check_result(result, request_id="job-1", model_hash=bytes(32))
    with pytest.raises(NotChosen):
        check_result(result, request_id="job-1", model_hash=MODEL, providers={_identity().public_key})


def test_a_replayed_result_of_another_provider_is_refused() -> None:
    earlier = _result(_identity(), request_id="job-0")
    with pytest.raises(BadSignature):
        check_result(liars.replayed(earlier, "job-1"), request_id="job-1", model_hash=MODEL)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.ClearField("token_ids"), "tokens"),
        (lambda r: r.logprobs.append(-1.0), "logprobs"),
        (lambda r: setattr(r, "model_hash", b"short"), "model_hash"),
        (lambda r: setattr(r, "request_id", "x" * 65), "request_id"),
        (lambda r: setattr(r, "finish_reason", "tool_calls"), "finish_reason"),
        (lambda r: r.logprobs.__setitem__(0, float("nan")), "finite"),
        (lambda r: setattr(r, "text", "x" * (300 * 1024)), "text"),
        (lambda r: setattr(r, "signature", b""), "signature"),
    ],
)
def test_malformed_or_oversized_results_are_refused_with_the_reason(change: object, reason: str) -> None:
    result = _result(_identity())
    change(result)  # type: ignore[operator]
    with pytest.raises(Malformed, match=reason):
        check_result(result, request_id=result.request_id, model_hash=MODEL)


def _report(scorer: Identity, result: verifier_pb2.ProviderResult, passed: bool = True) -> verifier_pb2.ScoreReport:
    assessment = Assessment(passed, 0.95 if passed else 0.0, "" if passed else "not the greedy choice", 0.05, 0.2, 4)
    return report_for(scorer, result, assessment, MODEL)


def test_a_score_report_names_its_result_and_verifies() -> None:
    provider, scorer = _identity(), _identity()
    result = _result(provider)
    report = _report(scorer, result)
    assert report.result_digest == result_digest(result) and report.positions_scored == 4
    check_report(report, result, scorers={scorer.public_key})


def test_a_tampered_report_or_one_moved_to_another_result_is_refused() -> None:
    provider, scorer = _identity(), _identity()
    result = _result(provider)
    report = _report(scorer, result, passed=False)
    report.passed = True
    with pytest.raises(BadSignature):
        check_report(report, result)
    other = _result(_identity())
    with pytest.raises(WrongRequest):
        check_report(_report(scorer, result), other)


def test_a_provider_cannot_score_itself_and_unknown_scorers_do_not_count() -> None:
    provider = _identity()
    result = _result(provider)
    with pytest.raises(NotChosen):
        check_report(_report(provider, result), result)
    with pytest.raises(NotChosen):
        check_report(_report(_identity(), result), result, scorers={_identity().public_key})


# ---- the majority rule ------------------------------------------------------------------------------------

A, B, C, D, E = (bytes([i]) * 32 for i in range(1, 6))
RIGHT, WRONG = answer_key([1, 2, 3]), answer_key([1, 2, 4])


def _candidate(provider: bytes, answer: bytes, *passes: bool) -> Candidate:
    scorers = [s for s in (A, B, C, D, E) if s != provider][: len(passes)]
    votes = tuple(Vote(s, p, 0.9 if p else 0.0) for s, p in zip(scorers, passes, strict=True))
    return Candidate(provider, answer, votes)


def test_three_honest_providers_agree_and_all_are_paid() -> None:
    verdict = decide([_candidate(p, RIGHT, True, True) for p in (A, B, C)], requested=3, reproducible=True)
    assert verdict.accepted and verdict.answer == RIGHT and set(verdict.agreeing) == {A, B, C}


def test_one_liar_among_three_is_rejected_and_unpaid() -> None:
    candidates = [_candidate(A, RIGHT, True, True), _candidate(B, RIGHT, True, True), _candidate(C, WRONG, False)]
    verdict = decide(candidates, requested=3, reproducible=True)
    assert verdict.accepted and set(verdict.agreeing) == {A, B} and verdict.failed == (C,)


def test_a_liar_majority_fails_the_request_and_never_returns_a_wrong_answer() -> None:
    candidates = [_candidate(A, RIGHT, True), _candidate(B, WRONG, False), _candidate(C, WRONG, False)]
    verdict = decide(candidates, requested=3, reproducible=True)
    assert not verdict.accepted and verdict.answer == b"" and verdict.agreeing == ()
    assert "strict majority needs 2" in verdict.reason


def test_missing_answers_count_against_the_majority() -> None:
    verdict = decide([_candidate(A, RIGHT, True)], requested=3, reproducible=True)
    assert not verdict.accepted
    assert decide([_candidate(A, RIGHT, True), _candidate(B, RIGHT, True)], requested=3, reproducible=True).accepted


def test_one_failing_vote_fails_a_candidate_and_self_votes_do_not_count() -> None:
    mixed = _candidate(A, RIGHT, True, False)
    self_only = Candidate(B, RIGHT, (Vote(B, True, 1.0),))
    verdict = decide([mixed, self_only, _candidate(C, RIGHT, True)], requested=3, reproducible=True)
    assert not verdict.accepted and verdict.failed == (A,) and verdict.unscored == (B,)


def test_sampled_requests_without_a_seed_accept_different_passing_answers() -> None:
    candidates = [_candidate(A, RIGHT, True), _candidate(B, WRONG, True), _candidate(C, answer_key([9]), False)]
    assert not decide(candidates, requested=3, reproducible=True).accepted
    verdict = decide(candidates, requested=3, reproducible=False)
    assert verdict.accepted and set(verdict.agreeing) == {A, B}


def test_a_provider_answering_twice_counts_once() -> None:
    candidates = [_candidate(A, RIGHT, True), _candidate(A, RIGHT, True), _candidate(B, WRONG, False)]
    assert not decide(candidates, requested=3, reproducible=True).accepted


@settings(max_examples=300)
@given(
    st.integers(1, 7).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.tuples(st.sampled_from([RIGHT, WRONG]), st.lists(st.booleans(), min_size=0, max_size=3)),
                max_size=n,
            ),
        )
    ),
    st.booleans(),
)
def test_an_accepted_answer_passed_every_score_and_has_a_strict_majority(
    case: tuple[int, list[tuple[bytes, list[bool]]]], reproducible: bool
) -> None:
    n, entries = case
    providers = [bytes([i + 10]) * 32 for i in range(len(entries))]
    candidates = [
        Candidate(p, answer, tuple(Vote(bytes([200 + j]) * 32, ok, 0.9) for j, ok in enumerate(votes)))
        for p, (answer, votes) in zip(providers, entries, strict=True)
    ]
    verdict = decide(candidates, requested=n, reproducible=reproducible)
    if verdict.accepted:
        assert len(verdict.agreeing) >= majority(n) and 2 * len(verdict.agreeing) > n
        for c in candidates:
            if c.provider in verdict.agreeing:
                assert c.votes and all(v.passed for v in c.votes)
                assert c.answer == verdict.answer or not reproducible
    assert not set(verdict.failed) & set(verdict.agreeing)


def test_candidates_come_from_checked_results_and_reports() -> None:
    provider, scorer = _identity(), _identity()
    result = _result(provider)
    built = candidate(result, [_report(scorer, result)])
    assert built.provider == provider.public_key and built.answer == answer_key([7, 8, 9, 1])
    assert [(v.scorer, v.passed) for v in built.votes] == [(scorer.public_key, True)]
    assert built.votes[0].score == pytest.approx(0.95)
