"""Run the gateway service: `python -m avadios.services.gateway` (the supervisor starts it)."""

from avadios.runtime import main
from avadios.services.gateway.service import GatewayRoom

if __name__ == "__main__":
    main("gateway", GatewayRoom.create)
