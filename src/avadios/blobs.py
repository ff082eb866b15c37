"""Bytes too large for one NATS message, handed to another in-node service by reference instead of by value.

The holder offers them on a one-off subject (`avadios.blob.<random token>`) for as long as the call that needs
them runs; the taker asks for chunk i by sending i as decimal text and gets its bytes back (every chunk but the
last is `chunk_bytes` long), one chunk in flight at a time, so no message is ever over the NATS max payload and
neither side holds more than the file plus one chunk. A chunk index out of range gets an empty reply with an
`Avadios-Status` header, like any refused call. The subject's token is unguessable, and only processes of this
node's NATS can ask: it is as private as the call that carries the reference.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from avadios.errors import DeadlineExceeded, InvalidArgument, PayloadTooLarge, Unavailable
from avadios.transport import MESSAGE, STATUS
from avadios.v1 import common_pb2

SUBJECT_PREFIX = "avadios.blob."
DEFAULT_CHUNK_BYTES = 512 * 1024
# Room left in a NATS message for its headers and the subject.
HEADROOM_BYTES = 4096


def chunk_size(nc: NatsClient, wanted: int = DEFAULT_CHUNK_BYTES) -> int:
    return max(1, min(wanted, nc.max_payload - HEADROOM_BYTES))


@contextlib.asynccontextmanager
async def offered(
    nc: NatsClient, data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> AsyncIterator[common_pb2.BlobRef]:
    """Offer `data` until the block ends; yields the reference to hand to the taker."""
    size = chunk_size(nc, chunk_bytes)
    count = max(1, -(-len(data) // size))
    subject = SUBJECT_PREFIX + uuid.uuid4().hex

    async def serve(msg: Msg) -> None:
        text = msg.data.decode("ascii", "replace")
        if not text.isdigit() or int(text) >= count:
            status = str(grpc.StatusCode.OUT_OF_RANGE.value[0])
            headers = {STATUS: status, MESSAGE: f"no chunk {text!r} (0..{count - 1})"}
            await nc.publish(msg.reply, b"", headers=headers)
            return
        start = int(text) * size
        await msg.respond(data[start : start + size])

    subscription = await nc.subscribe(subject, cb=serve)
    try:
        yield common_pb2.BlobRef(subject=subject, size=len(data), chunk_bytes=size)
    finally:
        with contextlib.suppress(Exception):  # NATS may be gone; the subscription goes with the connection
            await subscription.unsubscribe()


async def fetch(nc: NatsClient, ref: common_pb2.BlobRef, limit: int, timeout: float = 10.0) -> bytes:
    """The bytes `ref` names, checked against `limit` before any chunk is asked for."""
    if not ref.subject.startswith(SUBJECT_PREFIX):
        raise InvalidArgument(f"blob subject {ref.subject!r} does not start with {SUBJECT_PREFIX!r}")
    if ref.size > limit:
        raise PayloadTooLarge(f"{ref.size} bytes is over the limit of {limit} bytes")
    if ref.chunk_bytes == 0:
        raise InvalidArgument("blob reference has no chunk size")
    parts: list[bytes] = []
    received = 0
    index = 0
    while received < ref.size:
        try:
            msg = await nc.request(ref.subject, str(index).encode(), timeout=timeout)
        except nats.errors.NoRespondersError:
            raise Unavailable("the holder of the uploaded bytes is gone (its request ended?)") from None
        except nats.errors.TimeoutError:
            raise DeadlineExceeded(f"chunk {index} of the uploaded bytes did not come within {timeout:g} s") from None
        status = (msg.headers or {}).get(STATUS)
        if status is not None or not msg.data:
            why = (msg.headers or {}).get(MESSAGE, "empty")
            raise InvalidArgument(f"chunk {index} of the uploaded bytes was refused: {why}")
        received += len(msg.data)
        if received > ref.size:
            raise InvalidArgument(f"the uploaded bytes came longer than the {ref.size} bytes announced")
        parts.append(msg.data)
        index += 1
    return b"".join(parts)
