"""Run the gateway service: `python -m services.gateway` (the supervisor starts it)."""

from avadios.runtime import main
from services.gateway.service import GatewayRoom

if __name__ == "__main__":
    main("gateway", GatewayRoom.create)
