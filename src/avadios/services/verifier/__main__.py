"""Run the verifier service: `python -m avadios.services.verifier` (the supervisor starts it, one process per home)."""

from avadios.runtime import main
from avadios.services.verifier.service import VerifierRoom

if __name__ == "__main__":
    main("verifier", VerifierRoom.create)
