"""One llama.cpp model in memory, generating in a worker thread and streaming pieces to asyncio."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_cpp import Llama

from services.inference.chat_format import ChatRenderer, Message


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Piece:
    """New text, or (on the last piece) the finish reason and token counts."""

    text: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine:
    """A loaded model. One generation at a time: callers serialize with their own lock."""

    def __init__(self, path: Path, context_length: int, threads: int) -> None:
        self.path = path
        self.threads = threads or os.cpu_count() or 1
        self.llm = Llama(
            model_path=str(path),
            n_ctx=context_length,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )
        self.context_length = self.llm.n_ctx()
        meta = self.llm.metadata
        vocab = self.llm._model
        self.renderer = ChatRenderer(
            meta.get("tokenizer.chat_template"),
            bos_token=vocab.token_get_text(self.llm.token_bos()),
            eos_token=vocab.token_get_text(self.llm.token_eos()),
        )
        # llama.cpp state is not thread safe: every call into it runs on this one thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    @classmethod
    async def load(cls, path: Path, context_length: int, threads: int) -> Engine:
        return await asyncio.to_thread(cls, path, context_length, threads)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.llm.close()

    def tokenize_prompt(self, prompt: str, has_bos: bool = False) -> list[int]:
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=not has_bos, special=True)

    def render_chat(self, messages: list[Message]) -> tuple[list[int], tuple[str, ...]]:
        rendered = self.renderer.render(messages)
        return self.tokenize_prompt(rendered.text, rendered.has_bos), rendered.stop

    async def generate(self, tokens: list[int], sampling: Sampling) -> AsyncIterator[Piece]:
        """Stream pieces as llama.cpp produces them; closing the iterator stops generation at the next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop_flag = threading.Event()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                finish = "stop"
                stream = self.llm.create_completion(
                    tokens,
                    max_tokens=sampling.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
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
