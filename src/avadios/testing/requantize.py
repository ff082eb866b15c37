"""Another quantization of a GGUF, made offline with llama.cpp's quantize API: a 'wrong model' for lying providers
that shares the real model's tokenizer and weights (gemma-3-270m Q4_K_M to Q2_K or Q4_0 takes about 2 s)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp

FILE_TYPES = {
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "Q3_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_S,
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
}


def requantize(source: Path, target: Path, file_type: str = "Q2_K", threads: int = 0) -> Path:
    """Write `source` requantized to `file_type` at `target` (kept if it is already there) and return `target`."""
    if target.exists():
        return target
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[file_type]
    params.allow_requantize = True  # the source is already quantized
    params.nthread = threads or os.cpu_count() or 1
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if rc != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed with {rc} for {source} -> {file_type}")
    partial.rename(target)
    return target
