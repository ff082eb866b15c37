"""What the provider and the verifier both compute without a model: answer text from token pieces, logit statistics."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from avadios.services.inference.logit_stats import chosen_logprob, token_stats
from avadios.services.inference.token_text import StopText, answer_text

PIECES = st.lists(st.sampled_from([b"a", b"b", b"\n", b"Q", b":", b" ", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac"]))
STOPS = st.lists(st.sampled_from(["\nQ:", "ab", "b\n", ":", "é"]), max_size=3)


@given(PIECES, STOPS)
def test_streamed_text_is_exactly_the_answer_text_a_verifier_recomputes(pieces: list[bytes], stop: list[str]) -> None:
    stream = StopText(stop)
    shown = ""
    for piece in pieces:
        shown += stream.feed(piece)
        if stream.stopped:
            break
    shown += stream.finish()
    text, cut = answer_text(pieces, stop)
    assert shown == text
    assert stream.stopped == cut


def test_text_that_may_become_a_stop_string_is_held_back_until_decided() -> None:
    stream = StopText(["\nQ:"])
    assert stream.feed(b"Paris.") == "Paris."
    assert stream.feed(b"\n") == ""  # could be the start of "\nQ:"
    assert stream.feed(b"Q") == ""
    assert stream.feed(b":") == "" and stream.stopped
    assert stream.finish() == ""


def test_an_incomplete_utf8_character_waits_for_its_last_byte() -> None:
    stream = StopText([])
    assert stream.feed(b"\xe2\x82") == ""
    assert stream.feed(b"\xac!") == "€!"


def _reference(logits: np.ndarray, token: int, top_k: int) -> tuple[float, int, float, float, float, float]:
    x = logits.astype(np.float64)
    logp = x - np.log(np.exp(x - x.max()).sum()) - x.max()
    order = np.sort(logp)[::-1]
    above = x > x[token]
    k = min(top_k, len(x))
    return (
        logp[token],
        int(above.sum()),
        order[0],
        order[k - 1],
        float(np.exp(logp[above]).sum()),
        float(np.exp(order[:k]).sum()),
    )


@settings(max_examples=200)
@given(
    st.lists(st.floats(-40, 40, width=32, allow_subnormal=False), min_size=1, max_size=80),
    st.integers(0, 79),
    st.integers(1, 50),
)
def test_token_stats_match_a_plain_float64_computation(values: list[float], token: int, top_k: int) -> None:
    logits = np.array(values, dtype=np.float32)
    token %= len(values)
    stats = token_stats(logits, token, top_k)
    logprob, rank, top, kth, above, top_mass = _reference(logits, token, top_k)
    assert stats.rank == rank
    assert abs(stats.logprob - logprob) < 1e-4
    assert abs(chosen_logprob(logits, token) - logprob) < 1e-4
    assert abs(stats.top_logprob - top) < 1e-4
    assert abs(stats.top_k_logprob - kth) < 1e-4 or kth < top - 30  # the shortlist skips hopeless tokens
    assert abs(stats.mass_above - above) < 1e-5
    assert abs(stats.top_k_mass - top_mass) < 1e-5
