"""A ledger writer to kill: applies random transfers and holds to a solo replica until killed, printing the
confirmed count after each write returns. `python -m tests.ledger_writer DIR` (continues an existing DIR)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from nacl.signing import SigningKey

from avadios.ledger.errors import LedgerError
from avadios.ledger.genesis import GENESIS_FILE, load_genesis, save_genesis
from avadios.ledger.wallet import Wallet
from avadios.services.ledger.replica import Replica
from avadios.services.ledger.state import Ledger
from tests.ledger_support import Clock, make_genesis, tip_of

WALLETS = [Wallet.from_seed(bytes([i]) * 32) for i in range(1, 6)]
REPRESENTATIVE = SigningKey(bytes([99]) * 32)


def main(root: Path) -> None:
    path = root / GENESIS_FILE
    if not path.exists():
        save_genesis(make_genesis(WALLETS, [REPRESENTATIVE]), path)
    genesis = load_genesis(path)
    ledger = Ledger(root / "ledger", genesis)
    clock = Clock(max((r.timestamp_ms for _, r in ledger.accounts()), default=0) + 1)
    replica = Replica(ledger, REPRESENTATIVE, clock=clock)
    rng = random.Random()
    net = genesis.hash
    while True:
        me = rng.choice(WALLETS)
        tip = tip_of(ledger, me.account)
        now = clock.advance(1)
        try:
            pending = ledger.pending_of(me.account)
            if pending and rng.random() < 0.5:
                source, entry = pending[0]
                replica.submit(me.receive(tip, source, entry.amount, net, now))
            elif tip.balance and rng.random() < 0.9:
                to = rng.choice(WALLETS)
                replica.submit(me.send(tip, to.account, rng.randint(1, tip.balance), net, now))
            elif tip.balance:
                payees = [w.account for w in rng.sample(WALLETS, 2)]
                replica.submit(me.hold(tip, b"job", tip.balance, now + 5, payees, tip.balance, net, now))
        except LedgerError:
            continue
        sys.stdout.write(f"{ledger.confirmed_count}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
