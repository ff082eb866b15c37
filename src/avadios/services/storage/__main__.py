"""Run the storage service: `python -m avadios.services.storage` (the supervisor starts it, one process per home)."""

from avadios.runtime import main
from avadios.services.storage.service import StorageRoom

if __name__ == "__main__":
    main("storage", StorageRoom.create)
