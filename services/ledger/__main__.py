"""Run the ledger service: `python -m services.ledger` (the supervisor starts it, one process per home)."""

from avadios.runtime import main
from services.ledger.service import LedgerRoom

if __name__ == "__main__":
    main("ledger", LedgerRoom.create)
