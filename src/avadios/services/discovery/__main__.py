"""Run the discovery service: `python -m avadios.services.discovery` (the supervisor starts it)."""

from avadios.runtime import main
from avadios.services.discovery.service import DiscoveryRoom

if __name__ == "__main__":
    main("discovery", DiscoveryRoom.create)
