"""The owner's index: one record per file it stored (read-cap, placement map, unused challenges) and its layout.

Records hold read-caps, so they are written 0600, each to a temporary file then renamed: a crash leaves the old
record or the new one, never half of one. A file's record is written only after every shard of it was stored,
so no record ever points at shards that were never placed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from avadios.services.storage import layout
from avadios.services.storage.errors import FileNotFound
from avadios.services.storage.layout import FileLayout
from avadios.v1 import storage_pb2


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class FileIndex:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        if len(file_id) != 64 or any(c not in "0123456789abcdef" for c in file_id):
            raise FileNotFound(f"no file {file_id[:16]!r}")
        return self.root / f"{file_id}.owned", self.root / f"{file_id}.layout"

    def save(self, file_id: str, record: storage_pb2.OwnedFile, file_layout: FileLayout | None = None) -> None:
        owned, layout_path = self._paths(file_id)
        if file_layout is not None:  # the layout first: a record never exists without its layout
            _write_private(layout_path, file_layout.encode())
        _write_private(owned, record.SerializeToString())

    def load(self, file_id: str) -> tuple[storage_pb2.OwnedFile, FileLayout]:
        owned, layout_path = self._paths(file_id)
        try:
            record = storage_pb2.OwnedFile.FromString(owned.read_bytes())
            encoded = layout_path.read_bytes()
        except FileNotFoundError:
            raise FileNotFound(
                f"this node does not own file {file_id[:16]}… (a file is read on the node that stored it)"
            ) from None
        return record, layout.decode(encoded, bytes.fromhex(file_id))

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.owned"))

    def remove(self, file_id: str) -> None:
        for path in self._paths(file_id):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
