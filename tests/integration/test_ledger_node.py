"""A real node (`avadios up`) with its ledger service: the wallet and ledger commands, the /api/wallet routes,
and a kill -9 of the ledger process in the middle of traffic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import AVADIOS, Node, wait_for

GENESIS = 1_000 * 1_000_000
pytestmark = pytest.mark.slow


class LedgerNode(Node):
    def jcli(self, *args: str, home: Path | None = None) -> tuple[int, Any]:
        done = subprocess.run(
            [AVADIOS, *args, "--home", str(home or self.home), "--json"], capture_output=True, text=True, timeout=60
        )
        try:
            return done.returncode, json.loads(done.stdout)
        except json.JSONDecodeError:
            return done.returncode, {"stdout": done.stdout, "stderr": done.stderr}

    @property
    def api(self) -> str:
        return self.api_url

    def start_with_ledger(self) -> None:
        self.start()
        wait_for(lambda: self.jcli("ledger", "status")[0] == 0, 30, "the ledger service")

    def ledger_pid(self) -> int:
        return self.pid_of("ledger-0")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LedgerNode]:
    home = tmp_path / "home"
    home.mkdir()
    n = LedgerNode(home, env={"AVADIOS_INFERENCE_THREADS": "1"})
    code, made = n.jcli("wallet", "new")  # before the first start: the solo genesis funds this wallet
    assert code == 0 and made["address"].startswith("autom_") and len(made["mnemonic"].split()) == 24
    assert (home / "wallet.seed").stat().st_mode & 0o777 == 0o600
    n.start_with_ledger()
    yield n
    n.stop()


def test_wallet_survives_a_ledger_crash_mid_traffic_with_balances_consistent(node: LedgerNode, tmp_path: Path) -> None:
    other = tmp_path / "other"
    code, made = node.jcli("wallet", "new", home=other)
    assert code == 0
    to = made["address"]
    code, me = node.jcli("wallet", "address")
    code, balance = node.jcli("wallet", "balance")
    assert code == 0 and (balance["spendable"], balance["held"], balance["pending"]) == (GENESIS, 0, 0)

    # refused inputs change nothing
    code, out = node.jcli("wallet", "send", to, "0.0000001")
    assert code == 2 and out["error"]["reason"] == "bad_amount"
    code, out = node.jcli("wallet", "send", to[:-1] + "x", "1")
    assert code == 2 and out["error"]["reason"] == "malformed_address"
    code, out = node.jcli("wallet", "send", to, "1000.000001")
    assert code == 1 and "insufficient funds" in out["error"]["message"]
    assert node.jcli("wallet", "balance")[1]["spendable"] == GENESIS

    # traffic, and kill -9 of the ledger process in the middle of it
    results: list[tuple[int, Any]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set() and len(results) < 40:
            results.append(node.jcli("wallet", "send", to, "0.5", "--wait-confirmed"))

    worker = threading.Thread(target=traffic)
    worker.start()
    wait_for(lambda: sum(1 for c, _ in results if c == 0) >= 3, 60, "a few confirmed sends")
    victim = node.ledger_pid()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: node.ledger_pid() != victim, 30, "the supervisor to restart the ledger")
    wait_for(lambda: sum(1 for c, _ in results[-3:] if c == 0) == 3 and len(results) >= 8, 90, "sends after it")
    stop.set()
    worker.join(timeout=120)

    confirmed_sends = sum(1 for code, _ in results if code == 0)
    failed = [out for code, out in results if code != 0]
    assert all(out["error"]["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED") for out in failed), failed
    code, sender = node.jcli("ledger", "account", me["address"])
    code, receiver = node.jcli("ledger", "account", to)
    assert code == 0
    sent = GENESIS - sender["balance"]
    # a send whose reply was lost in the crash may still have been confirmed, never half of one
    assert sent % 500_000 == 0 and confirmed_sends * 500_000 <= sent <= len(results) * 500_000
    assert receiver["pending"] == sent and sender["balance"] + receiver["pending"] == GENESIS
    assert sender["confirmed_height"] == sent // 500_000 and len(sender["head"]) == 64
    code, history = node.jcli("wallet", "history")
    assert len(history) == sender["confirmed_height"] and all(h["delta"] == -500_000 for h in history)
    code, status = node.jcli("ledger", "status")
    assert status["confirmed_blocks"] == sender["confirmed_height"] and status["unconfirmed_blocks"] == 0
    assert status["supply"] == GENESIS and status["representatives"][0]["self"]

    # the dashboard's HTTP API
    wallet = httpx.get(node.api + "/api/wallet", timeout=10).json()
    assert wallet["spendable"] == sender["balance"] and wallet["address"] == me["address"]
    reply = httpx.post(node.api + "/api/wallet/send", json={"to": to, "amount": "1.25", "wait_confirmed": True})
    assert reply.status_code == 200 and reply.json()["confirmed"] and reply.json()["amount"] == 1_250_000
    bad = httpx.post(node.api + "/api/wallet/send", json={"to": to, "amount_micro": GENESIS * 2})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "insufficient_funds"
    bad = httpx.post(node.api + "/api/wallet/send", json={"to": "autom_nope", "amount": "1"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed_address"
    entries = httpx.get(node.api + "/api/wallet/history", params={"limit": 2}, timeout=10).json()["entries"]
    assert entries[0]["delta"] == -1_250_000 and len(entries) == 2
    assert httpx.get(node.api + "/api/wallet", timeout=10).json()["spendable"] == sender["balance"] - 1_250_000
