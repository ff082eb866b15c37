"""Run the discovery service: `python -m services.discovery` (the supervisor starts it)."""

from avadios.runtime import main
from services.discovery.service import DiscoveryRoom

if __name__ == "__main__":
    main("discovery", DiscoveryRoom.create)
