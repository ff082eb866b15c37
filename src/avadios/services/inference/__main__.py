"""Run the inference service: `python -m avadios.services.inference` (the supervisor starts it)."""

from avadios.runtime import Room, ServiceContext, main
from avadios.services.inference.forward import ForwardingRoom
from avadios.services.inference.service import InferenceRoom


async def create(ctx: ServiceContext) -> Room:
    """A local GGUF through llama.cpp, or (inference_backend = "openai") a server the user already runs."""
    if ctx.config.inference_backend == "openai":
        return await ForwardingRoom.create(ctx)
    return await InferenceRoom.create(ctx)


if __name__ == "__main__":
    main("inference", create)
