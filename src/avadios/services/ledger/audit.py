"""A full audit of a replica: every chain re-verified from the genesis, every balance recomputed, the supply
counted. Used at the end of property tests, after kill -9, and by `ledger status` when asked to verify."""

from __future__ import annotations

from dataclasses import dataclass, field

from avadios.ledger.block import (
    HOLD,
    RECEIVE,
    REFUND,
    SEND,
    SETTLE,
    ZERO_HASH,
    Block,
    final_vote_weight,
    proves_quorum,
    verify_block,
)
from avadios.ledger.errors import LedgerError
from avadios.services.ledger.state import HoldRecord, Ledger, PendingRecord


@dataclass(slots=True)
class AuditReport:
    accounts: int = 0
    blocks: int = 0
    supply: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def audit(ledger: Ledger, check_votes: bool = True) -> AuditReport:
    report = AuditReport()
    genesis = ledger.genesis
    start = {a.account: a.amount for a in genesis.balances}
    pending_by_account: dict[bytes, int] = {}
    for key, pending in _all_pending(ledger):
        pending_by_account[key[:32]] = pending_by_account.get(key[:32], 0) + pending
    open_held: dict[bytes, int] = {}
    for _, hold in _all_holds(ledger):
        if hold.state == HoldRecord.OPEN:
            open_held[hold.holder] = open_held.get(hold.holder, 0) + hold.amount

    verified: set[bytes] = set()
    for account, record in ledger.accounts():
        report.accounts += 1
        report.supply += record.balance + record.held + record.pending
        balance, previous = start.get(account, 0), ZERO_HASH
        for digest, block in ledger.chain(account, 1, record.height + 1):
            report.blocks += 1
            where = f"{account.hex()[:16]}@{block.height}"
            try:
                if verify_block(block, ledger.network) != digest:
                    report.problems.append(f"{where}: stored under the wrong hash")
            except LedgerError as exc:
                report.problems.append(f"{where}: {exc.message}")
            if block.previous != previous:
                report.problems.append(f"{where}: does not link to the block before it")
            balance = _replay(ledger, block, balance, where, report)
            if balance != block.balance:
                report.problems.append(f"{where}: balance {block.balance} but the chain gives {balance}")
            if check_votes:
                weight = final_vote_weight(ledger.votes(digest), digest, ledger.network, genesis.weight_of, verified)
                if not proves_quorum(weight, genesis.total_weight, genesis.online_floor_percent):
                    report.problems.append(f"{where}: confirmed without a quorum of final votes")
            previous = digest
        if ledger.chain(account, record.height + 1, 1) or (record.height and previous != record.head):
            report.problems.append(f"{account.hex()[:16]}: head does not match its chain")
        if record.balance != balance:
            report.problems.append(f"{account.hex()[:16]}: balance {record.balance} but its chain gives {balance}")
        if record.pending != pending_by_account.get(account, 0):
            report.problems.append(f"{account.hex()[:16]}: pending total does not match its pending entries")
        if record.held != open_held.get(account, 0):
            report.problems.append(f"{account.hex()[:16]}: held total does not match its open holds")
    if report.supply != genesis.supply:
        report.problems.append(f"supply is {report.supply} micro-AUTOM; the genesis made {genesis.supply}")
    if report.blocks != ledger.confirmed_count:
        report.problems.append(f"{report.blocks} blocks in chains but {ledger.confirmed_count} counted as confirmed")
    return report


def _replay(ledger: Ledger, block: Block, balance: int, where: str, report: AuditReport) -> int:
    kind = block.kind
    if kind == SEND:
        return balance - int(block.amount)
    if kind == HOLD:
        return balance - int(block.amount)
    source = ledger.block(block.source)
    if source is None:
        report.problems.append(f"{where}: names a source block the ledger does not have")
        return balance
    if kind == RECEIVE:
        account = block.account
        if source.kind == SEND and source.destination == account:
            return balance + int(source.amount)
        paid = [p.amount for p in source.payouts if p.account == account and p.amount] if source.kind == SETTLE else []
        if not paid:
            report.problems.append(f"{where}: receives a payment that was not made to it")
            return balance
        return balance + int(paid[0])
    if kind == SETTLE:
        return balance + int(source.amount) - sum(int(p.amount) for p in block.payouts)
    if kind == REFUND:
        return balance + int(source.amount)
    report.problems.append(f"{where}: unknown kind {kind}")
    return balance


def _all_pending(ledger: Ledger) -> list[tuple[bytes, int]]:
    return [(key, PendingRecord.FromString(raw).amount) for key, raw in ledger.scan("pending")]


def _all_holds(ledger: Ledger) -> list[tuple[bytes, HoldRecord]]:
    return [(key, HoldRecord.FromString(raw)) for key, raw in ledger.scan("holds")]
