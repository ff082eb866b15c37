"""Putting and getting files through the node's storage service, for the CLI and the gateway alike.

A put streams: the source is read one segment at a time (the size the service asks for), with at most a few
segments on the wire at once, so a file of any size needs a few segments of memory. An upload that fails part way
is aborted, so its shards are deleted and no file record points at them. A get pulls the segments (a few ahead)
and writes them to a temporary file beside the target, renamed only once every segment checked out: an error
leaves no partial plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from avadios.v1 import storage_pb2
from avadios.v1.storage_nats import StorageClient

SEGMENT_TIMEOUT_S = 120.0
IN_FLIGHT = 3  # PutSegment calls on the wire at once (the service takes up to 4): reading overlaps storing
Progress = Callable[[int], None]  # called with the bytes just done


async def put_stream(
    client: StorageClient,
    source: BinaryIO,
    name: str,
    k: int = 0,
    n: int = 0,
    local_only: bool = False,
    size_hint: int = 0,
    progress: Progress | None = None,
) -> storage_pb2.FileInfo:
    begin = await client.BeginPut(
        storage_pb2.BeginPutRequest(name=name, k=k, n=n, local_only=local_only, size_hint=size_hint)
    )
    in_flight: set[asyncio.Task[storage_pb2.PutSegmentReply]] = set()
    try:
        index = 0
        while True:
            data = source.read(begin.segment_size)
            if not data and index > 0:
                break
            while len(in_flight) >= IN_FLIGHT:  # the next segment is read while earlier ones are stored
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a refused segment stops the upload here
            request = storage_pb2.PutSegmentRequest(upload_id=begin.upload_id, index=index, data=data)
            in_flight.add(asyncio.create_task(client.PutSegment(request, timeout=SEGMENT_TIMEOUT_S)))
            index += 1
            if progress is not None:
                progress(len(data))
            if len(data) < begin.segment_size:
                break
        await asyncio.gather(*in_flight)
        in_flight.clear()
        return await client.FinishPut(storage_pb2.FinishPutRequest(upload_id=begin.upload_id))
    except BaseException:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await client.AbortPut(storage_pb2.AbortPutRequest(upload_id=begin.upload_id), timeout=60.0)
        raise


async def read_segments(client: StorageClient, cap: str) -> tuple[storage_pb2.ReadInfo, AsyncIterator[bytes]]:
    """Open a read (errors such as a bad cap or missing hosters come here, before any byte) and the file's
    segments in order, a few requested ahead: each is pulled, so a slow reader slows the reads, never loses one."""
    info = await client.OpenRead(storage_pb2.GetFileRequest(cap=cap), timeout=SEGMENT_TIMEOUT_S)

    async def segments() -> AsyncIterator[bytes]:
        ahead: deque[asyncio.Task[storage_pb2.FileChunk]] = deque()
        try:
            for index in range(info.segments):
                request = storage_pb2.ReadSegmentRequest(read_id=info.read_id, index=index)
                ahead.append(asyncio.create_task(client.ReadSegment(request, timeout=SEGMENT_TIMEOUT_S)))
                if len(ahead) >= IN_FLIGHT:
                    yield (await ahead.popleft()).data
            while ahead:
                yield (await ahead.popleft()).data
        finally:
            for task in ahead:
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)

    return info, segments()


async def get_to_path(
    client: StorageClient, cap: str, target: Path | None, progress: Progress | None = None
) -> tuple[Path, int]:
    """Write the file to `target` (None: its own name in the current directory); (path, bytes)."""
    info, segments = await read_segments(client, cap)
    path = target if target is not None else Path(os.path.basename(info.name) or "file")
    if path.is_dir():
        path = path / (os.path.basename(info.name) or "file")
    tmp = path.with_name(f".{path.name}.part")
    written = 0
    try:
        with tmp.open("wb") as out:
            async for data in segments:
                out.write(data)
                written += len(data)
                if progress is not None:
                    progress(len(data))
        if written != info.size:
            raise OSError(f"the file ended after {written} of {info.size} bytes")
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path, written
