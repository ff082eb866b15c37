"""What this node offers: models (with the BLAKE3 of each GGUF, computed once per file version), hardware."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import blake3
import psutil

from avadios.v1 import discovery_pb2

log = logging.getLogger("avadios.discovery.profile")


class ModelHashes:
    """BLAKE3 of GGUF files, cached on disk by (path, size, mtime): a 253 MB model is hashed once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._cache: dict[str, dict[str, object]] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self._cache = {}

    def digest(self, model: Path) -> bytes:
        stat = model.stat()
        key = str(model.resolve())
        entry = self._cache.get(key)
        if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return bytes.fromhex(str(entry["blake3"]))
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        hasher.update_mmap(str(model))
        digest = hasher.digest()
        self._cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "blake3": digest.hex()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._cache, indent=1))
        tmp.replace(self.path)
        return digest


def hardware() -> discovery_pb2.Hardware:
    accelerator = "nvidia" if Path("/proc/driver/nvidia").exists() else "none"
    return discovery_pb2.Hardware(
        cores=os.cpu_count() or 1, ram_bytes=psutil.virtual_memory().total, accelerator=accelerator
    )
