"""kill -9 a process in the middle of ledger writes: no confirmed block is lost, none is half applied."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from avadios.ledger.genesis import GENESIS_FILE, load_genesis
from avadios.services.ledger.audit import audit
from avadios.services.ledger.state import Ledger


def test_kill_9_mid_write_loses_no_confirmed_block_and_leaves_no_half_block(tmp_path: Path) -> None:
    rng = random.Random(4)
    last_reported = 0
    for _ in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.ledger_writer", str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        first = writer.stdout.readline()  # it is writing
        assert first.strip().isdigit(), first
        time.sleep(rng.uniform(0.2, 0.8))
        writer.kill()  # SIGKILL: no cleanup, no flush, wherever it was
        rest = writer.stdout.read()
        writer.wait()
        reported = [int(line) for line in (first + rest).split() if line.isdigit()]
        last_reported = max([last_reported, *reported])
        ledger = Ledger(tmp_path / "ledger", load_genesis(tmp_path / GENESIS_FILE))
        try:
            assert ledger.confirmed_count >= last_reported, "a block the writer saw confirmed is gone"
            report = audit(ledger)
            assert report.ok, report.problems[:5]
            assert report.supply == ledger.genesis.supply
        finally:
            ledger.close()
    assert last_reported > 20, "the writer barely wrote: the test proved little"
