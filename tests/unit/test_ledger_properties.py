"""Property tests: over random sends, receives, holds, settles, refunds, forks, bad blocks and restarts, money is
conserved, nothing goes negative, and every confirmed chain verifies from the genesis."""

from __future__ import annotations

import contextlib
import shutil

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from avadios.ledger.block import REFUND, SETTLE, Block, sign_block
from avadios.ledger.errors import LedgerError
from avadios.ledger.wallet import ChainTip, Wallet
from avadios.services.ledger.audit import audit
from avadios.services.ledger.replica import LedgerChainSource
from avadios.v1.ledger_pb2 import UNPAID_NOT_DELIVERED
from tests.ledger_support import FUNDS, Network, Solo, scratch_dir, tip_of, total_supply

WALLETS = [Wallet.from_seed(bytes([i]) * 32) for i in range(1, 5)]

amounts = st.one_of(st.integers(1, 50), st.integers(1, 2 * FUNDS), st.sampled_from([FUNDS, 2**63 - 1]))
op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 3), st.integers(0, 3), amounts),
    st.tuples(st.just("receive"), st.integers(0, 3), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("hold"), st.integers(0, 3), st.integers(0, 3), amounts),
    st.tuples(st.just("settle"), st.integers(0, 3), st.integers(0, 9), st.integers(0, 120)),
    st.tuples(st.just("refund"), st.integers(0, 3), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("fork"), st.integers(0, 3), st.integers(0, 3), amounts),
    st.tuples(st.just("replay"), st.integers(0, 3), st.just(0), st.just(0)),
    st.tuples(st.just("wait"), st.just(0), st.just(0), st.integers(1, 80_000)),
    st.tuples(st.just("restart"), st.just(0), st.just(0), st.just(0)),
)


def _step(solo: Solo, holds: list[bytes], action: tuple[str, int, int, int]) -> None:
    kind, i, j, x = action
    me, other = WALLETS[i], WALLETS[j % len(WALLETS)]
    net, now = solo.network, solo.clock()
    tip = solo.tip(me)
    if kind == "send":
        if not tip.balance:
            return
        block = me.send(tip, other.account, min(x, tip.balance), net, now)
        if x > tip.balance:  # more than there is, honestly signed (balance 0): must be refused
            block.amount, block.balance = x, 0
            sign_block(block, me.signing_key, net)
        solo.replica.submit(block)
    elif kind == "receive":
        entries = solo.ledger.pending_of(me.account)
        if entries:
            source, pending = entries[j % len(entries)]
            solo.replica.submit(me.receive(tip, source, pending.amount, net, now))
    elif kind == "hold":
        if tip.balance:
            amount = min(x, tip.balance)
            payees = [w.account for w in (other, WALLETS[(j + 1) % 4]) if w is not me] or [WALLETS[(i + 1) % 4].account]
            digest, _ = solo.replica.submit(me.hold(tip, b"r", amount, now + 10_000, payees, amount // 2 + 1, net, now))
            holds.append(digest)
    elif kind in ("settle", "refund") and holds:
        digest = holds[j % len(holds)]
        hold = solo.ledger.hold(digest)
        assert hold is not None
        holder = next(w for w in WALLETS if w.account == hold.holder)
        htip = solo.tip(holder)
        # signed by hand, not through the wallet (which refuses what the ledger would): the ledger's rules are tested
        paid = min(x, hold.price_cap + (x % 3 == 0))  # sometimes one over the cap: refused
        block = Block(
            kind=REFUND if kind == "refund" else SETTLE,
            account=holder.account,
            previous=htip.head,
            height=htip.height + 1,
            timestamp_ms=max(now, htip.timestamp_ms),
            source=digest,
        )
        if kind == "settle":
            # the first payee paid `paid` (or unpaid when x is 0), the others unpaid; x % 7 == 1 leaves one out
            for n, payee in enumerate(hold.payees[: len(hold.payees) - (x % 7 == 1)]):
                amount = paid if n == 0 else 0
                block.payouts.add(account=payee, amount=amount, reason=0 if amount else UNPAID_NOT_DELIVERED)
        block.balance = htip.balance + hold.amount - sum(p.amount for p in block.payouts)
        sign_block(block, holder.signing_key, net)
        solo.replica.submit(block)
    elif kind == "fork" and tip.height >= 1:
        # a second block on the predecessor of the head: a double spend that must be refused
        previous = solo.ledger.hash_at(me.account, tip.height - 1) if tip.height > 1 else bytes(32)
        assert previous is not None
        older = solo.ledger.chain(me.account, tip.height - 1, 1) if tip.height > 1 else []
        base = older[0][1] if older else None
        fake_tip = ChainTip(previous, tip.height - 1, base.balance if base else FUNDS, now)
        if fake_tip.balance:
            solo.replica.submit(me.send(fake_tip, other.account, 1, net, now))
    elif kind == "replay" and tip.height:
        solo.replica.submit(solo.ledger.chain(me.account, tip.height, 1)[0][1])
    elif kind == "wait":
        solo.clock.advance(x)
    elif kind == "restart":
        solo.restart()


def _check(solo: Solo) -> None:
    supply = total_supply(solo.ledger)
    assert supply == solo.genesis.supply, "money was created or lost"
    for _, record in solo.ledger.accounts():
        assert min(record.balance, record.held, record.pending) >= 0 and record.balance < 2**63


@settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(op, min_size=5, max_size=40))
def test_money_is_conserved_and_every_chain_verifies(actions: list[tuple[str, int, int, int]]) -> None:
    root = scratch_dir("ledger-prop-")
    solo = Solo(root / "db", WALLETS[:3])  # the fourth wallet starts empty
    holds: list[bytes] = []
    try:
        for action in actions:
            before = {k: r.SerializeToString() for k, r in solo.ledger.accounts()}
            count = solo.ledger.confirmed_count
            try:
                solo.clock.advance(1)
                _step(solo, holds, action)
                event(f"{action[0]} done")
            except LedgerError as exc:
                event(f"{action[0]} refused: {exc.reason}")
                after = {k: r.SerializeToString() for k, r in solo.ledger.accounts()}
                assert after == before and solo.ledger.confirmed_count == count, "a refused block changed state"
            _check(solo)
        report = audit(solo.ledger)
        assert report.ok, report.problems
    finally:
        solo.close()
        shutil.rmtree(root, ignore_errors=True)


def catch_up_all(net: Network) -> None:
    for replica in net:
        for peer in net:
            if peer is not replica:
                replica.catch_up(LedgerChainSource(peer.ledger))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 10**6), st.booleans(), st.integers(0, 2)),
        min_size=1,
        max_size=6,
    )
)
def test_forks_across_replicas_resolve_to_one_chain_and_conserve_money(
    plays: list[tuple[int, int, int, bool, int]],
) -> None:
    root = scratch_dir("ledger-net-")
    net = Network(root, 3, WALLETS[:3])
    try:
        for sender, to, amount, fork, offline in plays:
            me = net.wallets[sender]
            tip = tip_of(net.replicas[0].ledger, me.account)
            if tip.balance < amount:
                continue
            first = me.send(tip, net.wallets[to].account, amount, net.network, net.clock())
            net.replicas[0].submit(first)
            if fork:
                second = me.send(tip, net.wallets[(to + 1) % 3].account, amount, net.network, net.clock())
                with contextlib.suppress(LedgerError):  # refused if node 1 confirmed the first already
                    net.replicas[1].submit(second)
            if offline:  # a node misses the election and must catch up afterwards
                net.hub.set_online(f"node{offline}", False)
            net.settle(rounds=4)
            net.hub.set_online(f"node{offline}", True)
            catch_up_all(net)
        net.settle(rounds=2)
        catch_up_all(net)
        heads = {tuple(r.ledger.account(w.account).head for w in net.wallets) for r in net}
        assert len(heads) == 1, "replicas disagree on a chain"
        for replica in net:
            assert total_supply(replica.ledger) == net.genesis.supply
            assert audit(replica.ledger).ok
    finally:
        net.close()
        shutil.rmtree(root, ignore_errors=True)
