"""Single-replica validated transfers per second, divided by Ed25519 verifications per second in the same run.

A transfer is one signed send block submitted to a replica that is the network's only representative: shape
checks, BLAKE3 hash, the owner's Ed25519 signature verified, every balance rule, the representative's final
vote signed, and the block with its effects and vote written to RocksDB. Blocks are signed beforehand (wallets
sign on their own machines). The goal is a ratio of at least 0.5: the ledger's own work may cost no more than
one more signature check per block.

The replica signs its votes when it is flushed (the service: once per event-loop turn), one vote for up to 32
blocks, and writes the blocks of a flush in one batch. "replica, idle" flushes after every block (one vote and
one write per block: what a lone request gets); "replica, loaded" flushes every --turn blocks (what the
service does when that many requests arrive in one loop turn).

    .venv/bin/python bench/ledger_throughput.py [--transfers 20000] [--accounts 200] [--turn 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nacl.bindings
from nacl.signing import SigningKey

from avadios.ledger.block import block_hash
from avadios.ledger.genesis import Allocation, Genesis, RepresentativeWeight
from avadios.ledger.wallet import ChainTip, Wallet
from avadios.services.ledger.replica import Replica
from avadios.services.ledger.state import Ledger

FUNDS = 1_000_000_000


def verifications_per_s(n: int) -> float:
    key = SigningKey.generate()
    public = bytes(key.verify_key)
    messages = [os.urandom(32) for _ in range(n)]
    signed = [key.sign(m).signature + m for m in messages]
    start = time.perf_counter()
    for item in signed:
        nacl.bindings.crypto_sign_open(item, public)
    return n / (time.perf_counter() - start)


def prepare(accounts: int, transfers: int) -> tuple[Genesis, SigningKey, list]:
    wallets = [Wallet.generate() for _ in range(accounts)]
    rep = SigningKey.generate()
    genesis = Genesis(
        "bench",
        tuple(Allocation(w.account, FUNDS) for w in wallets),  # type: ignore[arg-type]
        (RepresentativeWeight(bytes(rep.verify_key), 1),),
    )
    tips = {w.account: ChainTip(balance=FUNDS) for w in wallets}
    blocks = []
    network = genesis.hash
    now = int(time.time() * 1000)
    for i in range(transfers):
        sender, to = wallets[i % accounts], wallets[(i * 7 + 1) % accounts]
        tip = tips[sender.account]
        block = sender.send(tip, to.account, 1 + i % 1000, network, now)
        tips[sender.account] = ChainTip(block_hash(block, network), block.height, block.balance, now)
        blocks.append(block)
    return genesis, rep, blocks


def run(genesis: Genesis, rep: SigningKey, blocks: list, root: Path, turn: int) -> float:
    """Transfers per second through the core (turn 0: check + apply) or through a voting replica flushed every
    `turn` blocks."""
    ledger = Ledger(root, genesis)
    try:
        if turn:
            replica = Replica(ledger, rep, schedule_flush=lambda: None)
            start = time.perf_counter()
            for index, block in enumerate(blocks, 1):
                replica.submit(block)
                if index % turn == 0:
                    replica.flush()
            replica.flush()
        else:
            now = int(time.time() * 1000)
            start = time.perf_counter()
            for block in blocks:
                ledger.apply(ledger.check(block, now))
        elapsed = time.perf_counter() - start
        assert ledger.confirmed_count == len(blocks)
    finally:
        ledger.close()
    return len(blocks) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--turn", type=int, default=32, help="blocks per flush in the loaded replica phase")
    args = parser.parse_args()

    genesis, rep, blocks = prepare(args.accounts, args.transfers)
    root = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    try:
        phases = (
            ("core", 0, "check + apply: signature, rules, one write batch"),
            ("replica, idle", 1, "solo representative flushed per block: + one final vote and one write each"),
            (
                "replica, loaded",
                args.turn,
                f"solo representative flushed every {args.turn} blocks: one vote per 32, one write per flush",
            ),
        )
        for label, turn, what in phases:
            # verifications are measured right before and after, so machine load affects both sides alike
            before = verifications_per_s(5_000)
            transfers = run(genesis, rep, blocks, root / label.replace(", ", "-"), turn)
            verify = (before + verifications_per_s(5_000)) / 2
            print(
                f"ledger_throughput {label}: {transfers:,.0f} validated transfers/s; Ed25519 verify {verify:,.0f}/s; "
                f"ratio {transfers / verify:.2f} (goal >= 0.5) [{what}; {len(blocks)} sends, "
                f"{args.accounts} accounts, RocksDB on disk, no fsync]"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
