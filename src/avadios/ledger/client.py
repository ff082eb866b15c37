"""Wallet operations against the node's ledger service: read balances and history, and sign blocks locally
(the key never leaves this process) before submitting them. Shared by the CLI and the gateway."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from avadios.errors import RpcError
from avadios.ledger.address import encode_address
from avadios.ledger.amount import check_amount
from avadios.ledger.block import KIND_NAMES, MAX_CLOCK_SKEW_MS, Block
from avadios.ledger.errors import InsufficientFunds
from avadios.ledger.wallet import ChainTip, Wallet
from avadios.transport import NatsChannel
from avadios.v1 import ledger_pb2
from avadios.v1.ledger_nats import LedgerClient

SEND_ATTEMPTS = 3


def ledger_stub(channel: NatsChannel, timeout: float = 10.0) -> LedgerClient:
    return LedgerClient(channel, default_timeout=timeout)


@dataclass(frozen=True, slots=True)
class SendResult:
    hash: bytes
    confirmed: bool
    received: int  # pending payments claimed first to cover the amount

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash.hex(), "confirmed": self.confirmed, "received_first": self.received}


@dataclass(frozen=True, slots=True)
class BlockResult:
    """A block this wallet signed and submitted: keep a HOLD's `block`, settle and refund take it."""

    hash: bytes
    block: Block
    confirmed: bool


def why_not_serve(
    reply: ledger_pb2.LedgerHoldReply,
    payee: bytes,
    quote: int,
    work_ms: int,
    now_ms: int | None = None,
    need_confirmed: bool = True,
) -> str | None:
    """A payee's check of a hold (GetHold's reply) before it works for it, and again before it hands the result
    over: None when the hold is open, names `payee`, allows `quote` micro-AUTOM, and still binds its holder for
    `work_ms` (until its expiry the holder can release the money only by paying a payee, and every settle names
    every payee, paid or with a reason); otherwise why not."""
    hold = reply.hold
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if need_confirmed and reply.status != ledger_pb2.BLOCK_STATUS_CONFIRMED:
        return "the hold is not confirmed yet"
    if hold.state != ledger_pb2.LedgerHoldRecord.OPEN:
        return f"the hold is {ledger_pb2.LedgerHoldRecord.State.Name(hold.state).lower()}"
    if payee not in hold.payees:
        return "the hold does not name this payee"
    if quote > hold.price_cap:
        return f"the quote of {quote} micro-AUTOM is over the hold's price cap of {hold.price_cap}"
    if now + work_ms > hold.expires_at_ms:
        return f"the hold binds its holder only until {hold.expires_at_ms}, {hold.expires_at_ms - now} ms from now"
    return None


def account_json(reply: ledger_pb2.LedgerAccountReply) -> dict[str, Any]:
    return {
        "address": encode_address(reply.account),
        "balance": reply.balance,
        "held": reply.held,
        "pending": reply.pending,
        "head": reply.head.hex(),
        "confirmed_height": reply.confirmed_height,
        "unconfirmed": reply.unconfirmed,
    }


def history_json(entry: ledger_pb2.LedgerHistoryEntry) -> dict[str, Any]:
    block = entry.block
    item: dict[str, Any] = {
        "hash": entry.hash.hex(),
        "height": block.height,
        "kind": KIND_NAMES.get(block.kind, "unknown"),
        "delta": entry.delta,
        "balance": block.balance,
        "timestamp_ms": block.timestamp_ms,
    }
    if block.destination:
        item["to"] = encode_address(block.destination)
    if block.amount:
        item["amount"] = block.amount
    if block.source:
        item["source"] = block.source.hex()
    if block.payouts:
        item["payouts"] = [{"to": encode_address(p.account), "amount": p.amount} for p in block.payouts]
    return item


def _stale(exc: RpcError) -> bool:
    """Another block of this wallet won the head (another client of it appended first, or the running node claimed
    a payment meanwhile): rebuild on the new head and try again."""
    return exc.code is grpc.StatusCode.FAILED_PRECONDITION and (
        exc.reason == "stale_predecessor" or "predecessor" in exc.message
    )


class WalletClient:
    def __init__(self, stub: LedgerClient, wallet: Wallet) -> None:
        self.stub = stub
        self.wallet = wallet

    async def account(self) -> ledger_pb2.LedgerAccountReply:
        reply: ledger_pb2.LedgerAccountReply = await self.stub.GetAccount(
            ledger_pb2.LedgerAccountRequest(account=self.wallet.account)
        )
        return reply

    async def tip(self) -> tuple[ChainTip, bytes, ledger_pb2.LedgerAccountReply]:
        reply = await self.account()
        tip = ChainTip(reply.head or bytes(32), reply.confirmed_height, reply.balance, reply.head_timestamp_ms)
        return tip, reply.network, reply

    async def balance(self) -> dict[str, Any]:
        reply = await self.account()
        return {
            "address": self.wallet.address,
            "spendable": reply.balance,
            "held": reply.held,
            "pending": reply.pending,
            "confirmed_height": reply.confirmed_height,
        }

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        reply = await self.stub.GetHistory(ledger_pb2.LedgerHistoryRequest(account=self.wallet.account, limit=limit))
        return [history_json(e) for e in reply.entries]

    async def _submit(self, block: ledger_pb2.LedgerBlock, wait: bool) -> ledger_pb2.SubmitBlockReply:
        reply: ledger_pb2.SubmitBlockReply = await self.stub.SubmitBlock(
            ledger_pb2.SubmitBlockRequest(block=block, wait_confirmed=wait)
        )
        return reply

    async def receive_all(self) -> int:
        """Claim every pending payment; returns how many were received."""
        pending = await self.stub.GetPending(ledger_pb2.LedgerPendingRequest(account=self.wallet.account))
        received = 0
        for entry in pending.entries:
            tip, network, _ = await self.tip()
            try:
                await self._submit(self.wallet.receive(tip, entry.source, entry.amount, network), wait=True)
            except RpcError as exc:
                if exc.code is grpc.StatusCode.FAILED_PRECONDITION:
                    continue  # received meanwhile by another client of this wallet
                raise
            received += 1
        return received

    async def send(self, destination: bytes, amount: int, wait: bool = False) -> SendResult:
        """Sign and submit a send; claims pending payments first when the spendable balance is short.
        Another client of the same wallet may append first: then rebuild on the new head and retry."""
        received = 0
        for attempt in range(SEND_ATTEMPTS):
            tip, network, reply = await self.tip()
            if amount > tip.balance and reply.pending and not received:
                received = await self.receive_all()
                tip, network, reply = await self.tip()
            if amount > tip.balance:
                raise InsufficientFunds(
                    f"insufficient funds: sending {amount} micro-AUTOM but the spendable balance is {tip.balance}"
                    + (f" ({reply.held} held)" if reply.held else "")
                )
            block = self.wallet.send(tip, destination, amount, network)
            try:
                result = await self._submit(block, wait)
            except RpcError as exc:
                if _stale(exc) and attempt + 1 < SEND_ATTEMPTS:
                    continue
                raise
            return SendResult(result.hash, result.status == ledger_pb2.BLOCK_STATUS_CONFIRMED, received)
        raise AssertionError("unreachable")

    # ---- holds: what paid network inference builds on ------------------------------------------------------------

    async def _append(self, build: Callable[[ChainTip, bytes], Block], wait: bool) -> BlockResult:
        """Sign a block on the current head and submit it; rebuild on the new head when another client of this
        wallet appended first."""
        for attempt in range(SEND_ATTEMPTS):
            tip, network, _ = await self.tip()
            block = build(tip, network)
            try:
                result = await self._submit(block, wait)
            except RpcError as exc:
                if _stale(exc) and attempt + 1 < SEND_ATTEMPTS:
                    continue
                raise
            return BlockResult(result.hash, block, result.status == ledger_pb2.BLOCK_STATUS_CONFIRMED)
        raise AssertionError("unreachable")

    async def hold(
        self,
        request_id: bytes,
        payees: Sequence[bytes],
        price_cap: int,
        ttl_ms: int,
        amount: int | None = None,
        wait: bool = True,
    ) -> BlockResult:
        """Lock `amount` (default: `price_cap` for each payee) for `request_id` until now + `ttl_ms` (10 s to 7
        days): each payee may be paid up to `price_cap`. Claims pending payments first when the balance is short."""
        total = check_amount(price_cap * len(payees) if amount is None else amount)
        _, _, reply = await self.tip()
        if total > reply.balance and reply.pending:
            await self.receive_all()

        def build(tip: ChainTip, network: bytes) -> Block:
            now = max(int(time.time() * 1000), tip.timestamp_ms)
            return self.wallet.hold(tip, request_id, total, now + ttl_ms, payees, price_cap, network, now)

        return await self._append(build, wait)

    async def settle(
        self, hold: Block, paid: Mapping[bytes, int], unpaid: Mapping[bytes, int], wait: bool = True
    ) -> BlockResult:
        """Close `hold` (a HOLD block of this wallet): pay each payee in `paid` its amount (up to the price cap),
        name each one in `unpaid` with its LedgerUnpaidReason; every payee in exactly one of them. The rest comes
        back. Paying no one is possible only from the hold's expiry + MAX_CLOCK_SKEW_MS (else HoldNotExpired)."""
        return await self._append(lambda tip, network: self.wallet.settle(tip, hold, paid, unpaid, network), wait)

    async def refund(self, hold: Block, wait: bool = True) -> BlockResult:
        """Take all of `hold` back, paying no one: from its expiry + MAX_CLOCK_SKEW_MS (else HoldNotExpired)."""
        return await self._append(lambda tip, network: self.wallet.refund(tip, hold, network), wait)

    async def hold_info(self, digest: bytes) -> ledger_pb2.LedgerHoldReply:
        """A hold's terms and state on this node's replica (NotFound when it knows no such hold)."""
        reply: ledger_pb2.LedgerHoldReply = await self.stub.GetHold(ledger_pb2.LedgerHoldRequest(hash=digest))
        return reply


def refund_from_ms(hold: Block) -> int:
    """The earliest time a refund (or a settle that pays no one) of `hold` is valid."""
    return int(hold.expires_at_ms) + MAX_CLOCK_SKEW_MS
