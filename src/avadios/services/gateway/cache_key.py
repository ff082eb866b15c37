"""The tier 0 cache key: BLAKE3 over a canonical JSON of model, input and sampling parameters."""

from __future__ import annotations

import json

import blake3

from avadios.v1 import inference_pb2

KEY_VERSION = 2  # bump when the meaning of a cached answer changes (e.g. a new chat format)


def cache_key(request: inference_pb2.GenerateRequest, model: str, default_max_tokens: int) -> bytes:
    """Equal requests get equal keys whatever their field order or the request id; `model` is resolved
    (never empty) so naming the default model and omitting it share an entry."""
    s = request.sampling
    if request.WhichOneof("input") == "chat":
        inputs: object = {"chat": [[m.role, m.content] for m in request.chat.messages]}
    else:
        inputs = {"prompt": request.prompt}
    canonical = {
        "v": KEY_VERSION,
        "model": model,
        "input": inputs,
        "max_tokens": s.max_tokens or default_max_tokens,
        "temperature": round(float(s.temperature), 6),
        "top_p": round(float(s.top_p or 1.0), 6),
        "seed": s.seed if s.HasField("seed") else None,
        "stop": list(s.stop),
        # what steers the sampler: answers to the same prompt under another schema or bias are other answers
        "presence_penalty": round(float(s.presence_penalty), 6),
        "frequency_penalty": round(float(s.frequency_penalty), 6),
        "logit_bias": sorted((int(t), round(float(b), 6)) for t, b in s.logit_bias.items()),
        "json_schema": s.json_schema,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return blake3.blake3(text.encode("utf-8")).digest()
