"""gRPC services carried over NATS: a `nats.micro` server per servicer, and the channel the generated typed
clients (`avadios.v1.<file>_nats`) call through.

One endpoint per proto method on subject `avadios.<service>.<Method>`, subscribed in the queue group
`avadios.<service>` so N replicas share the load. Unary methods are plain NATS request/reply. Server streaming
methods first acknowledge the request (an empty message with `Avadios-Ack`: a caller that gets none within 5 s
knows no live replica took it), then publish every message to the caller's inbox as soon as it is produced and
end with an empty message whose headers carry the final status; the caller cancels by publishing to the subject
named in the `Avadios-Cancel` header (`avadios.cancel.<token>`, which every server hears on one wildcard
subscription). Deadlines travel as a relative timeout in milliseconds; errors travel as a gRPC status code and a
message in headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

import grpc
import nats
import nats.errors
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from avadios.errors import (
    AvadiosError,
    DeadlineExceeded,
    PayloadTooLarge,
    RpcError,
    Unavailable,
    status_code_from_value,
)

STATUS = "Avadios-Status"
MESSAGE = "Avadios-Message"
REASON = "Avadios-Reason"  # an error's stable slug (AvadiosError.reason), so callers in other processes keep it
RETRY_AFTER = "Avadios-Retry-After"  # an error's AvadiosError.retry_after_s, in seconds
TIMEOUT_MS = "Avadios-Timeout-Ms"
REQUEST_ID = "Avadios-Request-Id"
PEER = "Avadios-Peer"  # the verified node id of the peer a request came from (set by the gateway's peer door)
CANCEL = "Avadios-Cancel"
CANCEL_PREFIX = "avadios.cancel."  # + a per-stream token; every server listens on one wildcard for all streams
END = "Avadios-End"
ACK = "Avadios-Ack"  # a stream's first message: a replica took the request (no body, no status)
# A replica acknowledges a stream request at once; a request that got none in this time went to no live
# replica (one killed a moment ago may still hold its subscription on the NATS server, which then drops it).
ACK_TIMEOUT_S = 5.0
OK = str(grpc.StatusCode.OK.value[0])
NATS_NO_RESPONDERS = "503"

log = logging.getLogger("avadios.transport")
M = TypeVar("M", bound=Message)


def subject_for(service: str, method: str) -> str:
    return f"avadios.{service}.{method}"


def queue_group_for(service: str) -> str:
    return f"avadios.{service}"


async def connect(url: str, name: str) -> NatsClient:
    """Connect to NATS and keep reconnecting forever: a NATS restart must never take a service down. A server
    that is not up yet is waited for the same way (nats-py retries a first connect too while
    max_reconnect_attempts is negative)."""

    async def on_disconnect() -> None:
        log.warning("nats disconnected", extra={"nats_url": url})

    async def on_reconnect() -> None:
        log.info("nats reconnected", extra={"nats_url": url})

    async def on_error(error: Exception) -> None:
        log.warning("nats error: %s", error, extra={"nats_url": url})

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        allow_reconnect=True,
        connect_timeout=2,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )


async def connect_within(url: str, name: str, timeout: float) -> NatsClient:
    """Connect for a short-lived client (a CLI command, a container probe): give up after `timeout` with an
    Unavailable that says which server could not be reached and why, instead of waiting for it forever."""
    failures: list[Exception] = []

    async def remember(exc: Exception) -> None:
        failures.append(exc)  # instead of nats-py's default: a logged traceback per attempt

    try:
        async with asyncio.timeout(timeout):
            return await nats.connect(
                url,
                name=name,
                connect_timeout=min(2.0, timeout),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.2,
                error_cb=remember,
            )
    except Exception as exc:  # nats raises several kinds (timeouts, refused, no servers)
        reason = failures[-1] if failures else exc
        raise Unavailable(f"NATS at {url} unreachable: {str(reason) or type(reason).__name__}") from None


class ServerContext:
    """The part of `grpc.aio.ServicerContext` our servicers use, so they also run under `grpc.aio`."""

    def __init__(self, headers: Mapping[str, str] | None) -> None:
        headers = headers or {}
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        timeout_ms = headers.get(TIMEOUT_MS)
        self._deadline = time.monotonic() + int(timeout_ms) / 1000 if timeout_ms else None
        self._cancelled = asyncio.Event()
        self.request_id = headers.get(REQUEST_ID, "")
        # Set only on a body a peer sent through the gateway's door: who sent it, as the envelope proved.
        self.peer = headers.get(PEER, "")

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise RpcError(code, details)


def _status_headers(
    code: grpc.StatusCode, message: str, end: bool, reason: str | None = None, retry_after_s: float | None = None
) -> dict[str, str]:
    headers = {STATUS: str(code.value[0])}
    if reason:
        headers[REASON] = reason
    if retry_after_s is not None:
        headers[RETRY_AFTER] = f"{retry_after_s:.3f}"
    if message:
        # Header values are one line; keep the reason readable and bounded.
        headers[MESSAGE] = " ".join(message.split())[:1000]
    if end:
        headers[END] = "1"
    if code is not grpc.StatusCode.OK:
        # nats.micro's own error headers, so generic NATS tooling sees the failure too.
        headers["Nats-Service-Error"] = headers.get(MESSAGE, code.name)
        headers["Nats-Service-Error-Code"] = code.name
    return headers


def _error_of(exc: BaseException) -> tuple[grpc.StatusCode, str, str | None, float | None]:
    if isinstance(exc, AvadiosError):
        return exc.code, exc.message, exc.reason, exc.retry_after_s
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", None, None
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", None, None


def _message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


class NatsServer:
    """Serves one generated servicer over NATS as a `nats.micro` service."""

    def __init__(
        self,
        nc: NatsClient,
        service: str,
        descriptor: ServiceDescriptor,
        servicer: object,
        version: str = "0.1.0",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._nc = nc
        self._service_name = service
        self._descriptor = descriptor
        self._servicer = servicer
        self._version = version
        self._metadata = dict(metadata or {})
        self._micro: Service | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: dict[str, tuple[ServerContext, asyncio.Task[Any]]] = {}

    async def start(self) -> None:
        # One subscription for the cancels of every stream, not a SUB/UNSUB pair per call.
        await self._nc.subscribe(CANCEL_PREFIX + "*", cb=self._on_cancel)
        self._micro = await add_service(
            self._nc,
            name=f"avadios-{self._service_name}",
            version=self._version,
            description=f"AVADIOS {self._descriptor.full_name} over NATS",
            metadata=self._metadata,
            queue_group=queue_group_for(self._service_name),
        )
        for method in self._descriptor.methods:
            await self._micro.add_endpoint(
                name=method.name,
                subject=subject_for(self._service_name, method.name),
                handler=self._handler_for(method),
            )

    async def stop(self) -> None:
        if self._micro is not None:
            await self._micro.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _handler_for(self, method: MethodDescriptor) -> Callable[[Request], Awaitable[None]]:
        # nats-py runs one subscription's callbacks one after another: each call gets its own task so a
        # long stream never holds up the next request.
        async def handle(request: Request) -> None:
            task = asyncio.create_task(self._serve(method, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handle

    async def _serve(self, method: MethodDescriptor, msg: Request) -> None:
        if method.server_streaming:
            with contextlib.suppress(Exception):  # the caller may already be gone; the stream notices
                await msg.respond(b"", headers={ACK: "1"})
        ctx = ServerContext(msg.headers)
        implementation = getattr(self._servicer, method.name)
        try:
            try:
                request = _message_class(method.input_type).FromString(msg.data)
            except DecodeError as exc:
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method.input_type.name} message: {exc}"
                ) from None
            if ctx.time_remaining() == 0.0:
                raise DeadlineExceeded("deadline already passed when the request arrived")
            if method.server_streaming:
                await self._serve_stream(implementation, request, ctx, msg)
            else:
                async with asyncio.timeout(ctx.time_remaining()):
                    reply = await implementation(request, ctx)
                await self._respond(msg, reply.SerializeToString(), _status_headers(grpc.StatusCode.OK, "", True))
        except Exception as exc:
            code, message, reason, retry_after_s = _error_of(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.full_name, extra={"request_id": ctx.request_id})
            with contextlib.suppress(Exception):
                await msg.respond(b"", headers=_status_headers(code, message, True, reason, retry_after_s))

    async def _serve_stream(
        self, implementation: Callable[..., AsyncIterator[Message]], request: Message, ctx: ServerContext, msg: Request
    ) -> None:
        cancel_subject = (msg.headers or {}).get(CANCEL, "")
        task = asyncio.current_task()
        assert task is not None
        if cancel_subject:
            self._streams[cancel_subject] = (ctx, task)
        try:
            async with asyncio.timeout(ctx.time_remaining()):
                async for item in implementation(request, ctx):
                    await self._respond(msg, item.SerializeToString(), None)
            await msg.respond(b"", headers=_status_headers(grpc.StatusCode.OK, "", True))
        except asyncio.CancelledError:
            if not ctx.cancelled():
                raise  # the server is stopping, not the caller cancelling
        finally:
            self._streams.pop(cancel_subject, None)

    async def _on_cancel(self, msg: Msg) -> None:
        stream = self._streams.get(msg.subject)
        if stream is not None:  # other servers see the cancel too and ignore it
            ctx, task = stream
            ctx.cancel()
            task.cancel()

    async def _respond(self, msg: Request, data: bytes, headers: dict[str, str] | None) -> None:
        if len(data) > self._nc.max_payload:
            raise PayloadTooLarge(
                f"reply of {len(data)} bytes exceeds the NATS max payload of {self._nc.max_payload} bytes"
            )
        await msg.respond(data, headers=headers)


def _raise_for_status(msg: Msg, what: str) -> None:
    headers = msg.headers or {}
    if headers.get("Status") == NATS_NO_RESPONDERS and not msg.data:
        raise Unavailable(f"no {what} service is running")
    status = headers.get(STATUS, OK)
    if status != OK:
        retry_after = headers.get(RETRY_AFTER)
        raise RpcError(
            status_code_from_value(int(status)),
            headers.get(MESSAGE, ""),
            headers.get(REASON),
            _seconds(retry_after),
        )


def _seconds(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:  # an unreadable estimate is no estimate, not a second error
        return None


class NatsChannel:
    """The client side: calls methods of services over one NATS connection."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        # Streams share one wildcard inbox subscription (as nats-py's own requests do), so a call costs no
        # SUB/UNSUB round of its own; replies are routed to each stream's queue by subject.
        self._stream_prefix = ""
        self._streams: dict[str, asyncio.Queue[Msg]] = {}
        self._subscribing = asyncio.Lock()

    async def _stream_inbox(self) -> tuple[str, asyncio.Queue[Msg]]:
        async with self._subscribing:  # the first streams may start together: subscribe once
            if not self._stream_prefix:
                prefix = self.nc.new_inbox()
                await self.nc.subscribe(prefix + ".*", cb=self._route_stream_reply)
                self._stream_prefix = prefix
        token = uuid.uuid4().hex
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = f"{self._stream_prefix}.{token}"
        self._streams[inbox] = queue
        return inbox, queue

    async def _route_stream_reply(self, msg: Msg) -> None:
        queue = self._streams.get(msg.subject)
        if queue is not None:  # a reply to a stream the caller already closed is dropped
            queue.put_nowait(msg)

    def _headers(self, timeout: float, request_id: str | None) -> dict[str, str]:
        return {TIMEOUT_MS: str(max(1, int(timeout * 1000))), REQUEST_ID: request_id or uuid.uuid4().hex}

    def _check_size(self, data: bytes, subject: str) -> None:
        if len(data) > self.nc.max_payload:
            raise PayloadTooLarge(
                f"request to {subject} is {len(data)} bytes, over the NATS max payload of "
                f"{self.nc.max_payload} bytes; it was not sent"
            )

    async def unary(
        self,
        service: str,
        method: str,
        request: Message,
        reply_type: type[M],
        timeout: float,
        request_id: str | None = None,
    ) -> M:
        data = await self.unary_bytes(service, method, request.SerializeToString(), timeout, request_id)
        return reply_type.FromString(data)

    async def unary_bytes(
        self,
        service: str,
        method: str,
        data: bytes,
        timeout: float,
        request_id: str | None = None,
        peer: str = "",
    ) -> bytes:
        """A unary call on already-encoded bytes: the peer door forwards bodies it does not decode."""
        subject = subject_for(service, method)
        self._check_size(data, subject)
        headers = self._headers(timeout, request_id)
        if peer:
            headers[PEER] = peer
        try:
            msg = await self.nc.request(subject, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise Unavailable(f"no {service} service is running") from None
        except nats.errors.TimeoutError:
            raise DeadlineExceeded(f"{service}.{method} did not answer within {timeout:g} s") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
            raise Unavailable("the node's NATS server is not reachable") from None
        _raise_for_status(msg, service)
        return msg.data

    async def server_stream(
        self,
        service: str,
        method: str,
        request: Message,
        reply_type: type[M],
        timeout: float,
        request_id: str | None = None,
    ) -> AsyncIterator[M]:
        subject = subject_for(service, method)
        data = request.SerializeToString()
        self._check_size(data, subject)
        inbox, replies = await self._stream_inbox()
        cancel_subject = CANCEL_PREFIX + inbox.rsplit(".", 1)[-1]
        headers = {**self._headers(timeout, request_id), CANCEL: cancel_subject}
        deadline = time.monotonic() + timeout
        finished = False
        try:
            try:
                await self.nc.publish(subject, data, reply=inbox, headers=headers)
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                raise Unavailable("the node's NATS server is not reachable") from None
            acked = False
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(f"{service}.{method} did not finish within {timeout:g} s")
                wait = remaining if acked else min(remaining, ACK_TIMEOUT_S)
                try:
                    msg = await asyncio.wait_for(replies.get(), wait)
                except TimeoutError:
                    if not acked and wait < remaining:
                        raise Unavailable(f"no {service} replica took the request (one just stopped?)") from None
                    raise DeadlineExceeded(f"{service}.{method} did not finish within {timeout:g} s") from None
                if msg.headers:
                    _raise_for_status(msg, service)
                    if msg.headers.get(ACK):
                        acked = True
                        continue
                    if msg.headers.get(END):
                        finished = True
                        return
                acked = True
                yield reply_type.FromString(msg.data)
        finally:
            self._streams.pop(inbox, None)
            if not finished:
                with contextlib.suppress(Exception):
                    await self.nc.publish(cancel_subject, b"")
