"""The AUTOM ledger on a 3-node devnet of real processes: blocks and votes travel over the P2P protocol, every
node's wallet is funded by the devnet genesis, and every replica ends with the same chains."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from avadios import devnet
from avadios.errors import RpcError
from avadios.ledger.amount import MICRO_PER_AUTOM
from avadios.ledger.block import block_hash
from avadios.ledger.client import WalletClient, ledger_stub, why_not_serve
from avadios.ledger.errors import HoldNotExpired
from avadios.ledger.wallet import ChainTip, Wallet, load_wallet
from avadios.transport import NatsChannel, connect
from avadios.v1 import ledger_pb2
from avadios.v1.ledger_pb2 import UNPAID_NOT_DELIVERED, UNPAID_REJECTED
from tests.helpers import cli_json, eventually

pytestmark = pytest.mark.slow
FAST = {
    # fast peer liveness, and a representative counts as offline 5 s after its last vote (60 s by default)
    "ping_interval_s": 1.0,
    "dht_rpc_timeout_s": 1.0,
    "dead_after_failures": 2,
    "ledger_online_window_s": 5.0,
    # these tests claim payments themselves (and read them pending first): the nodes' own claiming is off
    "wallet_auto_receive_s": 0.0,
}
AUTOM = MICRO_PER_AUTOM
CONFIRMED = ledger_pb2.BLOCK_STATUS_CONFIRMED


def call(node: devnet.DevnetNode, method: str, request: Any, timeout: float = 30.0) -> Any:
    """One Ledger RPC on a node, over its NATS (faster than a CLI process for polling)."""

    async def go() -> Any:
        nc = await connect(f"nats://127.0.0.1:{node.nats_port}", "test-ledger-devnet")
        try:
            return await getattr(ledger_stub(NatsChannel(nc), timeout=timeout), method)(request)
        finally:
            await nc.close()

    return asyncio.run(go())


def account(node: devnet.DevnetNode, key: bytes) -> ledger_pb2.LedgerAccountReply:
    return call(node, "GetAccount", ledger_pb2.LedgerAccountRequest(account=key))


def wallet(node: devnet.DevnetNode) -> Wallet:
    return load_wallet(Path(node.home))


def heads(nodes: list[devnet.DevnetNode], keys: list[bytes]) -> list[list[tuple[bytes, int, int]]]:
    """Per node: (head, confirmed height, balance) of each account."""
    return [[(r.head, r.confirmed_height, r.balance) for r in (account(n, k) for k in keys)] for n in nodes]


def same_everywhere(nodes: list[devnet.DevnetNode], keys: list[bytes]) -> bool:
    seen = heads(nodes, keys)
    return all(s == seen[0] for s in seen)


def cli_account(node: devnet.DevnetNode, address: str) -> dict[str, Any]:
    result: dict[str, Any] = cli_json("ledger", "account", address, "--home", node.home)
    return {k: result[k] for k in ("head", "balance", "confirmed_height", "pending")}


def sign_send(sender: Wallet, node: devnet.DevnetNode, to: bytes, amount: int) -> ledger_pb2.LedgerBlock:
    reply = account(node, sender.account)
    tip = ChainTip(reply.head or bytes(32), reply.confirmed_height, reply.balance, reply.head_timestamp_ms)
    return sender.send(tip, to, amount, reply.network)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[devnet.DevnetNode]]]:
    directory = tmp_path_factory.mktemp("ledgernet")
    sets = [f"--set={k}={v}" for k, v in FAST.items()]
    try:
        status = cli_json("devnet", "up", "--nodes", "3", "--dir", str(directory), *sets)
        assert [n["health"] for n in status["nodes"]] == ["ok"] * 3
        yield directory, devnet.load(directory)
    finally:
        devnet.down(directory)


def test_every_devnet_wallet_starts_with_1000_autom_on_every_replica(net) -> None:
    directory, nodes = net
    genesis = json.loads((directory / "genesis.json").read_text())
    addresses = [devnet.wallet_address(n) for n in nodes]
    assert sorted(b["account"] for b in genesis["balances"]) == sorted(addresses)
    assert {b["amount"] for b in genesis["balances"]} == {1_000 * AUTOM}
    assert {r["weight"] for r in genesis["representatives"]} == {1} and len(genesis["representatives"]) == 3
    for node in nodes:
        assert (Path(node.home) / "genesis.json").read_text() == (directory / "genesis.json").read_text()
        status = cli_json("ledger", "status", "--home", node.home)
        assert status["self_representative"] is not None and status["total_weight"] == 3


def test_a_transfer_confirms_on_every_replica(net) -> None:
    _, nodes = net
    first, second = nodes[0], nodes[1]
    to = devnet.wallet_address(second)
    sent = cli_json("wallet", "send", to, "1.5", "--wait-confirmed", "--home", first.home)
    assert sent["confirmed"] is True
    keys = [wallet(first).account, wallet(second).account]
    eventually(lambda: same_everywhere(nodes, keys), what="every replica has the send")
    views = [cli_account(n, devnet.wallet_address(first)) for n in nodes]
    assert views[0] == {"head": sent["hash"], "balance": 998_500_000, "confirmed_height": 1, "pending": 0}
    assert views == [views[0]] * 3
    # the payee claims it through another node: that receive reaches every replica too
    assert cli_json("wallet", "receive", "--home", second.home)["received"] == 1
    eventually(lambda: same_everywhere(nodes, keys), what="every replica has the receive")
    assert [cli_account(n, to)["balance"] for n in nodes] == [1_001_500_000] * 3


def test_a_double_spend_submitted_to_two_nodes_at_once_confirms_exactly_one(net) -> None:
    _, nodes = net
    payer = wallet(nodes[2])
    to_a, to_b = wallet(nodes[0]).account, wallet(nodes[1]).account
    # two sends that spend the same head: each alone is valid, together they are a fork of one chain
    one = sign_send(payer, nodes[2], to_a, 600 * AUTOM)
    two = sign_send(payer, nodes[2], to_b, 700 * AUTOM)

    async def submit(node: devnet.DevnetNode, block: ledger_pb2.LedgerBlock) -> Any:
        nc = await connect(f"nats://127.0.0.1:{node.nats_port}", "test-double-spend")
        try:
            stub = ledger_stub(NatsChannel(nc), timeout=40.0)
            return await stub.SubmitBlock(ledger_pb2.SubmitBlockRequest(block=block, wait_confirmed=True))
        finally:
            await nc.close()

    async def both() -> list[Any]:
        return list(await asyncio.gather(submit(nodes[0], one), submit(nodes[1], two), return_exceptions=True))

    results = asyncio.run(both())
    confirmed = [r for r in results if isinstance(r, ledger_pb2.SubmitBlockReply) and r.status == CONFIRMED]
    refused = [r for r in results if isinstance(r, RpcError)]
    assert len(confirmed) == 1 and len(refused) == 1, results
    assert "conflicting" in refused[0].message or "predecessor" in refused[0].message, refused[0].message
    winner = confirmed[0].hash
    network = account(nodes[0], payer.account).network
    hashes = {block_hash(one, network), block_hash(two, network)}
    assert winner in hashes
    (loser,) = hashes - {winner}
    keys = [payer.account, to_a, to_b]
    eventually(lambda: same_everywhere(nodes, keys), what="every replica agrees on the payer's chain")
    for node in nodes:
        reply = account(node, payer.account)
        assert reply.head == winner and reply.unconfirmed == 0
        assert reply.balance in (400 * AUTOM, 300 * AUTOM)
        with pytest.raises(RpcError) as err:
            call(node, "GetBlock", ledger_pb2.LedgerBlockRequest(hash=loser))
        assert "no block" in err.value.message
    # the money that left exists once: one payee has it pending, the other nothing new
    pending = [account(nodes[0], to_a).pending, account(nodes[0], to_b).pending]
    assert sorted(pending) in ([0, 600 * AUTOM], [0, 700 * AUTOM])


def test_a_hold_binds_and_its_settle_names_every_payee_on_every_replica(net) -> None:
    """What paid inference builds on: the requester holds for two providers, a provider checks the hold on its own
    node, the settle pays one and names the other with a reason, and every replica agrees."""
    _, nodes = net
    requester = wallet(nodes[0])
    providers = [wallet(nodes[1]).account, wallet(nodes[2]).account]

    async def flow() -> tuple[bytes, str | None, ledger_pb2.LedgerHoldReply, str | None]:
        clients = [await connect(f"nats://127.0.0.1:{n.nats_port}", "test-hold") for n in nodes]
        try:
            payer = WalletClient(ledger_stub(NatsChannel(clients[0]), timeout=30.0), requester)
            provider_view = WalletClient(ledger_stub(NatsChannel(clients[1]), timeout=30.0), wallet(nodes[1]))
            held = await payer.hold(b"job-1", providers, price_cap=AUTOM // 2, ttl_ms=120_000)
            assert held.confirmed
            # as a provider does: wait until its own node has the hold confirmed (it may see it unconfirmed first)
            seen = await _eventually_async(lambda: _confirmed(provider_view, held.hash))
            ok = why_not_serve(seen, providers[0], quote=AUTOM // 4, work_ms=5_000)
            with pytest.raises(HoldNotExpired):  # paying no one before the expiry: refused before signing
                await payer.settle(held.block, {}, {p: UNPAID_NOT_DELIVERED for p in providers})
            settled = await payer.settle(held.block, {providers[0]: AUTOM // 4}, {providers[1]: UNPAID_REJECTED})
            assert settled.confirmed
            after = await _eventually_async(lambda: _closed(provider_view, held.hash))
            return held.hash, ok, after, why_not_serve(after, providers[0], AUTOM // 4, 5_000)
        finally:
            for nc in clients:
                await nc.close()

    digest, ok, after, now_closed = asyncio.run(flow())
    assert ok is None and now_closed == "the hold is settled" and after.closed_by.source == digest
    assert [(p.amount, p.reason) for p in after.closed_by.payouts] == [(AUTOM // 4, 0), (0, UNPAID_REJECTED)]
    keys = [requester.account, *providers]
    eventually(lambda: same_everywhere(nodes, keys), what="every replica has the hold and its settle")
    assert {account(n, providers[0]).pending >= AUTOM // 4 for n in nodes} == {True}
    assert {account(n, requester.account).held for n in nodes} == {0}


async def _eventually_async(fetch: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await fetch()
        except RpcError:
            found = None
        if found is not None or time.monotonic() > deadline:
            assert found is not None, "not seen in time"
            return found
        await asyncio.sleep(0.1)


async def _confirmed(client: WalletClient, digest: bytes) -> ledger_pb2.LedgerHoldReply | None:
    reply = await client.hold_info(digest)
    return reply if reply.status == ledger_pb2.BLOCK_STATUS_CONFIRMED else None


async def _closed(client: WalletClient, digest: bytes) -> ledger_pb2.LedgerHoldReply | None:
    reply = await client.hold_info(digest)
    return reply if reply.hold.state == ledger_pb2.LedgerHoldRecord.SETTLED else None


def test_a_node_killed_during_traffic_catches_up_after_restart(net) -> None:
    directory, nodes = net
    payer, payee = wallet(nodes[0]), wallet(nodes[1])
    sent: list[bytes] = []
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        async def run() -> None:
            nc = await connect(f"nats://127.0.0.1:{nodes[0].nats_port}", "test-traffic")
            try:
                stub = ledger_stub(NatsChannel(nc), timeout=30.0)
                while not stop.is_set():
                    reply = await stub.GetAccount(ledger_pb2.LedgerAccountRequest(account=payer.account))
                    tip = ChainTip(
                        reply.head or bytes(32), reply.confirmed_height, reply.balance, reply.head_timestamp_ms
                    )
                    block = payer.send(tip, payee.account, AUTOM, reply.network)
                    try:
                        result = await stub.SubmitBlock(ledger_pb2.SubmitBlockRequest(block=block, wait_confirmed=True))
                    except RpcError as exc:
                        errors.append(exc.message)
                        continue
                    if result.status == CONFIRMED:
                        sent.append(result.hash)
            finally:
                await nc.close()

        asyncio.run(run())

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        eventually(lambda: len(sent) >= 3, what="traffic confirms")
        cli_json("devnet", "stop", "--dir", str(directory), "--node", "3", "--kill")
        before_kill = len(sent)
        # two of three representatives still confirm (once the dead one's votes are older than the window)
        eventually(lambda: len(sent) >= before_kill + 3, what="traffic confirms without node-3")
        cli_json("devnet", "start", "--dir", str(directory), "--node", "3")
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    keys = [payer.account, payee.account]
    eventually(lambda: same_everywhere(nodes, keys), timeout=45, what="node-3 catches up")
    views = [cli_account(n, payer.address) for n in nodes]
    assert views == [views[0]] * 3
    assert bytes.fromhex(views[0]["head"]) == sent[-1]
    assert views[0]["confirmed_height"] >= len(sent)


def test_below_quorum_blocks_stay_unconfirmed_until_representatives_return(net) -> None:
    directory, nodes = net
    payer, payee = wallet(nodes[0]), wallet(nodes[2])
    before = account(nodes[0], payer.account)
    for index in (2, 3):
        cli_json("devnet", "stop", "--dir", str(directory), "--node", str(index))
    block = sign_send(payer, nodes[0], payee.account, 2 * AUTOM)
    reply = call(nodes[0], "SubmitBlock", ledger_pb2.SubmitBlockRequest(block=block, wait_confirmed=True), timeout=8)
    assert reply.status == ledger_pb2.BLOCK_STATUS_UNCONFIRMED
    time.sleep(4.0)  # a node alone holds 1 of 3 weight: the quorum needs 2, whatever it sees as online
    after = account(nodes[0], payer.account)
    assert (after.head, after.balance, after.unconfirmed) == (before.head, before.balance, 1)
    status = cli_json("ledger", "status", "--home", nodes[0].home)
    assert status["unconfirmed_blocks"] == 1 and status["quorum_weight"] == 2
    cli_json("devnet", "start", "--dir", str(directory), "--node", "2")
    eventually(lambda: account(nodes[0], payer.account).head == reply.hash, timeout=45, what="quorum returns")
    cli_json("devnet", "start", "--dir", str(directory), "--node", "3")
    eventually(lambda: same_everywhere(nodes, [payer.account, payee.account]), timeout=45, what="all agree")
    assert account(nodes[2], payer.account).balance == before.balance - 2 * AUTOM
