"""The in-node transport over a real nats-server: streaming, deadlines, errors, payload limits, reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from avadios.errors import Busy, DeadlineExceeded, NotFound, PayloadTooLarge, RpcError, Unavailable
from avadios.transport import NatsChannel, NatsServer, ServerContext, connect
from avadios.v1 import common_pb2, inference_pb2
from avadios.v1.inference_nats import InferenceClient
from tests.helpers import NatsProcess

INFERENCE = inference_pb2.DESCRIPTOR.services_by_name["Inference"]


class ScriptedInference:
    """A servicer whose behaviour each test sets, served over the real transport."""

    def __init__(self, name: str = "a") -> None:
        self.name = name
        self.release = asyncio.Event()
        self.seen_timeout: float | None = None
        self.cancelled = asyncio.Event()
        self.calls = 0

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        self.calls += 1
        self.seen_timeout = context.time_remaining()
        return common_pb2.HealthReply(status=common_pb2.HealthReply.SERVING, instance=self.name)

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: ServerContext
    ) -> inference_pb2.ListModelsReply:
        if not self.release.is_set():
            await asyncio.sleep(10)  # slower than any deadline the tests give
        raise NotFound("no such model: the-missing-one")

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: ServerContext
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        if request.prompt == "busy":
            raise Busy("queue full")
        if request.prompt == "big":
            yield inference_pb2.GenerateChunk(text="x" * (2 << 20))
            return
        try:
            yield inference_pb2.GenerateChunk(text="first")
            await self.release.wait()  # the test releases the rest only after it has seen "first"
            for i in range(3):
                yield inference_pb2.GenerateChunk(text=f" {i}")
            yield inference_pb2.GenerateChunk(finish_reason="stop")
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def serve(nats: NatsProcess, servicer: object) -> tuple[NatsServer, InferenceClient]:
    server_nc = await connect(nats.url, "test-server")
    server = NatsServer(server_nc, "inference", INFERENCE, servicer)
    await server.start()
    client_nc = await connect(nats.url, "test-client")
    return server, InferenceClient(NatsChannel(client_nc))


async def test_unary_round_trip_carries_the_deadline(nats_server: NatsProcess) -> None:
    servicer = ScriptedInference()
    server, stub = await serve(nats_server, servicer)
    reply = await stub.Health(common_pb2.HealthRequest(), timeout=5.0)
    assert reply.status == common_pb2.HealthReply.SERVING
    assert servicer.seen_timeout is not None and 4.0 < servicer.seen_timeout <= 5.0
    await server.stop()


async def test_server_streaming_delivers_the_first_chunk_before_generation_ends(nats_server: NatsProcess) -> None:
    servicer = ScriptedInference()
    server, stub = await serve(nats_server, servicer)
    stream = stub.Generate(inference_pb2.GenerateRequest(prompt="hi"), timeout=10.0)
    first = await asyncio.wait_for(anext(stream), 5)
    assert first.text == "first"
    assert not servicer.release.is_set()  # the server is still blocked mid-generation
    servicer.release.set()
    rest = [chunk async for chunk in stream]
    assert [c.text for c in rest] == [" 0", " 1", " 2", ""]
    assert rest[-1].finish_reason == "stop"
    await server.stop()


async def test_errors_arrive_as_grpc_status_codes_with_the_message(nats_server: NatsProcess) -> None:
    servicer = ScriptedInference()
    servicer.release.set()
    server, stub = await serve(nats_server, servicer)
    with pytest.raises(RpcError) as err:
        await stub.ListModels(inference_pb2.ListModelsRequest())
    assert err.value.code is grpc.StatusCode.NOT_FOUND
    assert "the-missing-one" in err.value.message
    with pytest.raises(RpcError) as err:
        async for _ in stub.Generate(inference_pb2.GenerateRequest(prompt="busy")):
            pass
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    await server.stop()


async def test_a_slow_method_fails_with_deadline_exceeded(nats_server: NatsProcess) -> None:
    server, stub = await serve(nats_server, ScriptedInference())
    started = time.monotonic()
    with pytest.raises((DeadlineExceeded, RpcError)) as err:
        await stub.ListModels(inference_pb2.ListModelsRequest(), timeout=0.3)
    assert err.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    await server.stop()


async def test_oversized_messages_are_refused_not_truncated(nats_server: NatsProcess) -> None:
    servicer = ScriptedInference()
    server, stub = await serve(nats_server, servicer)
    with pytest.raises(PayloadTooLarge, match="max payload"):
        await anext(stub.Generate(inference_pb2.GenerateRequest(prompt="p" * (2 << 20))))
    # A reply too large for NATS comes back as a clear error too.
    with pytest.raises(RpcError) as err:
        async for _ in stub.Generate(inference_pb2.GenerateRequest(prompt="big")):
            pass
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "max payload" in err.value.message
    # And the service keeps serving.
    assert (await stub.Health(common_pb2.HealthRequest())).instance == "a"
    await server.stop()


async def test_no_running_service_is_unavailable(nats_server: NatsProcess) -> None:
    nc = await connect(nats_server.url, "lonely-client")
    stub = InferenceClient(NatsChannel(nc))
    with pytest.raises(Unavailable, match="no inference service"):
        await stub.Health(common_pb2.HealthRequest(), timeout=2.0)
    with pytest.raises(Unavailable):
        await anext(stub.Generate(inference_pb2.GenerateRequest(prompt="hi"), timeout=2.0))
    await nc.close()


async def test_closing_a_stream_cancels_the_generation_on_the_server(nats_server: NatsProcess) -> None:
    servicer = ScriptedInference()
    server, stub = await serve(nats_server, servicer)
    stream = stub.Generate(inference_pb2.GenerateRequest(prompt="hi"), timeout=10.0)
    assert (await anext(stream)).text == "first"
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(servicer.cancelled.wait(), 5)
    await server.stop()


async def test_replicas_in_the_queue_group_share_the_work(nats_server: NatsProcess) -> None:
    a, b = ScriptedInference("a"), ScriptedInference("b")
    server_a, stub = await serve(nats_server, a)
    server_b, _ = await serve(nats_server, b)
    answered = {(await stub.Health(common_pb2.HealthRequest())).instance for _ in range(40)}
    assert answered == {"a", "b"}
    assert a.calls + b.calls == 40
    await server_a.stop()
    await server_b.stop()


async def test_services_reconnect_and_serve_after_a_nats_restart(nats_server: NatsProcess) -> None:
    server, stub = await serve(nats_server, ScriptedInference())
    assert (await stub.Health(common_pb2.HealthRequest())).instance == "a"
    nats_server.stop()
    await asyncio.sleep(0.5)
    nats_server.start()  # same port, fresh server: every subscription must be re-established

    async def healthy() -> bool:
        try:
            return (await stub.Health(common_pb2.HealthRequest(), timeout=1.0)).instance == "a"
        except (Unavailable, DeadlineExceeded, RpcError):
            return False

    deadline = time.monotonic() + 15
    while not await healthy():
        assert time.monotonic() < deadline, "the service did not come back after the NATS restart"
        await asyncio.sleep(0.2)
    await server.stop()
