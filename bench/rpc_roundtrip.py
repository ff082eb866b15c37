"""In-node RPC round trip over the NATS transport (empty request), against a bare NATS request/reply.

    .venv/bin/python -m bench.rpc_roundtrip [--samples 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from avadios.transport import NatsChannel, NatsServer, ServerContext, connect
from avadios.v1 import common_pb2, inference_pb2
from avadios.v1.inference_nats import InferenceClient
from bench.common import percentile, summary_ms
from tests.helpers import NatsProcess


class Empty:
    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return common_pb2.HealthReply()


async def run(samples: int) -> None:
    nats = NatsProcess()
    nats.start()
    try:
        server_nc = await connect(nats.url, "bench-server")
        server = NatsServer(server_nc, "inference", inference_pb2.DESCRIPTOR.services_by_name["Inference"], Empty())
        await server.start()

        async def echo(msg: object) -> None:
            await msg.respond(b"")  # type: ignore[attr-defined]

        await server_nc.subscribe("bench.raw", cb=echo)
        client_nc = await connect(nats.url, "bench-client")
        stub = InferenceClient(NatsChannel(client_nc))
        raw, rpc = [], []
        for _ in range(200):  # warm up
            await stub.Health(common_pb2.HealthRequest())
            await client_nc.request("bench.raw", b"", timeout=5)
        for _ in range(samples):
            t = time.perf_counter()
            await client_nc.request("bench.raw", b"", timeout=5)
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            await stub.Health(common_pb2.HealthRequest())
            rpc.append(time.perf_counter() - t)
        print(f"bare NATS request/reply:      {summary_ms(raw)}")
        print(f"avadios RPC (Inference.Health): {summary_ms(rpc)}")
        print(f"p50 overhead of the transport over bare NATS: "
              f"{(percentile(rpc, 50) - percentile(raw, 50)) * 1000:.3f} ms")
        await server.stop()
        await client_nc.close()
        await server_nc.close()
    finally:
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5000)
    asyncio.run(run(parser.parse_args().samples))


if __name__ == "__main__":
    main()
