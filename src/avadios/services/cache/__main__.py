"""Run the tier 0 cache service: `python -m avadios.services.cache` (the supervisor starts it)."""

from avadios.runtime import main
from avadios.services.cache.service import CacheRoom

if __name__ == "__main__":
    main("cache", CacheRoom.create)
