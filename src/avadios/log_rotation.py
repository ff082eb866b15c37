"""Size-capped log files for the processes `avadios up` starts: name.log, then name.log.1 … name.log.KEEP."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import IO

READ_CHUNK = 64 * 1024


class RotatingLog:
    """An append-only log of at most about `max_bytes` (it rotates at the first line end past the cap, so a line is
    never split between two files), keeping `keep` older files. The supervisor writes what its children print, so
    a service that logs in a loop fills at most (keep + 1) × max_bytes of the disk."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._file: IO[bytes] = path.open("ab")
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        while data:
            if self._size < self.max_bytes:
                part = data[: self.max_bytes - self._size]
            else:  # past the cap: finish the open line in this file, then rotate
                end = data.find(b"\n") + 1
                part = data[:end] if end else data
            self._file.write(part)
            self._size += len(part)
            data = data[len(part) :]
            if self._size >= self.max_bytes and part.endswith(b"\n"):
                self._rotate()
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


async def copy_into(stream: asyncio.StreamReader, log: RotatingLog) -> None:
    """Copy a child's output into its log until the child closes it (exits)."""
    while chunk := await stream.read(READ_CHUNK):
        log.write(chunk)
