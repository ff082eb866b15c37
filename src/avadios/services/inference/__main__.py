"""Run the inference service: `python -m avadios.services.inference` (the supervisor starts it)."""

from avadios.runtime import main
from avadios.services.inference.service import InferenceRoom

if __name__ == "__main__":
    main("inference", InferenceRoom.create)
