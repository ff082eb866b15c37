"""Ledger confirmation latency on a 3-node devnet of real processes: a signed send is submitted to one node and
timed until that node confirms it (final votes over quorum, gossiped over P2P) and until every replica has it.

Run: .venv/bin/python bench/ledger_confirmation.py --transfers 200 [--parallel 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from avadios import devnet
from avadios.ledger.client import ledger_stub
from avadios.ledger.wallet import ChainTip, Wallet, load_wallet
from avadios.transport import NatsChannel, connect
from avadios.v1 import ledger_pb2
from avadios.v1.ledger_nats import LedgerClient
from bench.common import percentile

# The nodes' own claiming of payments is off: it would append RECEIVE blocks to the chains this benchmark sends from.
SETTINGS = {"ping_interval_s": 1.0, "dht_rpc_timeout_s": 1.0, "dead_after_failures": 2, "wallet_auto_receive_s": 0}
CONFIRMED = ledger_pb2.BLOCK_STATUS_CONFIRMED


async def _tip(stub: LedgerClient, wallet: Wallet) -> tuple[ChainTip, bytes]:
    r = await stub.GetAccount(ledger_pb2.LedgerAccountRequest(account=wallet.account))
    return ChainTip(r.head or bytes(32), r.confirmed_height, r.balance, r.head_timestamp_ms), r.network


async def _everywhere(stubs: list[LedgerClient], account: bytes, digest: bytes) -> None:
    for stub in stubs:
        while True:  # polled: a replica has no "tell me when" call, and a 1 ms poll adds at most that
            if (await stub.GetAccount(ledger_pb2.LedgerAccountRequest(account=account))).head == digest:
                break
            await asyncio.sleep(0.001)


async def _sender(
    index: int,
    stubs: list[LedgerClient],
    wallet: Wallet,
    to: bytes,
    count: int,
    local: list[float],
    everywhere: list[float],
) -> None:
    mine, others = stubs[index], [s for i, s in enumerate(stubs) if i != index]
    for _ in range(count):
        tip, network = await _tip(mine, wallet)
        block = wallet.send(tip, to, 1, network)
        started = time.perf_counter()
        reply = await mine.SubmitBlock(ledger_pb2.SubmitBlockRequest(block=block, wait_confirmed=True), timeout=30)
        if reply.status != CONFIRMED:
            raise SystemExit(f"block {reply.hash.hex()[:16]} not confirmed within 30 s")
        local.append(time.perf_counter() - started)
        await _everywhere(others, wallet.account, reply.hash)
        everywhere.append(time.perf_counter() - started)


async def measure(nodes: list[devnet.DevnetNode], transfers: int, parallel: int) -> None:
    clients = [await connect(f"nats://127.0.0.1:{n.nats_port}", "bench-confirmation") for n in nodes]
    stubs = [ledger_stub(NatsChannel(nc), timeout=30) for nc in clients]
    wallets = [load_wallet(Path(n.home)) for n in nodes]
    try:
        warm_local: list[float] = []
        await _sender(0, stubs, wallets[0], wallets[1].account, 5, warm_local, [])  # links, caches, JIT-free warm-up
        local: list[float] = []
        everywhere: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _sender(
                    i,
                    stubs,
                    wallets[i],
                    wallets[(i + 1) % len(nodes)].account,
                    transfers // parallel,
                    local,
                    everywhere,
                )
                for i in range(parallel)
            )
        )
        elapsed = time.perf_counter() - started
        for name, values in (("confirmed at the submitting node", local), ("confirmed on all 3 replicas", everywhere)):
            ms = [v * 1000 for v in values]
            print(
                f"{name}: p50 {percentile(ms, 50):.1f} ms, p95 {percentile(ms, 95):.1f} ms, "
                f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms (n={len(ms)})"
            )
        print(f"{len(local)} transfers in {elapsed:.1f} s ({len(local) / elapsed:.1f}/s, {parallel} sender(s) at once)")
    finally:
        for nc in clients:
            await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=1, help="wallets sending at once, each through its own node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avadios-bench-") as tmp:
        started = time.perf_counter()
        nodes = devnet.up(Path(tmp), 3, None, SETTINGS)
        print(f"3-node devnet healthy in {time.perf_counter() - started:.1f} s")
        try:
            time.sleep(3.0)  # let discovery list every peer: until then a broadcast reaches fewer nodes
            asyncio.run(measure(nodes, args.transfers, min(args.parallel, len(nodes))))
        finally:
            devnet.down(Path(tmp))


if __name__ == "__main__":
    main()
