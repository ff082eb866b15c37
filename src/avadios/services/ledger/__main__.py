"""Run the ledger service: `python -m avadios.services.ledger` (the supervisor starts it, one process per home)."""

from avadios.runtime import main
from avadios.services.ledger.service import LedgerRoom

if __name__ == "__main__":
    main("ledger", LedgerRoom.create)
