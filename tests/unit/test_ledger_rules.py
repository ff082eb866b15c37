"""The ledger's rules on one replica: every bad input is refused with its reason and changes nothing."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avadios.ledger import errors
from avadios.ledger.address import decode_address, encode_address
from avadios.ledger.amount import MAX_AMOUNT, format_autom, parse_autom
from avadios.ledger.block import (
    HOLD,
    MAX_CLOCK_SKEW_MS,
    MAX_HOLD_MS,
    MIN_HOLD_MS,
    REFUND,
    SETTLE,
    ZERO_HASH,
    Block,
    block_hash,
    canonical_bytes,
    sign_block,
    verify_block,
)
from avadios.ledger.genesis import Genesis, devnet_genesis, load_genesis, save_genesis
from avadios.ledger.wallet import ChainTip, Wallet, create_wallet, load_wallet, new_mnemonic, seed_from_mnemonic
from avadios.v1 import ledger_pb2
from tests.ledger_support import FUNDS, Solo, total_supply


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[Solo]:
    s = Solo(tmp_path / "ledger", [Wallet.generate(), Wallet.generate()])
    yield s
    s.close()


def snapshot(solo: Solo) -> dict[bytes, bytes]:
    return {k: r.SerializeToString() for k, r in solo.ledger.accounts()}


# ---- amounts and addresses ---------------------------------------------------------------------------------


def test_amounts_in_autom_are_parsed_exactly_without_float() -> None:
    assert parse_autom("1") == 1_000_000
    assert parse_autom("0.000001") == 1
    assert parse_autom("12.5") == 12_500_000
    assert parse_autom("0.1") + parse_autom("0.2") == parse_autom("0.3")
    assert format_autom(12_500_000) == "12.5" and format_autom(1) == "0.000001" and format_autom(0) == "0"


@pytest.mark.parametrize("text", ["-1", "1.0000001", "1e6", "abc", "", "0", "1.2.3", "99999999999999"])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(errors.BadAmount):
        parse_autom(text)


@given(st.integers(min_value=1, max_value=10**19))
def test_amount_text_round_trips(micro: int) -> None:
    if micro > MAX_AMOUNT:
        with pytest.raises(errors.BadAmount):
            parse_autom(format_autom(micro))
    else:
        assert parse_autom(format_autom(micro)) == micro


def test_address_round_trips_and_a_typo_is_caught() -> None:
    wallet = Wallet.generate()
    address = encode_address(wallet.account)
    assert address.startswith("autom_") and decode_address(address) == wallet.account
    typo = address[:-1] + ("a" if address[-1] != "a" else "b")
    for bad in (typo, "autom_xyz", address.replace("autom_", "nano_"), address + "a"):
        with pytest.raises(errors.MalformedAddress):
            decode_address(bad)


# ---- blocks ------------------------------------------------------------------------------------------------


def test_block_hash_is_canonical_and_covers_the_network(solo: Solo) -> None:
    a, b = solo.wallets
    block = a.send(solo.tip(a), b.account, 5, solo.network, 1)
    reparsed = ledger_pb2.LedgerBlock.FromString(block.SerializeToString())
    assert block_hash(reparsed, solo.network) == block_hash(block, solo.network)
    assert block_hash(block, solo.network) != block_hash(block, bytes(32))
    with pytest.raises(errors.BadSignature):
        verify_block(block, bytes(32))  # the same block presented to another network


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_tampered_field_or_signature_is_rejected(data: st.DataObject) -> None:
    a, b = Wallet.generate(), Wallet.generate()
    network = bytes(range(32))
    block = a.send(ChainTip(balance=FUNDS), b.account, 1000, network, 5)
    field = data.draw(st.sampled_from(["balance", "amount", "timestamp_ms", "destination", "signature"]))
    if field == "destination":
        block.destination = Wallet.generate().account
    elif field == "signature":
        sig = bytearray(block.signature)
        sig[data.draw(st.integers(0, 63))] ^= 1 << data.draw(st.integers(0, 7))
        block.signature = bytes(sig)
    else:
        setattr(block, field, getattr(block, field) + data.draw(st.integers(1, 10**6)))
    with pytest.raises(errors.BadSignature):
        verify_block(block, network)


def test_canonical_bytes_encode_each_field_unambiguously() -> None:
    a = Wallet.generate()
    one = ledger_pb2.LedgerBlock(kind=HOLD, account=a.account, previous=ZERO_HASH, height=1, timestamp_ms=1)
    one.payees.extend([b"ab", b"c"])
    two = ledger_pb2.LedgerBlock(kind=HOLD, account=a.account, previous=ZERO_HASH, height=1, timestamp_ms=1)
    two.payees.extend([b"a", b"bc"])
    assert canonical_bytes(one, ZERO_HASH) != canonical_bytes(two, ZERO_HASH)


# ---- transfers ---------------------------------------------------------------------------------------------


def test_send_and_receive_move_money_and_conserve_supply(solo: Solo) -> None:
    a, b = solo.wallets
    sent = solo.send(a, b, 250 * 10**6)
    assert solo.ledger.account(a.account).balance == FUNDS - 250 * 10**6
    assert solo.ledger.account(b.account).pending == 250 * 10**6
    solo.receive(b, sent)
    record = solo.ledger.account(b.account)
    assert (record.balance, record.pending, record.height) == (FUNDS + 250 * 10**6, 0, 1)
    assert total_supply(solo.ledger) == 2 * FUNDS
    history = solo.ledger.history(b.account)
    assert [delta for _, _, delta in history] == [250 * 10**6]


def test_insufficient_funds_is_refused_and_balance_unchanged(solo: Solo) -> None:
    a, b = solo.wallets
    block = a.send(solo.tip(a), b.account, 1, solo.network, solo.clock())
    block.amount, block.balance = FUNDS + 1, 0
    from avadios.ledger.block import sign_block

    sign_block(block, a.signing_key, solo.network)
    before = snapshot(solo)
    with pytest.raises(errors.InsufficientFunds, match="insufficient funds"):
        solo.replica.submit(block)
    assert snapshot(solo) == before
    with pytest.raises(errors.InsufficientFunds):
        a.send(solo.tip(a), b.account, FUNDS + 1, solo.network)  # the wallet refuses before signing, too


def test_double_spend_is_rejected_and_balance_unchanged(solo: Solo) -> None:
    a, b = solo.wallets
    tip = solo.tip(a)
    first = a.send(tip, b.account, 10, solo.network, solo.clock())
    fork = a.send(tip, a.account, 20, solo.network, solo.clock())
    solo.submit(first)
    before = snapshot(solo)
    with pytest.raises(errors.StalePredecessor, match="fork"):
        solo.replica.submit(fork)
    assert snapshot(solo) == before


def test_replayed_block_is_refused(solo: Solo) -> None:
    a, b = solo.wallets
    block = a.send(solo.tip(a), b.account, 10, solo.network, solo.clock())
    solo.submit(block)
    with pytest.raises(errors.ReplayedBlock):
        solo.replica.submit(block)


def test_block_on_unknown_predecessor_is_refused(solo: Solo) -> None:
    a, b = solo.wallets
    ghost = ChainTip(head=b"\x07" * 32, height=4, balance=FUNDS, timestamp_ms=1)
    with pytest.raises(errors.UnknownPredecessor):
        solo.replica.submit(a.send(ghost, b.account, 10, solo.network, solo.clock()))


def test_second_receive_of_one_send_is_refused(solo: Solo) -> None:
    a, b = solo.wallets
    sent = solo.send(a, b, 10)
    solo.receive(b, sent)
    again = b.receive(solo.tip(b), sent, 10, solo.network, solo.clock())
    before = snapshot(solo)
    with pytest.raises(errors.AlreadyReceived):
        solo.replica.submit(again)
    assert snapshot(solo) == before


def test_receive_of_a_payment_to_someone_else_is_refused(solo: Solo) -> None:
    a, b = solo.wallets
    sent = solo.send(a, b, 10)
    with pytest.raises(errors.NothingPending):
        solo.replica.submit(a.receive(solo.tip(a), sent, 10, solo.network, solo.clock()))


def test_a_block_that_lies_about_its_balance_is_refused(solo: Solo) -> None:
    a, b = solo.wallets
    sent = solo.send(a, b, 10)
    greedy = b.receive(solo.tip(b), sent, 10_000, solo.network, solo.clock())
    with pytest.raises(errors.BalanceMismatch):
        solo.replica.submit(greedy)


def test_a_block_far_in_the_future_is_refused(solo: Solo) -> None:
    a, b = solo.wallets
    with pytest.raises(errors.BadTimestamp):
        solo.replica.submit(a.send(solo.tip(a), b.account, 1, solo.network, solo.clock() + 3_600_000))


def test_malformed_blocks_are_refused_with_the_field_named(solo: Solo) -> None:
    a, b = solo.wallets
    block = a.send(solo.tip(a), b.account, 1, solo.network, solo.clock())
    block.destination = b"short"
    with pytest.raises(errors.MalformedBlock, match="destination"):
        solo.replica.submit(block)
    block = a.send(solo.tip(a), b.account, 1, solo.network, solo.clock())
    block.request_id = b"x"  # a field a send does not use
    with pytest.raises(errors.MalformedBlock, match="request_id"):
        solo.replica.submit(block)
    with pytest.raises(errors.BadAmount):
        a.send(solo.tip(a), b.account, -5, solo.network)
    with pytest.raises(errors.BadAmount):
        a.send(solo.tip(a), b.account, MAX_AMOUNT + 1, solo.network)


# ---- holds -------------------------------------------------------------------------------------------------


def hold(
    solo: Solo, amount: int = 100, cap: int = 60, ttl: int = 10_000, payees: int = 2
) -> tuple[bytes, Block, list[Wallet]]:
    a = solo.wallets[0]
    who = [Wallet.generate() for _ in range(payees)]
    block = a.hold(
        solo.tip(a), b"req-1", amount, solo.clock() + ttl, [p.account for p in who], cap, solo.network, solo.clock()
    )
    return solo.submit(block), block, who


def raw_release(
    solo: Solo, signer: Wallet, digest: bytes, held: int, entries: Sequence[tuple[bytes, int, int]], stamp: int
) -> Block:
    """A settle (entries given) or refund (none) signed by hand, so the ledger's rules are what refuses it."""
    tip = solo.tip(signer)
    block = Block(
        kind=SETTLE if entries else REFUND,
        account=signer.account,
        previous=tip.head,
        height=tip.height + 1,
        timestamp_ms=stamp,
        source=digest,
    )
    for account, amount, reason in entries:
        block.payouts.add(account=account, amount=amount, reason=reason)
    block.balance = tip.balance + held - sum(amount for _, amount, _ in entries)
    sign_block(block, signer.signing_key, solo.network)
    return block


def test_hold_locks_and_settle_pays_payees_and_refunds_the_rest(solo: Solo) -> None:
    a = solo.wallets[0]
    digest, block, (p1, p2) = hold(solo)
    record = solo.ledger.account(a.account)
    assert (record.balance, record.held) == (FUNDS - 100, 100)
    solo.submit(a.settle(solo.tip(a), block, {p1.account: 60, p2.account: 15}, {}, solo.network, solo.clock()))
    record = solo.ledger.account(a.account)
    assert (record.balance, record.held) == (FUNDS - 75, 0)
    assert solo.ledger.account(p1.account).pending == 60
    assert solo.ledger.account(p2.account).pending == 15
    assert total_supply(solo.ledger) == 2 * FUNDS
    settle_hash = solo.ledger.account(a.account).head
    solo.submit(p1.receive(solo.tip(p1), settle_hash, 60, solo.network, solo.clock()))
    assert solo.ledger.account(p1.account).balance == 60
    assert hold_state(solo, digest) == ledger_pb2.LedgerHoldRecord.SETTLED


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ("over_cap", errors.OverPriceCap),
        ("stranger", errors.PayeeNotEligible),
        ("too_much", errors.SettleExceedsHold),
        ("one_left_out", errors.SettleIncomplete),
        ("out_of_order", errors.SettleIncomplete),
        ("unpaid_without_reason", errors.MalformedBlock),
        ("paid_with_a_reason", errors.MalformedBlock),
        ("unknown_reason", errors.MalformedBlock),
    ],
)
def test_bad_settles_are_refused_and_change_nothing(solo: Solo, entries: str, error: type[Exception]) -> None:
    a = solo.wallets[0]
    digest, _, (p1, p2) = hold(solo, amount=100, cap=60)
    gone = ledger_pb2.UNPAID_NOT_DELIVERED
    plan = {
        "over_cap": [(p1.account, 61, 0), (p2.account, 0, gone)],
        "stranger": [(p1.account, 10, 0), (p2.account, 10, 0), (Wallet.generate().account, 10, 0)],
        "too_much": [(p1.account, 60, 0), (p2.account, 50, 0)],
        "one_left_out": [(p1.account, 10, 0)],
        "out_of_order": [(p2.account, 10, 0), (p1.account, 10, 0)],
        "unpaid_without_reason": [(p1.account, 10, 0), (p2.account, 0, 0)],
        "paid_with_a_reason": [(p1.account, 10, gone), (p2.account, 10, 0)],
        "unknown_reason": [(p1.account, 10, 0), (p2.account, 0, 99)],
    }[entries]
    before = snapshot(solo)
    with pytest.raises(error):
        solo.replica.submit(raw_release(solo, a, digest, 100, plan, solo.clock()))
    assert snapshot(solo) == before


def test_only_the_holder_can_settle(solo: Solo) -> None:
    b = solo.wallets[1]
    digest, _, (p1, p2) = hold(solo)
    with pytest.raises(errors.NotHolder):
        solo.replica.submit(raw_release(solo, b, digest, 100, [(p1.account, 10, 0), (p2.account, 10, 0)], 1))


def test_a_hold_binds_its_holder_until_it_expires(solo: Solo) -> None:
    # Before: a 1-hour hold could be settled paying no one 1 ms after it was made, so it promised its payees
    # nothing. Now money leaves a hold without paying anyone only after the expiry (plus the clock skew).
    a = solo.wallets[0]
    digest, block, (p1, p2) = hold(solo, ttl=3_600_000)
    no_one = [(p1.account, 0, ledger_pb2.UNPAID_REJECTED), (p2.account, 0, ledger_pb2.UNPAID_NOT_DELIVERED)]
    before = snapshot(solo)
    for release in (
        raw_release(solo, a, digest, 100, no_one, solo.clock.advance(1)),  # a settle that pays no one
        raw_release(solo, a, digest, 100, [], solo.clock()),  # a refund
    ):
        with pytest.raises(errors.HoldNotExpired):
            solo.replica.submit(release)
    assert snapshot(solo) == before
    with pytest.raises(errors.HoldNotExpired):  # the wallet says so before signing
        a.settle(solo.tip(a), block, {}, {p1.account: 2, p2.account: 1}, solo.network, solo.clock())
    # paying one payee releases it at once; the other is named with its reason, for everyone to see
    settle = a.settle(
        solo.tip(a), block, {p1.account: 40}, {p2.account: ledger_pb2.UNPAID_REJECTED}, solo.network, solo.clock()
    )
    solo.submit(settle)
    assert solo.ledger.account(a.account).balance == FUNDS - 40
    assert [(p.amount, p.reason) for p in settle.payouts] == [
        (40, 0),
        (0, ledger_pb2.UNPAID_REJECTED),
    ]
    with pytest.raises(errors.NothingPending):  # an unpaid entry leaves nothing to receive
        solo.replica.submit(p2.receive(solo.tip(p2), settle_hash(solo, a), 0, solo.network, solo.clock()))


def settle_hash(solo: Solo, wallet: Wallet) -> bytes:
    return solo.ledger.account(wallet.account).head


def hold_state(solo: Solo, digest: bytes) -> int:
    record = solo.ledger.hold(digest)
    assert record is not None
    return record.state


def test_a_settle_that_pays_no_one_waits_for_expiry_and_records_why(solo: Solo) -> None:
    a = solo.wallets[0]
    digest, block, (p1, p2) = hold(solo, ttl=10_000)
    solo.clock.advance(10_000 + MAX_CLOCK_SKEW_MS)
    reasons = {p1.account: ledger_pb2.UNPAID_OUTVOTED, p2.account: ledger_pb2.UNPAID_DECLINED}
    solo.submit(a.settle(solo.tip(a), block, {}, reasons, solo.network, solo.clock()))
    assert solo.ledger.account(a.account).balance == FUNDS
    assert hold_state(solo, digest) == ledger_pb2.LedgerHoldRecord.SETTLED


def test_a_refund_is_never_accepted_before_expiry_by_a_clock_within_the_skew(solo: Solo) -> None:
    # Before: a refund stamped at the expiry was accepted up to 60 s early, by a replica whose clock was 60 s
    # behind the holder's. Now it is stamped at least the allowed skew past the expiry.
    a = solo.wallets[0]
    digest, block, (p1, _) = hold(solo, ttl=10_000)
    expiry = block.expires_at_ms
    solo.clock.now = expiry - 1  # our clock: 1 ms before the expiry
    for stamp, error in (
        (expiry, errors.HoldNotExpired),  # accepted before this change
        (expiry + MAX_CLOCK_SKEW_MS - 1, errors.HoldNotExpired),
        (expiry + MAX_CLOCK_SKEW_MS, errors.BadTimestamp),  # more than the skew in our future
    ):
        with pytest.raises(error):
            solo.replica.submit(raw_release(solo, a, digest, 100, [], stamp))
    with pytest.raises(errors.HoldNotExpired):
        a.refund(solo.tip(a), block, solo.network, expiry)
    solo.clock.now = expiry  # from the expiry on, by our clock, the earliest valid refund is accepted
    solo.submit(a.refund(solo.tip(a), block, solo.network, expiry + MAX_CLOCK_SKEW_MS))
    assert solo.ledger.account(a.account).balance == FUNDS
    with pytest.raises(errors.HoldClosed):
        solo.replica.submit(raw_release(solo, a, digest, 100, [(p1.account, 5, 0)], expiry + MAX_CLOCK_SKEW_MS))


@pytest.mark.parametrize(
    ("ttl", "holder_is_payee", "match"),
    [
        (MIN_HOLD_MS - 1, False, "must expire"),
        (MAX_HOLD_MS + 1, False, "must expire"),
        (MIN_HOLD_MS, True, "holder cannot be a payee"),
    ],
)
def test_holds_that_promise_nothing_are_refused(solo: Solo, ttl: int, holder_is_payee: bool, match: str) -> None:
    a = solo.wallets[0]
    payees = [Wallet.generate().account] + ([a.account] if holder_is_payee else [])
    with pytest.raises(errors.MalformedBlock, match=match):
        a.hold(solo.tip(a), b"r", 10, solo.clock() + ttl, payees, 5, solo.network, solo.clock())
    block = Block(
        kind=HOLD,
        account=a.account,
        previous=ZERO_HASH,
        height=1,
        balance=FUNDS - 10,
        timestamp_ms=solo.clock(),
        amount=10,
        request_id=b"r",
        expires_at_ms=solo.clock() + ttl,
        payees=payees,
        price_cap=5,
    )
    sign_block(block, a.signing_key, solo.network)
    with pytest.raises(errors.MalformedBlock, match=match):
        solo.replica.submit(block)


def test_the_wallet_names_every_payee_or_refuses(solo: Solo) -> None:
    a = solo.wallets[0]
    _, block, (p1, p2) = hold(solo, cap=60)
    cases: list[tuple[dict[bytes, int], dict[bytes, int], type[Exception]]] = [
        ({p1.account: 10}, {}, errors.SettleIncomplete),
        ({p1.account: 10, p2.account: 10}, {p2.account: 1}, errors.SettleIncomplete),
        ({p1.account: 61, p2.account: 1}, {}, errors.OverPriceCap),
        ({p1.account: 10, Wallet.generate().account: 1}, {p2.account: 1}, errors.PayeeNotEligible),
        ({p1.account: 10}, {p2.account: 0}, errors.MalformedBlock),
    ]
    for paid, unpaid, error in cases:
        with pytest.raises(error):
            a.settle(solo.tip(a), block, paid, unpaid, solo.network, solo.clock())
    settle = a.settle(solo.tip(a), block, {p2.account: 7}, {p1.account: 2}, solo.network, solo.clock())
    assert [p.account for p in settle.payouts] == [p1.account, p2.account], "in the hold's order"


def test_state_survives_a_restart(solo: Solo) -> None:
    a, b = solo.wallets
    sent = solo.send(a, b, 10)
    solo.restart()
    assert solo.ledger.account(b.account).pending == 10
    assert solo.ledger.confirmed_count == 1
    solo.receive(b, sent)
    assert solo.ledger.account(b.account).balance == FUNDS + 10


def test_a_ledger_refuses_another_networks_genesis(solo: Solo, tmp_path: Path) -> None:
    from avadios.services.ledger.state import Ledger, LedgerLocked

    other = devnet_genesis([Wallet.generate().account])
    with pytest.raises(LedgerLocked, match="one writer"):
        Ledger(solo.path, solo.genesis)
    solo.close()
    with pytest.raises(errors.BadGenesis, match="belongs to network"):
        Ledger(solo.path, other)
    solo.open()


# ---- genesis and wallet ------------------------------------------------------------------------------------


def test_devnet_genesis_funds_every_node_and_gives_equal_weight(tmp_path: Path) -> None:
    keys = [Wallet.generate().account for _ in range(4)]
    genesis = devnet_genesis(keys)
    assert genesis.supply == 4 * 1_000 * 10**6
    assert {r.weight for r in genesis.representatives} == {1}
    save_genesis(genesis, tmp_path / "genesis.json")
    loaded = load_genesis(tmp_path / "genesis.json")
    assert loaded == genesis and loaded.hash == genesis.hash


def test_genesis_with_a_float_amount_is_refused(tmp_path: Path) -> None:
    data = devnet_genesis([Wallet.generate().account]).to_json()
    data["balances"][0]["amount"] = 1e9
    (tmp_path / "g.json").write_text(json.dumps(data))
    with pytest.raises(errors.BadGenesis, match="integer"):
        load_genesis(tmp_path / "g.json")
    with pytest.raises(errors.BadGenesis):
        Genesis.from_json({"format": "nope"})


def test_wallet_seed_comes_from_the_mnemonic_and_is_stored_0600(tmp_path: Path) -> None:
    words = new_mnemonic()
    assert len(words.split()) == 24
    wallet = create_wallet(tmp_path, words)
    path = tmp_path / "wallet.seed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_wallet(tmp_path).account == wallet.account
    assert Wallet.from_seed(seed_from_mnemonic(words.upper())).account == wallet.account
    with pytest.raises(errors.LedgerError, match="already holds a wallet"):
        create_wallet(tmp_path, new_mnemonic())
    with pytest.raises(errors.LedgerError, match="BIP39"):
        seed_from_mnemonic(" ".join([*words.split()[:-1], "notaword"]))


def test_a_node_alone_writes_one_turns_blocks_with_one_vote_per_32(tmp_path: Path) -> None:
    from avadios.ledger.block import MAX_VOTE_HASHES
    from avadios.services.ledger.audit import audit
    from avadios.services.ledger.replica import Replica

    solo = Solo(tmp_path / "ledger", [Wallet.generate(), Wallet.generate()])
    try:
        solo.replica = Replica(solo.ledger, solo.rep, clock=solo.clock, schedule_flush=lambda: None)
        a, b = solo.wallets
        tip, digests = solo.tip(a), list[bytes]()
        for _ in range(MAX_VOTE_HASHES + 8):  # a chain that grows before any of it is written
            block = a.send(tip, b.account, 1, solo.network, solo.clock.advance(1))
            digest, confirmed = solo.replica.submit(block)
            assert not confirmed and solo.replica.is_unconfirmed(digest)
            tip, digests = ChainTip(digest, block.height, block.balance, block.timestamp_ms), [*digests, digest]
        fork = a.send(solo.tip(a), a.account, 5, solo.network, solo.clock.advance(1))
        with pytest.raises(errors.StalePredecessor):
            solo.replica.submit(fork)  # the first staged block holds that slot
        claim = b.receive(solo.tip(b), digests[0], 1, solo.network, solo.clock.advance(1))
        claimed, _ = solo.replica.submit(claim)  # pays out of a staged send
        assert solo.ledger.confirmed_count == 0 and solo.ledger.account(a.account).height == 0
        assert solo.replica.flush() == 2, "41 blocks: one vote of 32 hashes, one of 9"
        assert solo.ledger.confirmed_count == MAX_VOTE_HASHES + 9
        assert not solo.replica.unconfirmed()
        assert solo.ledger.account(a.account).balance == FUNDS - MAX_VOTE_HASHES - 8
        assert solo.ledger.account(b.account).balance == FUNDS + 1
        assert [len(v.block_hashes) for v in solo.ledger.votes(digests[0])] == [MAX_VOTE_HASHES]
        assert [len(v.block_hashes) for v in solo.ledger.votes(claimed)] == [9]
        solo.restart()
        assert audit(solo.ledger).ok
    finally:
        solo.close()
