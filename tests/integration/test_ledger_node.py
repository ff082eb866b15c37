"""A real node (`avadios up`) with its ledger service: the wallet and ledger commands, the /api/wallet routes,
and a kill -9 of the ledger process in the middle of traffic."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

AVADIOS = str(Path(sys.executable).parent / "avadios")
GENESIS = 1_000 * 1_000_000
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class LedgerNode:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.api = f"http://127.0.0.1:{free_port()}"
        self.nats_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, home: Path | None = None) -> tuple[int, Any]:
        done = subprocess.run(
            [AVADIOS, *args, "--home", str(home or self.home), "--json"], capture_output=True, text=True, timeout=60
        )
        try:
            return done.returncode, json.loads(done.stdout)
        except json.JSONDecodeError:
            return done.returncode, {"stdout": done.stdout, "stderr": done.stderr}

    def start(self) -> None:
        port = self.api.rsplit(":", 1)[1]
        env = {**os.environ, "AVADIOS_INFERENCE_THREADS": "1"}
        with (self.home / "up.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [AVADIOS, "up", "--home", str(self.home), "--api-port", port, "--nats-port", str(self.nats_port)],
                stdout=out,
                stderr=out,
                env=env,
            )
        wait_for(lambda: httpx.get(self.api + "/health", timeout=2).status_code == 200, 180, "the node")
        wait_for(lambda: self.cli("ledger", "status")[0] == 0, 30, "the ledger service")

    def ledger_pid(self) -> int:
        state = json.loads((self.home / "run" / "node.json").read_text())
        return int(state["processes"]["ledger-0"]["pid"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LedgerNode]:
    home = tmp_path / "home"
    home.mkdir()
    n = LedgerNode(home)
    code, made = n.cli("wallet", "new")  # before the first start: the solo genesis funds this wallet
    assert code == 0 and made["address"].startswith("autom_") and len(made["mnemonic"].split()) == 24
    assert (home / "wallet.seed").stat().st_mode & 0o777 == 0o600
    n.start()
    yield n
    n.stop()


def test_wallet_survives_a_ledger_crash_mid_traffic_with_balances_consistent(node: LedgerNode, tmp_path: Path) -> None:
    other = tmp_path / "other"
    code, made = node.cli("wallet", "new", home=other)
    assert code == 0
    to = made["address"]
    code, me = node.cli("wallet", "address")
    code, balance = node.cli("wallet", "balance")
    assert code == 0 and (balance["spendable"], balance["held"], balance["pending"]) == (GENESIS, 0, 0)

    # refused inputs change nothing
    code, out = node.cli("wallet", "send", to, "0.0000001")
    assert code == 2 and out["error"]["reason"] == "bad_amount"
    code, out = node.cli("wallet", "send", to[:-1] + "x", "1")
    assert code == 2 and out["error"]["reason"] == "malformed_address"
    code, out = node.cli("wallet", "send", to, "1000.000001")
    assert code == 1 and "insufficient funds" in out["error"]["message"]
    assert node.cli("wallet", "balance")[1]["spendable"] == GENESIS

    # traffic, and kill -9 of the ledger process in the middle of it
    results: list[tuple[int, Any]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set() and len(results) < 40:
            results.append(node.cli("wallet", "send", to, "0.5", "--wait-confirmed"))

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
    code, sender = node.cli("ledger", "account", me["address"])
    code, receiver = node.cli("ledger", "account", to)
    assert code == 0
    sent = GENESIS - sender["balance"]
    # a send whose reply was lost in the crash may still have been confirmed, never half of one
    assert sent % 500_000 == 0 and confirmed_sends * 500_000 <= sent <= len(results) * 500_000
    assert receiver["pending"] == sent and sender["balance"] + receiver["pending"] == GENESIS
    assert sender["confirmed_height"] == sent // 500_000 and len(sender["head"]) == 64
    code, history = node.cli("wallet", "history")
    assert len(history) == sender["confirmed_height"] and all(h["delta"] == -500_000 for h in history)
    code, status = node.cli("ledger", "status")
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
