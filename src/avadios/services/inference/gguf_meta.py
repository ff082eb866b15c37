"""Reads the scalar metadata of a GGUF header in milliseconds (gguf.GGUFReader parses every array: ~15 s here)."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

MAGIC = b"GGUF"
# value type -> struct format of one item; 8 (string) and 9 (array) are handled apart
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
# llama.cpp's `general.file_type` values for the quantizations people actually ship
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


class GGUFError(ValueError):
    pass


def read_metadata(path: Path) -> dict[str, object]:
    """Every key-value pair of the header; arrays are skipped and reported as their length."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        version, _tensors, kv_count = struct.unpack_from("<IQQ", m, 4)
        if version < 2:
            raise GGUFError(f"{path}: GGUF version {version} is too old")
        pos = 24
        meta: dict[str, object] = {}

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", m, at)
            return m[at + 8 : at + 8 + n].decode("utf-8", "replace"), at + 8 + n

        def skip(kind: int, at: int) -> int:
            if kind in _SCALARS:
                return at + struct.calcsize(_SCALARS[kind])
            if kind == STRING:
                (n,) = struct.unpack_from("<Q", m, at)
                return at + 8 + int(n)
            raise GGUFError(f"{path}: unknown GGUF value type {kind}")

        for _ in range(kv_count):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", m, pos)
            pos += 4
            if kind == ARRAY:
                item_kind, count = struct.unpack_from("<IQ", m, pos)
                pos += 12
                if item_kind in _SCALARS:
                    pos += count * struct.calcsize(_SCALARS[item_kind])
                else:
                    for _ in range(count):
                        pos = skip(item_kind, pos)
                meta[key] = count
            elif kind == STRING:
                meta[key], pos = string(pos)
            elif kind in _SCALARS:
                (meta[key],) = struct.unpack_from(_SCALARS[kind], m, pos)
                pos = skip(kind, pos)
            else:
                raise GGUFError(f"{path}: unknown GGUF value type {kind} for {key}")
        return meta


def quantization(meta: dict[str, object]) -> str:
    file_type = meta.get("general.file_type")
    return FILE_TYPES.get(file_type, f"type-{file_type}") if isinstance(file_type, int) else ""
