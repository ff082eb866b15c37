"""The dashboard's wallet routes: GET /api/wallet, GET /api/wallet/history, POST /api/wallet/send.

The gateway signs with the home's wallet key in its own process and talks to the ledger service over NATS;
amounts in responses are integers of micro-AUTOM.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from avadios.errors import AvadiosError, http_status
from avadios.ledger.address import decode_address
from avadios.ledger.amount import check_amount, parse_autom
from avadios.ledger.client import WalletClient, ledger_stub
from avadios.ledger.errors import BadAmount, LedgerError
from avadios.ledger.wallet import NoWallet, load_wallet
from avadios.transport import NatsChannel
from services.gateway.openai_schema import error_body

log = logging.getLogger("avadios.gateway")
MAX_SEND_BODY = 4096


class SendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str
    amount: str | None = None  # AUTOM as text, up to 6 decimals: "1.25"
    amount_micro: int | None = None  # or an exact integer of micro-AUTOM
    wait_confirmed: bool = False

    def micro(self) -> int:
        if (self.amount is None) == (self.amount_micro is None):
            raise BadAmount("give exactly one of 'amount' (AUTOM as text) or 'amount_micro' (integer)")
        return parse_autom(self.amount) if self.amount is not None else check_amount(self.amount_micro or 0)


def _error(exc: Exception) -> JSONResponse:
    if isinstance(exc, AvadiosError):
        status = 404 if isinstance(exc, NoWallet) else http_status(exc.code)
        reason = exc.reason if isinstance(exc, LedgerError) else exc.code.name.lower()
        return JSONResponse(error_body(exc.message, "wallet_error", reason), status_code=status)
    log.exception("wallet route failed")
    return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", None), status_code=500)


def add_wallet_routes(app: FastAPI, gw: Any) -> None:
    """`gw` is the Gateway: its config (the home), its NATS channel, and its API-key check."""
    channel: NatsChannel = gw.channel
    home = gw.config.home

    def client() -> WalletClient:
        return WalletClient(ledger_stub(channel), load_wallet(home))

    Handler = Callable[[Request], Awaitable[Any]]

    def route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                gw.check_auth(request)
                return JSONResponse(await handler(request))
            except Exception as exc:
                from services.gateway.app import ApiError  # app.py imports this module: import at call time

                if isinstance(exc, ApiError):  # the gateway's own errors (a missing API key) keep their status
                    return JSONResponse(error_body(exc.message, exc.type, exc.code), status_code=exc.status)
                return _error(exc)

        return run

    async def wallet(request: Request) -> dict[str, Any]:
        return await client().balance()

    async def history(request: Request) -> dict[str, Any]:
        try:
            limit = max(1, min(int(request.query_params.get("limit", "50")), 1000))
        except ValueError:
            raise BadAmount("limit must be an integer") from None
        return {"entries": await client().history(limit)}

    async def send(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_SEND_BODY:
            raise BadAmount("request body too large")
        try:
            body = SendBody.model_validate(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
            raise LedgerError(f"invalid send request: {exc}") from None
        destination = decode_address(body.to)
        amount = body.micro()
        result = await client().send(destination, amount, body.wait_confirmed)
        return {**result.to_json(), "to": body.to, "amount": amount}

    app.add_api_route("/api/wallet", route(wallet), methods=["GET"])
    app.add_api_route("/api/wallet/history", route(history), methods=["GET"])
    app.add_api_route("/api/wallet/send", route(send), methods=["POST"])
