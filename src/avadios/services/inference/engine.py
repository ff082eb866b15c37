"""One llama.cpp model in memory, generating in a worker thread and streaming pieces to asyncio."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import blake3
import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp._internals import LlamaBatch, LlamaSampler
from llama_cpp.llama_grammar import LlamaGrammar

from avadios.errors import InvalidArgument
from avadios.services.inference.chat_format import ChatRenderer, Message
from avadios.services.inference.logit_stats import Logits, TokenStats, chosen_logprob, token_stats
from avadios.token_text import StopText

# The sampler every request gets (llama-cpp-python's defaults, stated so a verifier can rely on them): top-k, then
# top-p, then min-p, all on the raw logits, then temperature; repetition penalties off.
SAMPLER_TOP_K = 40
SAMPLER_MIN_P = 0.05
EMBED_CONTEXT = 2048  # the longest input an embedding reads, in tokens (a longer one is refused)

# llama.cpp repacks some quantized weights (Q4_K, ...) on load so that it can multiply 4 rows at a time: with it, a
# row's numbers depend on how many rows share its decode, and greedy answers decoded in parallel flipped at near
# ties against the same prompt decoded alone (3 of 8 prompts at 4 slots, measured). Without the repacked copy
# every row is one dot product per weight row, the same alone or in a batch (8 of 8 equal up to 4 slots), and
# decoding was no slower here. llama-server calls this `--no-repack`; llama-cpp-python has no argument for it.
_LOADING = threading.Lock()


@contextmanager
def _without_repack() -> Iterator[None]:
    """Load a model with llama.cpp's repacked weight buffers off (see _LOADING). Llama() reads its model
    parameters from `llama_model_default_params` while it loads, so that function answers with the field
    cleared for as long as this lasts; the lock keeps two loads from crossing."""
    api = llama_cpp.llama_cpp  # the module llama.py calls it through
    original = api.llama_model_default_params

    def params() -> llama_cpp.llama_model_params:
        value: llama_cpp.llama_model_params = original()
        value.use_extra_bufts = False
        return value

    with _LOADING:
        setattr(api, "llama_model_default_params", params)  # noqa: B010  # mypy refuses assigning a function
        try:
            yield
        finally:
            setattr(api, "llama_model_default_params", original)  # noqa: B010


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    # Beyond plain sampling (OpenAI's fields; see `constrained`)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str = ""  # GBNF, built from the request's JSON schema
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def steers(self) -> bool:
        """The sampler itself changes (grammar, penalties, biases): generation runs our own sampler chain."""
        return bool(self.grammar or self.presence_penalty or self.frequency_penalty or self.logit_bias)

    @property
    def constrained(self) -> bool:
        """Uses any feature beyond plain sampling: such a request runs on the single-sequence token path."""
        return self.steers or self.logprobs or self.top_logprobs > 0

    @property
    def seeded(self) -> bool:
        """Sampling with a fixed seed: the same answer every time only from an empty cache (create_completion's
        prompt-prefix re-use changed a seeded answer after another request here), so it takes the token path."""
        return self.seed is not None and self.temperature > 0.0

    def with_stop(self, extra: tuple[str, ...]) -> Sampling:
        return replace(self, stop=self.stop + extra)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token as OpenAI's logprobs show it: raw-logit log-softmax, best alternatives first."""

    id: int
    piece: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Piece:
    """New text, or (on the last piece) the finish reason and token counts."""

    text: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # want_tokens only: tokens sampled since the previous piece, with their logprobs as the generator saw them
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    # sampling.logprobs only: the same tokens (end-of-generation excluded) with their alternatives
    details: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Scored:
    """A candidate answer under teacher forcing (see Engine.score)."""

    prompt_tokens: int
    pieces: tuple[bytes, ...]  # every candidate token's text bytes
    end_of_generation: tuple[bool, ...]
    positions: tuple[int, ...]  # which candidate tokens `stats` describe
    stats: tuple[TokenStats, ...]


class Engine:
    """A loaded model. One generation at a time: callers serialize with their own lock."""

    def __init__(self, path: Path, context_length: int, threads: int) -> None:
        self.path = path
        self.threads = threads or os.cpu_count() or 1
        with _without_repack():
            self.llm = Llama(
                model_path=str(path),
                n_ctx=context_length,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
        assert not self.llm.model_params.use_extra_bufts, "llama.cpp's repacked weights were not turned off"
        self.context_length = self.llm.n_ctx()
        meta = self.llm.metadata
        vocab = self.llm._model
        self.renderer = ChatRenderer(
            meta.get("tokenizer.chat_template"),
            bos_token=vocab.token_get_text(self.llm.token_bos()),
            eos_token=vocab.token_get_text(self.llm.token_eos()),
        )
        self.n_vocab = self.llm.n_vocab()
        self._model_hash = b""
        self._embedder: Llama | None = None  # a second context in embedding mode, made on the first Embed
        # The last prompt evaluated on its own from an empty cache, and its last logits row: while the KV cache
        # still holds exactly that evaluation, scoring an answer to the same prompt starts from it (see _score).
        self._prompt_state: tuple[list[int], Logits] | None = None
        # llama.cpp state is not thread safe: every call into it runs on this one thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    @classmethod
    async def load(cls, path: Path, context_length: int, threads: int) -> Engine:
        return await asyncio.to_thread(cls, path, context_length, threads)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.llm.close()
        if self._embedder is not None:
            self._embedder.close()

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One L2-normalized vector per text and the tokens read; the embedding context is made on first use."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._embed, texts)

    def _embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        if self._embedder is None:
            arch = str(self.llm.metadata.get("general.architecture", ""))
            # A GGUF that names its pooling keeps it; one that does not (gemma-3, any decoder-only chat model)
            # would give one vector per token: mean-pool those into one.
            named = f"{arch}.pooling_type" in self.llm.metadata
            pooling = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if named else llama_cpp.LLAMA_POOLING_TYPE_MEAN
            window = min(self.context_length, EMBED_CONTEXT)
            self._embedder = Llama(
                model_path=str(self.path),
                embedding=True,
                pooling_type=pooling,
                n_ctx=window,
                n_batch=window,
                n_ubatch=window,  # a pooled input must fit one micro-batch
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
        window = self._embedder.n_ctx()
        for i, text in enumerate(texts):  # refused, never cut short: a cut text's vector would answer another text
            length = len(self._embedder.tokenize(text.encode("utf-8")))
            if length > window:
                raise InvalidArgument(f"input {i} is {length} tokens; an embedding reads at most {window}")
        vectors, count = self._embedder.embed(texts, normalize=True, truncate=False, return_count=True)
        return [list(map(float, v)) for v in vectors], int(count)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def token_text(self, token: int) -> bytes:
        """A token's text as llama-server shows it (control tokens by their name)."""
        return self.llm._model.detokenize([token], special=True)

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm._model.detokenize(tokens, special=True).decode("utf-8", "replace")

    def model_hash(self) -> bytes:
        """BLAKE3 of the GGUF file (what the network pins a model by); hashed once, on first use."""
        if not self._model_hash:
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
            hasher.update_mmap(self.path)
            self._model_hash = hasher.digest()
        return self._model_hash

    def tokenize_prompt(self, prompt: str, has_bos: bool = False) -> list[int]:
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=not has_bos, special=True)

    def render_chat(self, messages: list[Message]) -> tuple[list[int], tuple[str, ...]]:
        rendered = self.renderer.render(messages)
        return self.tokenize_prompt(rendered.text, rendered.has_bos), rendered.stop

    async def generate(self, tokens: list[int], sampling: Sampling, want_tokens: bool = False) -> AsyncIterator[Piece]:
        """Stream pieces as llama.cpp produces them; closing the iterator stops generation at the next token.
        With `want_tokens` every sampled token comes too, with its logprob: the same sampler and seed rule, but
        always from an empty cache (the plain path may re-use a cached prompt prefix, which can flip near-ties)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop_flag = threading.Event()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                if want_tokens or sampling.constrained or sampling.seeded:
                    self._generate_tokens(tokens, sampling, put, stop_flag)
                    return
                finish = "stop"
                self._prompt_state = None  # create_completion may re-use and re-evaluate parts of the cache
                stream = self.llm.create_completion(
                    tokens,
                    max_tokens=sampling.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=SAMPLER_TOP_K,
                    min_p=SAMPLER_MIN_P,
                    seed=sampling.seed,
                    stop=list(sampling.stop) or None,
                    stream=True,
                )
                for chunk in stream:
                    choice: Any = chunk["choices"][0]  # type: ignore[index]
                    if choice["text"]:
                        put(Piece(choice["text"]))
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if stop_flag.is_set():
                        stream.close()  # type: ignore[union-attr]
                        break
                # llama.cpp evaluates every sampled token except the last one; "length" means exactly max_tokens.
                generated = self.llm.n_tokens - len(tokens)
                completion = sampling.max_tokens if finish == "length" else max(0, generated)
                # The finishing piece (or an exception) is the last item: no separate "done" wake-up of the loop.
                put(Piece("", finish, len(tokens), completion))
            except BaseException as exc:
                put(exc)

        future = loop.run_in_executor(self._thread, run)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Piece)
                yield item
                if item.finish_reason:
                    break
        finally:
            stop_flag.set()
            await asyncio.shield(future)

    def _generate_tokens(
        self, prompt: list[int], sampling: Sampling, put: Callable[[object], None], stop_flag: threading.Event
    ) -> None:
        """create_completion's loop, written out so every sampled token and its logits can be seen. The cost per
        token is one log-sum-exp over the last logits row (no logits_all, which keeps a row per position)."""
        llm = self.llm
        # The same seed rule as create_completion: with or without want_tokens a request samples the same tokens.
        llm.set_seed(sampling.seed if sampling.seed is not None else random.Random(llm._seed).randint(0, 2**32))
        # No reuse of a cached prompt prefix: logits depend (slightly) on how positions were batched, so an answer
        # that must be reproducible by others and checked against their numbers starts from an empty cache.
        llm.n_tokens = 0
        text = StopText(sampling.stop)
        ids: list[int] = []
        logprobs: list[float] = []
        sent = 0
        pending = ""
        finish = "length"
        details: list[TokenLogprob] = []
        generator = self._tokens(prompt, sampling)
        try:
            for token in generator:
                row = self._logits(-1)
                if not ids:  # the row the first token was sampled from: the prompt's, evaluated from scratch
                    self._prompt_state = (list(prompt), row.copy())
                ids.append(token)
                logprobs.append(chosen_logprob(row, token))
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    finish = "stop"
                    break
                if sampling.logprobs:
                    details.append(self._token_logprob(row, token, sampling.top_logprobs))
                pending += text.feed(self.piece(token))
                if text.stopped:
                    finish = "stop"
                    break
                if len(ids) >= sampling.max_tokens or stop_flag.is_set():
                    break
                new = tuple(ids[sent:])
                put(Piece(pending, token_ids=new, logprobs=tuple(logprobs[sent:]), details=tuple(details)))
                pending, sent, details = "", len(ids), []
        finally:
            generator.close()
        pending += text.finish()
        if pending or sent < len(ids):
            put(Piece(pending, token_ids=tuple(ids[sent:]), logprobs=tuple(logprobs[sent:]), details=tuple(details)))
        put(Piece("", finish, len(prompt), len(ids)))

    def _tokens(self, prompt: list[int], sampling: Sampling) -> Generator[int, Any, None]:
        """The sampled tokens, one at a time, each while the logits it was sampled from are the last row.
        Plain requests use llama-cpp-python's own loop (what a verifier replays); a request that steers the sampler
        gets the same chain with its logit biases, penalties and grammar in front (llama.cpp's samplers; the
        library's Python `logits_processor` hook is marked broken in its own source)."""
        llm = self.llm
        if not sampling.steers:
            return llm.generate(
                prompt,
                top_k=SAMPLER_TOP_K,
                top_p=sampling.top_p,
                min_p=SAMPLER_MIN_P,
                typical_p=1.0,
                temp=sampling.temperature,
                repeat_penalty=1.0,
            )
        return self._steered_tokens(prompt, sampling)

    def _steered_tokens(self, prompt: list[int], sampling: Sampling) -> Generator[int, Any, None]:
        llm = self.llm
        sampler = LlamaSampler()  # type: ignore[no-untyped-call]  # llama-cpp-python has no type hints here
        try:
            if sampling.logit_bias:
                sampler.add_logit_bias(self.n_vocab, dict(sampling.logit_bias))
            if sampling.presence_penalty or sampling.frequency_penalty:
                # The window is the whole answer: OpenAI's penalties count every token generated so far (and only
                # those: the prompt's tokens are never accepted into the chain).
                sampler.add_penalties(
                    self.n_vocab, sampling.max_tokens, 1.0, sampling.frequency_penalty, sampling.presence_penalty
                )
            if sampling.grammar:
                sampler.add_grammar(llm._model, LlamaGrammar.from_string(sampling.grammar, verbose=False))
            if sampling.temperature == 0.0:
                sampler.add_greedy()  # type: ignore[no-untyped-call]
            else:
                sampler.add_top_k(SAMPLER_TOP_K)
                sampler.add_typical(1.0, 1)
                sampler.add_top_p(sampling.top_p, 1)
                sampler.add_min_p(SAMPLER_MIN_P, 1)
                sampler.add_temp(sampling.temperature)
                sampler.add_dist(llm._seed)
            llm.eval(prompt)
            while True:
                token = sampler.sample(llm._ctx, -1)  # applies the chain and accepts the token (grammar advances)
                yield token
                llm.eval([token])
        finally:
            sampler.close()  # type: ignore[no-untyped-call]

    def _token_logprob(self, row: Logits, token: int, top: int) -> TokenLogprob:
        stats = token_stats(row, token, max(top, 1), want_top=top > 0)
        alternatives = tuple(
            (i, self.piece(i), lp) for i, lp in zip(stats.top_ids[:top], stats.top_logprobs[:top], strict=True)
        )
        return TokenLogprob(token, self.piece(token), stats.logprob, alternatives)

    def piece(self, token: int) -> bytes:
        """A token's text bytes, as detokenize concatenates them (control tokens have none)."""
        return self.llm._model.detokenize([token], special=False)

    def _logits(self, index: int) -> Logits:
        """A view of one output row of the last decode (-1: the last one); valid until the next decode."""
        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, index)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,))

    async def score(
        self, prompt: list[int], candidate: list[int], positions: Sequence[int], top_k: int, want_top: bool = False
    ) -> Scored:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._score, prompt, candidate, positions, top_k, want_top
        )

    def _score(
        self, prompt: list[int], candidate: list[int], positions: Sequence[int], top_k: int, want_top: bool
    ) -> Scored:
        """Teacher forcing in two prefills, always the same two: the prompt alone (as generation evaluates it, so
        the first token's distribution is exactly the generator's), then every candidate token but the last in one
        batch, keeping logits only at the rows that predict the scored positions. The numbers depend on nothing
        but the model, the prompt and the candidate: a prompt evaluated the same way just before (the answer's own
        generation, or another candidate's scoring) is used again as is, which is the same computation."""
        llm = self.llm
        n_prompt = len(prompt)
        wanted = sorted(set(positions)) if positions else list(range(len(candidate)))
        stats: dict[int, TokenStats] = {}
        if wanted:
            first = self._evaluate_prompt(prompt)
            if wanted[0] == 0:
                stats[0] = token_stats(first, candidate[0], top_k, want_top)
            rows = {n_prompt - 1 + j: j for j in wanted if j > 0}  # position n_prompt - 1 + j predicts candidate[j]
            body = candidate[: max(wanted)]  # no need to evaluate beyond the last row asked for
            batch = LlamaBatch(n_tokens=llm.n_batch, embd=0, n_seq_max=1)
            try:
                for offset in range(0, len(body), llm.n_batch):
                    chunk = body[offset : offset + llm.n_batch]
                    start = n_prompt + offset
                    batch.set_batch(chunk, n_past=start, logits_all=False)
                    for i in range(len(chunk)):
                        batch.batch.logits[i] = start + i in rows
                    llm._ctx.decode(batch)
                    llm.input_ids[start : start + len(chunk)] = chunk
                    llm.n_tokens = start + len(chunk)
                    for i in range(len(chunk)):
                        if start + i in rows:
                            j = rows[start + i]
                            stats[j] = token_stats(self._logits(i), candidate[j], top_k, want_top)
            finally:
                batch.close()  # type: ignore[no-untyped-call]  # llama-cpp-python's batch has no type hints
                # The last logits are not those of the last position: the next generate must decode again.
                llm._requires_eval = True
        vocab = llm._model.vocab
        return Scored(
            prompt_tokens=n_prompt,
            pieces=tuple(self.piece(t) for t in candidate),
            end_of_generation=tuple(bool(llama_cpp.llama_vocab_is_eog(vocab, t)) for t in candidate),
            positions=tuple(wanted),
            stats=tuple(stats[j] for j in wanted),
        )

    def _evaluate_prompt(self, prompt: list[int]) -> Logits:
        """Leave exactly `prompt` in the KV cache, evaluated on its own from an empty cache, and return its last
        logits row; re-used when the cache still holds that very evaluation."""
        llm = self.llm
        state = self._prompt_state
        n = len(prompt)
        if state is not None and state[0] == prompt and llm.n_tokens >= n and llm.input_ids[:n].tolist() == prompt:
            llm._ctx.kv_cache_seq_rm(-1, n, -1)
            llm.n_tokens = n
            return state[1]
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = 0
        llm.eval(prompt)
        row = self._logits(-1).copy()
        self._prompt_state = (list(prompt), row)
        return row
