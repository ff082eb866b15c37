"""Parallel decoding: several sequences at once in one llama.cpp context (continuous batching), one thread.

The context shares the loaded model's weights (it is a second `llama_context` on the same `llama_model`) and has
`slots` sequences, each with its own part of the KV cache (sequence id = slot index; llama.cpp's non-unified KV
gives each sequence `context_length` cells of its own). One step of the loop:

- evaluates each newly admitted prompt in a decode of its own, in n_batch-sized parts, exactly as the
  single-sequence path does (its first token then comes from the same numbers), and
- puts the token every generating sequence sampled last into one `llama_batch` (one row of logits each), decodes it
  once, and samples each sequence's next token from its own row with its own sampler chain.

New requests join at the next step, finished or cancelled ones leave it (their KV cells are cleared at once), so a
slot that frees up is used again without waiting for the others (llama-server's `--parallel`). Answers equal the
single-sequence path's only while llama.cpp computes a row the same whatever else shares its decode: see the
engine's note on repacked weights (measured up to 4 rows per decode).

Sampling is llama.cpp's sampler chain in the order llama-cpp-python's `create_completion` builds it and the
engine's SAMPLER_* constants state: greedy at temperature 0, else top-k 40, top-p, min-p 0.05, temperature and a
seeded draw (the request's seed, else a random one), with a fresh chain per request, so a seed gives the same
answer here as on the single-sequence path. What the text of an answer is (stop strings, incomplete UTF-8 held
back) is `avadios.token_text.StopText`, as on that path.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import Llama

from avadios.token_text import StopText

log = logging.getLogger("avadios.inference")

# llama.cpp's "no seed given" value: the dist sampler then draws a random seed itself.
DEFAULT_SEED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class BatchSampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    top_k: int
    min_p: float


@dataclass(frozen=True, slots=True)
class BatchPiece:
    """New text, or (on the last piece) the finish reason and token counts."""

    text: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class _Sequence:
    """One request in a slot: its prompt, where its prefill is, its sampler chain and its text so far."""

    prompt: list[int]
    sampling: BatchSampling
    put: Callable[[object], None]
    cancelled: threading.Event
    slot: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    last: int = -1  # the token sampled last, decoded at the next step
    generated: int = 0
    sampler: ctypes.c_void_p | None = None
    text: StopText = field(default_factory=lambda: StopText(()))


class BatchEngine:
    """`slots` sequences decoded together over `llm`'s model. Callers admit at most `slots` requests at a time
    (the inference service's queue does); more would wait here, unseen by the queue's deadline and metrics."""

    def __init__(self, llm: Llama, slots: int, context_length: int, threads: int, n_batch: int = 512) -> None:
        self.llm = llm
        self.slots = slots
        self.context_length = context_length
        self.n_batch = max(n_batch, slots)
        # The single-sequence context's own settings (flash attention off, its rope settings), so both compute the
        # same numbers; only the size and the number of sequences differ.
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = context_length * slots  # non-unified KV: each sequence gets n_ctx / n_seq_max cells
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = slots
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = False
        ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if ctx is None:
            raise RuntimeError(f"llama.cpp could not make a context of {slots} sequences x {context_length} tokens")
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._vocab = llm._model.vocab
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._pending: deque[_Sequence] = deque()
        self._active: dict[int, _Sequence] = {}
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llama-batch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    async def generate(self, prompt: list[int], sampling: BatchSampling) -> AsyncIterator[BatchPiece]:
        """Stream one sequence's pieces; closing the iterator (a client gone) frees its slot at the next step."""
        if not prompt:
            raise ValueError("an empty prompt has nothing to continue")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        sequence = _Sequence(list(prompt), sampling, put, threading.Event(), text=StopText(sampling.stop))
        with self._wake:
            self._pending.append(sequence)
            self._wake.notify()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, BatchPiece)
                yield item
                if item.finish_reason:
                    break
        finally:
            sequence.cancelled.set()
            with self._wake:
                self._wake.notify()

    # --- the decoding thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._pending and not self._active:
                    self._wake.wait()
                if self._closing:
                    break
                self._admit()
            self._drop_cancelled()
            if not self._active:
                continue
            try:
                self._step()
            except Exception as exc:  # a failed decode fails every sequence in it, never the thread
                log.exception("batched decode failed")
                for sequence in list(self._active.values()):
                    sequence.put(exc)
                    self._release(sequence)
        for sequence in [*self._active.values(), *self._pending]:
            sequence.put(RuntimeError("the inference engine is closing"))
            self._release(sequence)

    def _admit(self) -> None:
        free = [s for s in range(self.slots) if s not in self._active]
        while free and self._pending:
            sequence = self._pending.popleft()
            if sequence.cancelled.is_set():
                continue
            sequence.slot = free.pop(0)
            sequence.sampler = self._sampler_for(sequence.sampling)
            self._active[sequence.slot] = sequence

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._active.values() if s.cancelled.is_set()]:
            self._release(sequence)

    def _release(self, sequence: _Sequence) -> None:
        if sequence.slot >= 0 and self._active.get(sequence.slot) is sequence:
            del self._active[sequence.slot]
            llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot, -1, -1)
        if sequence.sampler is not None:
            llama_cpp.llama_sampler_free(sequence.sampler)
            sequence.sampler = None

    def _sampler_for(self, sampling: BatchSampling) -> ctypes.c_void_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if sampling.temperature == 0.0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            # create_completion's order: top-k, typical (off at 1.0), top-p, min-p, temperature, a seeded draw.
            seed = sampling.seed if sampling.seed is not None else random.randint(0, 2**32 - 2)
            add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            add(chain, llama_cpp.llama_sampler_init_typical(1.0, 1))
            add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
            add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain  # type: ignore[no-any-return]

    def _step(self) -> None:
        """One round: each new sequence's prompt in a decode of its own, then one decode of the token every
        generating sequence sampled last (one row of logits each)."""
        for sequence in [s for s in self._active.values() if s.fed < len(s.prompt)]:
            # A prompt alone, in n_batch-sized parts, exactly as the single-sequence path evaluates it: its first
            # token then comes from the same numbers (mixing it with other rows changes llama.cpp's kernels).
            while sequence.fed < len(sequence.prompt):
                part = sequence.prompt[sequence.fed : sequence.fed + self.n_batch]
                self._clear()
                for i, token in enumerate(part):
                    pos = sequence.fed + i
                    self._add(token, pos, sequence.slot, pos == len(sequence.prompt) - 1)
                self._decode()
                sequence.fed += len(part)
            self._accept(sequence, llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, len(part) - 1))
        generating = [s for s in self._active.values() if s.fed == len(s.prompt) and s.generated]
        if not generating:
            return
        self._clear()
        for sequence in generating:
            self._add(sequence.last, len(sequence.prompt) + sequence.generated - 1, sequence.slot, True)
        self._decode()
        for row, sequence in enumerate(generating):
            self._accept(sequence, llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, row))

    def _clear(self) -> None:
        self._batch.n_tokens = 0

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> None:
        batch, n = self._batch, self._batch.n_tokens
        batch.token[n] = token
        batch.pos[n] = pos
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq
        batch.logits[n] = logits
        batch.n_tokens = n + 1

    def _decode(self) -> None:
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} ({self._batch.n_tokens} tokens)")

    def _accept(self, sequence: _Sequence, token: int) -> None:
        """The sequence's next token: end it (end of generation, a stop string, max_tokens) or stream its text."""
        sequence.generated += 1
        sequence.last = token
        finish = ""
        text = ""
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            finish = "stop"
        else:
            text = sequence.text.feed(self.llm._model.detokenize([token], special=False))
            if sequence.text.stopped:
                finish = "stop"
            elif sequence.generated >= sequence.sampling.max_tokens:
                finish = "length"
        if finish:
            text += sequence.text.finish()
        if text:
            sequence.put(BatchPiece(text))
        if finish:
            # Counted as the single-sequence path counts: the token that ended the answer is not part of it.
            completion = sequence.generated - 1 if finish == "stop" else sequence.generated
            sequence.put(BatchPiece("", finish, len(sequence.prompt), completion))
            self._release(sequence)
