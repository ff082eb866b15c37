"""The wallet routes: GET /api/wallet, GET /api/wallet/history, POST /api/wallet/send.

The gateway signs with the home's wallet key in its own process and talks to the ledger service over NATS;
amounts in responses are integers of micro-AUTOM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from avadios.ledger.address import decode_address
from avadios.ledger.amount import check_amount, parse_autom
from avadios.ledger.client import WalletClient, ledger_stub
from avadios.ledger.errors import BadAmount
from avadios.ledger.wallet import load_wallet
from avadios.transport import NatsChannel

MAX_HISTORY = 1000


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="the recipient's autom_… address")
    amount: str | None = Field(default=None, description="AUTOM as text, up to 6 decimals", examples=["1.25"])
    amount_micro: int | None = Field(default=None, description="or an exact integer of micro-AUTOM")
    wait_confirmed: bool = Field(default=False, description="answer only once the ledger confirmed the block")

    def micro(self) -> int:
        if (self.amount is None) == (self.amount_micro is None):
            raise BadAmount("give exactly one of 'amount' (AUTOM as text) or 'amount_micro' (integer)")
        return parse_autom(self.amount) if self.amount is not None else check_amount(self.amount_micro or 0)


class SendOut(BaseModel):
    hash: str
    confirmed: bool
    received_first: int = Field(description="pending payments claimed first to cover the amount")
    to: str
    amount: int = Field(description="micro-AUTOM")


class WalletOut(BaseModel):
    address: str
    spendable: int
    held: int
    pending: int
    confirmed_height: int


class HistoryOut(BaseModel):
    entries: list[dict[str, Any]] = Field(description="the wallet's blocks, newest first")


def wallet_router(home: Path, channel: NatsChannel) -> APIRouter:
    router = APIRouter(prefix="/api/wallet", tags=["wallet"])
    ledger = ledger_stub(channel)

    def client() -> WalletClient:
        return WalletClient(ledger, load_wallet(home))  # read per request: `avadios wallet new` may come later

    @router.get("", summary="The home wallet's balance")
    async def wallet() -> WalletOut:
        return WalletOut(**await client().balance())

    @router.get("/history", summary="The wallet's blocks, newest first")
    async def history(limit: int = 50) -> HistoryOut:
        return HistoryOut(entries=await client().history(max(1, min(limit, MAX_HISTORY))))

    @router.post("/send", summary="Sign a send with the home's wallet and submit it")
    async def send(body: SendIn) -> SendOut:
        destination = decode_address(body.to)
        amount = body.micro()
        result = await client().send(destination, amount, body.wait_confirmed)
        return SendOut(**result.to_json(), to=body.to, amount=amount)

    return router
