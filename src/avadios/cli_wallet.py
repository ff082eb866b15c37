"""`avadios wallet …` and `avadios ledger …`: the wallet of a home and the node's ledger replica.

The wallet key is read from the home and signs here, in the CLI process; only signed blocks go to the node.
Amounts are typed in AUTOM (up to 6 decimals, parsed exactly); every --json amount is integer micro-AUTOM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from avadios.cli_common import (
    CONNECT_TIMEOUT_S,
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    Commands,
    add_command,
    config_of,
    console,
    emit_json,
    report_failure,
    require_node,
)
from avadios.config import NodeConfig
from avadios.errors import AvadiosError, Unavailable
from avadios.ledger.address import decode_address, encode_address
from avadios.ledger.amount import format_autom, parse_autom
from avadios.ledger.client import WalletClient, account_json, ledger_stub
from avadios.ledger.errors import LedgerError
from avadios.ledger.wallet import create_wallet, load_wallet, new_mnemonic
from avadios.transport import NatsChannel, connect_within
from avadios.v1 import ledger_pb2
from avadios.v1.ledger_nats import LedgerClient

T = TypeVar("T")


def _fail(args: argparse.Namespace, exc: AvadiosError, code: int = EXIT_ERROR) -> int:
    reason = exc.reason if isinstance(exc, LedgerError) else exc.code.name.lower()
    return report_failure(args, CliError(exc.message, code, reason, exc.code.name))


async def _call(config: NodeConfig, body: Callable[[LedgerClient], Awaitable[T]]) -> T:
    state = require_node(config)
    nc = await connect_within(state["nats_url"], "avadios-cli", CONNECT_TIMEOUT_S)
    try:
        return await body(ledger_stub(NatsChannel(nc), timeout=30.0))
    finally:
        await nc.close()


def _run(args: argparse.Namespace, body: Callable[[LedgerClient], Awaitable[T]]) -> T | int:
    """Run `body` against the running node's ledger; an int result is an exit status already reported."""
    config = config_of(args)
    require_node(config)
    try:
        return asyncio.run(_call(config, body))
    except Unavailable:
        raise  # the node is not there (main says how to start it), not a refusal
    except AvadiosError as exc:
        return _fail(args, exc)


def _show(args: argparse.Namespace, result: T | int, for_people: Callable[[T], None]) -> int:
    """Report what `_run` returned: JSON for scripts, `for_people` otherwise; an int is an exit status already."""
    if isinstance(result, int):
        return result
    if args.json:
        emit_json(result)
    else:
        for_people(result)
    return 0


# ---- wallet -------------------------------------------------------------------------------------------------


def cmd_wallet_new(args: argparse.Namespace) -> int:
    config = config_of(args)
    try:
        words = sys.stdin.read() if args.restore else new_mnemonic()
        wallet = create_wallet(config.home, words)
    except LedgerError as exc:
        return _fail(args, exc, EXIT_USAGE)
    if args.json:
        emit_json({"address": wallet.address, **({} if args.restore else {"mnemonic": words})})
        return 0
    if not args.restore:
        console.print("[bold]Your wallet's recovery phrase[/] (shown once; write it down and keep it offline):")
        print(words)
    console.print(f"address [bold]{wallet.address}[/]  (key stored 0600 in {config.home / 'wallet.seed'})")
    return 0


def cmd_wallet_address(args: argparse.Namespace) -> int:
    try:
        wallet = load_wallet(config_of(args).home)
    except LedgerError as exc:
        return _fail(args, exc, EXIT_USAGE)
    if args.json:
        emit_json({"address": wallet.address, "public_key": wallet.account.hex()})
    else:
        print(wallet.address)
    return 0


def _wallet_client(args: argparse.Namespace, stub: LedgerClient) -> WalletClient:
    return WalletClient(stub, load_wallet(config_of(args).home))


def cmd_wallet_balance(args: argparse.Namespace) -> int:
    def for_people(result: dict[str, Any]) -> None:
        print(
            f"spendable {format_autom(result['spendable'])} AUTOM   held {format_autom(result['held'])}   "
            f"pending {format_autom(result['pending'])}"
        )

    return _show(args, _run(args, lambda stub: _wallet_client(args, stub).balance()), for_people)


def cmd_wallet_send(args: argparse.Namespace) -> int:
    try:
        destination = decode_address(args.address)
        amount = parse_autom(args.amount)
    except LedgerError as exc:
        return _fail(args, exc, EXIT_USAGE)
    result = _run(args, lambda stub: _wallet_client(args, stub).send(destination, amount, args.wait_confirmed))
    if isinstance(result, int):
        return result
    if args.json:
        emit_json({**result.to_json(), "to": args.address, "amount": amount})
    else:
        state = "confirmed" if result.confirmed else "submitted, not confirmed yet"
        print(f"sent {format_autom(amount)} AUTOM to {args.address}: {state} (block {result.hash.hex()})")
    return 0 if result.confirmed or not args.wait_confirmed else EXIT_ERROR


def cmd_wallet_receive(args: argparse.Namespace) -> int:
    async def body(stub: LedgerClient) -> dict[str, int]:
        # a dict, not the bare count: `_run` takes an int result for an exit status already reported
        return {"received": await _wallet_client(args, stub).receive_all()}

    return _show(args, _run(args, body), lambda result: print(f"received {result['received']} pending payment(s)"))


def cmd_wallet_history(args: argparse.Namespace) -> int:
    def for_people(result: list[dict[str, Any]]) -> None:
        for item in result:
            other = item.get("to") or item.get("source", "")
            sign = "+" if item["delta"] >= 0 else "-"
            print(f"#{item['height']:<5} {item['kind']:<8} {sign}{format_autom(abs(item['delta'])):>16} AUTOM  {other}")

    return _show(args, _run(args, lambda stub: _wallet_client(args, stub).history(args.limit)), for_people)


# ---- ledger -------------------------------------------------------------------------------------------------


def cmd_ledger_account(args: argparse.Namespace) -> int:
    try:
        account = decode_address(args.address)
    except LedgerError as exc:
        return _fail(args, exc, EXIT_USAGE)

    async def body(stub: LedgerClient) -> dict[str, Any]:
        return account_json(await stub.GetAccount(ledger_pb2.LedgerAccountRequest(account=account)))

    def for_people(result: dict[str, Any]) -> None:
        print(
            f"{result['address']}\n  balance {format_autom(result['balance'])} AUTOM   held "
            f"{format_autom(result['held'])}   pending {format_autom(result['pending'])}\n"
            f"  head {result['head'] or '-'}   confirmed height {result['confirmed_height']}"
        )

    return _show(args, _run(args, body), for_people)


def status_json(reply: ledger_pb2.LedgerStatusReply) -> dict[str, Any]:
    return {
        "network": reply.network.hex(),
        "supply": reply.supply,
        "accounts": reply.accounts,
        "confirmed_blocks": reply.confirmed_blocks,
        "unconfirmed_blocks": reply.unconfirmed_blocks,
        "online_weight": reply.online_weight,
        "total_weight": reply.total_weight,
        "quorum_weight": reply.quorum_weight,
        "self_representative": encode_address(reply.self_representative) if reply.self_representative else None,
        "representatives": [
            {"address": encode_address(r.account), "weight": r.weight, "online": r.online, "self": r.is_self}
            for r in reply.representatives
        ],
    }


def cmd_ledger_status(args: argparse.Namespace) -> int:
    async def body(stub: LedgerClient) -> dict[str, Any]:
        return status_json(await stub.GetStatus(ledger_pb2.LedgerStatusRequest()))

    def for_people(result: dict[str, Any]) -> None:
        online = sum(1 for r in result["representatives"] if r["online"])
        print(
            f"network {result['network'][:16]}  supply {format_autom(result['supply'])} AUTOM  "
            f"accounts {result['accounts']}\nconfirmed blocks {result['confirmed_blocks']}  "
            f"unconfirmed {result['unconfirmed_blocks']}\n"
            f"representatives online {online}/{len(result['representatives'])}"
            f"  weight {result['online_weight']}/{result['total_weight']}  quorum needs {result['quorum_weight']}"
        )

    return _show(args, _run(args, body), for_people)


# ---- registration -------------------------------------------------------------------------------------------


def register(commands: Commands) -> None:
    wallet = commands.add_parser("wallet", help="this home's AUTOM wallet", description="this home's AUTOM wallet")
    sub = wallet.add_subparsers(dest="wallet_command", required=True, metavar="COMMAND")
    new = add_command(sub, "new", cmd_wallet_new, "create a wallet: a 24-word recovery phrase, shown once", True)
    new.add_argument("--restore", action="store_true", help="read an existing recovery phrase from stdin instead")
    add_command(sub, "address", cmd_wallet_address, "print the wallet's address", True)
    add_command(sub, "balance", cmd_wallet_balance, "spendable, held and pending AUTOM", True)
    send = add_command(sub, "send", cmd_wallet_send, "send AUTOM to an address", True)
    send.add_argument("address", help="the recipient's autom_… address")
    send.add_argument("amount", help="AUTOM, up to 6 decimals, e.g. 1.25")
    send.add_argument("--wait-confirmed", action="store_true", help="wait until the ledger confirms the block")
    add_command(sub, "receive", cmd_wallet_receive, "claim every payment waiting for this wallet", True)
    history = add_command(sub, "history", cmd_wallet_history, "the wallet's blocks, newest first", True)
    history.add_argument("--limit", type=int, default=50, help="how many blocks (default 50)")

    ledger = commands.add_parser("ledger", help="the node's ledger replica", description="the node's ledger replica")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")
    account = add_command(lsub, "account", cmd_ledger_account, "an account's balance, pending, head and height", True)
    account.add_argument("address", help="an autom_… address")
    add_command(lsub, "status", cmd_ledger_status, "replica health, representatives online, unconfirmed blocks", True)
