"""The storage core without processes: any k of n shards rebuild every segment, any flipped byte is detected,
capabilities refuse what is cut or altered, placement spreads shards, repair plans and proves its rebuilds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avadios.services.storage import capability, checker, crypto, layout, payment, placement, repairer
from avadios.services.storage.core import EncodedSegment, FileReader, FileWriter, check_shard
from avadios.services.storage.errors import BadCapability, SegmentCorrupted, ShardCorrupted

SEGMENT = 4096


def write(
    data: bytes, k: int, n: int, name: str = "notes.txt"
) -> tuple[list[EncodedSegment], layout.FileLayout, capability.ReadCap]:
    writer = FileWriter(k, n, segment_size=SEGMENT)
    segments = [writer.add(data[i : i + SEGMENT]) for i in range(0, len(data), SEGMENT)]
    file_layout, cap = writer.finish(name)
    return segments, file_layout, cap


@st.composite
def file_and_subset(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    n = draw(st.integers(2, 10))
    k = draw(st.integers(1, n - 1))
    data = draw(st.binary(min_size=1, max_size=3 * SEGMENT + 17))
    subset = draw(st.permutations(range(n)))[:k]
    return data, k, n, subset


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file_and_subset())
def test_any_k_of_n_shards_rebuild_every_segment(case: tuple[bytes, int, int, list[int]]) -> None:
    data, k, n, subset = case
    segments, file_layout, cap = write(data, k, n)
    reader = FileReader(layout.decode(file_layout.encode(), cap.root), cap)
    rebuilt = b"".join(reader.segment(s.index, {j: s.shards[j] for j in subset}) for s in segments)
    assert rebuilt == data
    assert reader.name == "notes.txt"


def test_every_k_subset_of_a_10_of_16_segment_decodes() -> None:
    """The subsets isa_l_rs_vand failed on: with cauchy, each of a sample of 10-of-16 subsets decodes."""
    data = bytes(range(256)) * 16
    segments, file_layout, cap = write(data, 10, 16)
    reader = FileReader(file_layout, cap)
    for subset in itertools.islice(itertools.combinations(range(16), 10), 0, 8008, 97):
        assert reader.segment(0, {j: segments[0].shards[j] for j in subset}) == data


@settings(max_examples=80, deadline=None)
@given(st.binary(min_size=1, max_size=2 * SEGMENT), st.data())
def test_any_single_flipped_byte_in_a_shard_is_detected_and_the_others_rebuild_it(
    data: bytes, pick: st.DataObject
) -> None:
    k, n = 3, 5
    segments, file_layout, cap = write(data, k, n)
    segment = pick.draw(st.integers(0, len(segments) - 1))
    shard_index = pick.draw(st.integers(0, n - 1))
    shard = bytearray(segments[segment].shards[shard_index])
    position = pick.draw(st.integers(0, len(shard) - 1))
    shard[position] ^= pick.draw(st.integers(1, 255))
    shards = dict(enumerate(segments[segment].shards))
    shards[shard_index] = bytes(shard)
    reader = FileReader(file_layout, cap)
    assert shard_index not in reader.good_shards(segment, shards)  # caught by its BLAKE3 address
    expected = data[segment * SEGMENT : (segment + 1) * SEGMENT]
    assert reader.segment(segment, shards) == expected  # and the segment still reads from the others
    with pytest.raises(ShardCorrupted):
        check_shard(file_layout, segment, shard_index, bytes(shard))


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=SEGMENT), st.data())
def test_a_flipped_byte_in_the_layout_is_refused_by_the_root_hash(data: bytes, pick: st.DataObject) -> None:
    _, file_layout, cap = write(data, 2, 4)
    encoded = bytearray(file_layout.encode())
    encoded[pick.draw(st.integers(0, len(encoded) - 1))] ^= 1
    with pytest.raises(BadCapability):
        layout.decode(bytes(encoded), cap.root)


def test_ciphertext_that_still_decodes_is_caught_by_the_gcm_tag() -> None:
    _, _, cap = write(b"x" * 100, 1, 2)
    ciphertext = bytearray(crypto.encrypt_segment(cap.key, 0, b"x" * 100))
    ciphertext[3] ^= 1
    with pytest.raises(SegmentCorrupted):
        crypto.decrypt_segment(cap.key, 0, bytes(ciphertext))
    with pytest.raises(SegmentCorrupted):  # a segment moved to another position fails too
        crypto.decrypt_segment(cap.key, 1, crypto.encrypt_segment(cap.key, 0, b"x"))


def test_shards_hold_no_plaintext_and_nonces_differ_per_segment() -> None:
    text = b"the quick brown fox jumps over the lazy dog " * 300
    segments, _, _ = write(text, 2, 4)
    for s in segments:
        for shard in s.shards:
            assert b"quick brown fox" not in shard
    assert len({crypto.segment_nonce(i) for i in range(1000)}) == 1000


def test_the_empty_file_round_trips() -> None:
    writer = FileWriter(2, 3, segment_size=SEGMENT)
    file_layout, cap = writer.finish("empty")
    assert file_layout.segment_count == 1 and file_layout.file_size == 0
    assert FileReader(layout.decode(file_layout.encode(), cap.root), cap).name == "empty"


def test_capabilities_round_trip_and_refuse_what_is_cut_altered_or_only_verifies() -> None:
    _, file_layout, cap = write(b"hello", 1, 3)
    text = str(cap)
    assert text.startswith("avadios:file:1:")
    assert capability.parse_read_cap(text) == cap
    assert capability.parse_any_cap(str(cap.verify_cap)) == cap.verify_cap
    assert cap.key.hex() not in str(cap.verify_cap) and capability._b32(cap.key) not in str(cap.verify_cap)
    for bad, words in [
        (text[:-1], "cut or altered"),
        (text[:40], "cut or altered"),
        ("avadios:file:2:" + text[15:], "should start with"),
        (text[:-1] + "1", "base32"),
        (str(cap.verify_cap), "verify-cap"),
        ("", "should start with"),
    ]:
        with pytest.raises(BadCapability, match=words):
            capability.parse_read_cap(bad)
    wrong_key = capability.ReadCap(cap.root, bytes(32))
    with pytest.raises(BadCapability, match="does not open"):
        FileReader(file_layout, wrong_key)


def test_placement_never_puts_two_shards_of_a_segment_on_one_hoster_when_enough_exist() -> None:
    hosters = [placement.Hoster(f"node{i}", 10**9, price_per_gib_month=10 + i) for i in range(7)]
    ranked = placement.rank(hosters, 1000)
    for segment in range(20):
        chosen = placement.place_segment(ranked, segment, 5)
        assert len(set(chosen)) == 5
    few = placement.rank(hosters[:2], 1000)
    chosen = placement.place_segment(few, 0, 4)
    assert sorted(chosen.count(h) for h in set(chosen)) == [2, 2]
    # full hosters and excluded ones are not chosen; the cheapest reliable one comes first
    hosters.append(placement.Hoster("full", 10, 0))
    ranked = placement.rank(hosters, 1000, exclude=frozenset({"node0"}))
    assert [h.node_id for h in ranked][:2] == ["node1", "node2"] and "full" not in [h.node_id for h in ranked]
    assert placement.replacement(ranked, ["node1", "node2"], frozenset({"node3"})) == "node4"


def test_audit_challenges_pass_only_with_the_shard_bytes() -> None:
    shard = bytes(range(256)) * 40
    challenges = checker.draw(shard, 16)
    assert len({c.nonce for c in challenges}) == 16
    for c in challenges:
        assert checker.passed(c, checker.answer(shard, c.nonce, c.offset, c.length))
        damaged = bytearray(shard)
        damaged[c.offset] ^= 1
        assert not checker.passed(c, checker.answer(bytes(damaged), c.nonce, c.offset, c.length))
        assert not checker.passed(c, checker.answer(b"", c.nonce, c.offset, c.length))


def test_health_and_repair_plan() -> None:
    assert checker.file_health([5, 5], 3, 5) == checker.Health.HEALTHY
    assert checker.file_health([5, 4], 3, 5) == checker.Health.DEGRADED
    assert checker.file_health([5, 2], 3, 5) == checker.Health.UNREADABLE
    repairs, lost = repairer.plan({0: [0, 1, 2, 3, 4], 1: [0, 2, 4], 2: [1]}, k=3, n=5, threshold=5)
    assert lost == [2]
    assert repairs == [repairer.SegmentRepair(1, (0, 2, 4), (1, 3))]
    repairs, _ = repairer.plan({0: [0, 1, 2, 4]}, k=3, n=5, threshold=4)
    assert repairs == []  # at the threshold: nothing to do


def test_repair_rebuilds_byte_identical_shards_and_refuses_a_corrupted_source() -> None:
    segments, file_layout, cap = write(b"repair me " * 500, 3, 6)
    s = segments[0]
    reader = FileReader(file_layout, cap)
    rebuilt = repairer.rebuild(reader.codec, {j: s.shards[j] for j in (1, 3, 5)}, [0, 2, 4], s.hashes)
    assert rebuilt == {j: s.shards[j] for j in (0, 2, 4)}
    bad = {j: s.shards[j] for j in (1, 3, 5)}
    bad[3] = bad[3][:-1] + bytes([bad[3][-1] ^ 1])
    with pytest.raises(ShardCorrupted):
        repairer.rebuild(reader.codec, bad, [0], s.hashes)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.binary(min_size=32, max_size=32), st.tuples(st.integers(1, 10**9), st.integers(0, 20),
                                                                       st.integers(0, 20)), max_size=32))  # fmt: skip
def test_a_term_never_pays_out_more_than_was_held_and_pays_all_of_it_when_every_audit_passed(
    hosters: dict[bytes, tuple[int, int, int]],
) -> None:
    prices = {p: price for p, (price, _, _) in hosters.items()}
    tallies = {p: (min(a, b), max(a, b)) for p, (_, a, b) in hosters.items()}
    due = payment.payouts(prices, tallies)
    assert all(0 <= d.amount <= prices[d.payee] for d in due)
    assert sum(d.amount for d in due) <= sum(prices.values())
    all_passed = payment.payouts(prices, {p: (3, 3) for p in prices})
    assert sum(d.amount for d in all_passed) == sum(prices.values())
    assert all(d.amount == 0 and d.failed_all for d in payment.payouts(prices, {p: (0, 2) for p in prices}))


def test_a_term_price_scales_with_bytes_price_and_time_and_rounds_up() -> None:
    gib_month = payment.term_price(payment.GIB, 1000, payment.MONTH_S)
    assert gib_month == 1000
    assert payment.term_price(payment.GIB // 2, 1000, payment.MONTH_S) == 500
    assert payment.term_price(1, 1000, 60) == 1  # a paid hoster earns at least 1 micro-AUTOM
    assert payment.term_price(payment.GIB, 0, payment.MONTH_S) == 0
