"""Reads the scalar metadata of a GGUF header in milliseconds (gguf.GGUFReader parses every array: ~15 s here)."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import gguf

MAGIC = b"GGUF"
# value type -> struct format of one item; 8 (string) and 9 (array) are handled apart
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
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
    """`general.file_type` by llama.cpp's own name for it (the gguf package's enum): "Q4_K_M", "IQ4_XS", "F32"."""
    file_type = meta.get("general.file_type")
    if not isinstance(file_type, int):
        return ""
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:  # newer than the installed gguf package knows
        return f"type-{file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def trained_context(meta: dict[str, object]) -> int:
    arch = meta.get("general.architecture")
    value = meta.get(f"{arch}.context_length")
    return value if isinstance(value, int) and value > 0 else 0


def kv_bytes_per_token(meta: dict[str, object]) -> int:
    """What one position of context costs in llama.cpp's f16 KV cache (keys and values, every layer); 0 = unknown."""
    arch = meta.get("general.architecture")

    def number(key: str) -> int:
        value = meta.get(f"{arch}.{key}")
        return value if isinstance(value, int) else 0

    layers, width, heads = number("block_count"), number("embedding_length"), number("attention.head_count")
    kv_heads = number("attention.head_count_kv") or heads
    head_dim = width // heads if heads else 0
    key_length = number("attention.key_length") or head_dim
    value_length = number("attention.value_length") or head_dim
    return layers * kv_heads * (key_length + value_length) * 2


# The KV cache may take at most this share of the memory available when the model loads: replicas and the rest of
# the node (and the machine's other work) need the remainder.
KV_MEMORY_SHARE = 0.25
MIN_CONTEXT = 256


def serving_context(meta: dict[str, object], configured_max: int, available_bytes: int) -> int:
    """The context a model is loaded with: its trained context, at most `configured_max` (0 = no cap) and at most
    what a KV cache in KV_MEMORY_SHARE of the available memory holds; never below MIN_CONTEXT."""
    context = trained_context(meta) or configured_max or 2048
    if configured_max:
        context = min(context, configured_max)
    per_token = kv_bytes_per_token(meta)
    if per_token:
        context = min(context, int(available_bytes * KV_MEMORY_SHARE) // per_token)
    return max(MIN_CONTEXT, context)
