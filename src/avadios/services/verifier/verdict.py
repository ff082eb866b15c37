"""The majority rule: which answer, if any, a request accepts from the N providers it asked, and who is paid (pure).

Each candidate is one provider's result with the votes of its scorers (from checked, signed score reports, or
the requester's own scoring). The rule:

- A vote by the provider about its own result does not count; a second result from the same provider is
  ignored (the first one counts).
- A candidate *passes* when at least one vote counts and every counted vote passed; one failing vote fails it
  ("never accept an answer that failed its score": a false fail costs a retry, a false pass a wrong answer).
  A candidate nobody scored neither passes nor fails.
- Reproducible requests (temperature 0, or a fixed seed) have one right answer: passing candidates agree when
  their token ids are identical. Sampled requests without a seed have many right answers: every passing
  candidate agrees with every other.
- The request accepts an answer when a strict majority of the N providers asked (not of those that answered:
  silence never helps a minority) agrees on it; the agreeing providers are paid. Otherwise it fails and the
  hold is refunded. The answer returned is the best-scored agreeing candidate's.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import blake3

from avadios.v1 import verifier_pb2


def answer_key(token_ids: Sequence[int]) -> bytes:
    """Identical answers have identical keys: BLAKE3 of the token ids as big-endian u32."""
    return blake3.blake3(struct.pack(f">{len(token_ids)}I", *token_ids)).digest()


@dataclass(frozen=True, slots=True)
class Vote:
    scorer: bytes  # the scorer's public key
    passed: bool
    score: float


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: bytes  # the provider's public key
    answer: bytes  # answer_key(token_ids)
    votes: tuple[Vote, ...]


def candidate(result: verifier_pb2.ProviderResult, reports: Sequence[verifier_pb2.ScoreReport]) -> Candidate:
    """A candidate from a result and the reports about it, both already checked (signing.check_result and
    signing.check_report): signatures are not looked at again here."""
    return Candidate(
        provider=result.provider_key,
        answer=answer_key(result.token_ids),
        votes=tuple(Vote(r.scorer_key, r.passed, r.score) for r in reports),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    answer: bytes  # the accepted answer's key; b"" when none
    chosen: bytes  # the provider whose result is returned; b"" when none
    agreeing: tuple[bytes, ...]  # providers to pay
    failed: tuple[bytes, ...]  # providers whose result failed its score
    unscored: tuple[bytes, ...]  # providers whose result nobody scored
    reason: str


def majority(requested: int) -> int:
    """The smallest strict majority of `requested` providers."""
    return requested // 2 + 1


def decide(candidates: Sequence[Candidate], requested: int, reproducible: bool) -> Verdict:
    if requested < 1:
        raise ValueError("a request asks at least one provider")
    seen: set[bytes] = set()
    passing: list[tuple[Candidate, float]] = []
    failed: list[bytes] = []
    unscored: list[bytes] = []
    for candidate in candidates:
        if candidate.provider in seen:
            continue
        seen.add(candidate.provider)
        votes = [v for v in candidate.votes if v.scorer != candidate.provider]
        if not votes:
            unscored.append(candidate.provider)
        elif all(v.passed for v in votes):
            passing.append((candidate, min(v.score for v in votes)))
        else:
            failed.append(candidate.provider)
    if len(seen) > requested:
        raise ValueError(f"{len(seen)} providers answered a request that asked {requested}")

    groups: dict[bytes, list[tuple[Candidate, float]]] = {}
    for entry in passing:
        groups.setdefault(entry[0].answer if reproducible else b"", []).append(entry)
    best = max(groups.values(), key=len, default=[])
    need = majority(requested)
    if len(best) < need:
        what = "agree on one answer" if reproducible else "passed"
        return Verdict(
            False,
            b"",
            b"",
            (),
            tuple(failed),
            tuple(unscored),
            f"{len(best)} of {requested} providers {what}; a strict majority needs {need}",
        )
    chosen = max(best, key=lambda entry: entry[1])[0]
    return Verdict(
        True,
        chosen.answer,
        chosen.provider,
        tuple(c.provider for c, _ in best),
        tuple(failed),
        tuple(unscored),
        "",
    )
