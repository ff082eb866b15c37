"""Wallet operations against the node's ledger service: read balances and history, and sign blocks locally
(the key never leaves this process) before submitting them. Shared by the CLI and the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from avadios.errors import RpcError
from avadios.ledger.address import encode_address
from avadios.ledger.block import KIND_NAMES
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
    return exc.code is grpc.StatusCode.FAILED_PRECONDITION and "predecessor" in exc.message


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
