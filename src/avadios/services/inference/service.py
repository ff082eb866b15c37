"""The Inference servicer: validates requests, admits them into a bounded FIFO queue, streams from the engine.

Plain generations (no per-token logprobs for Proof of Inference, nothing beyond the plain sampler) run on the
batch engine's slots, several at once (`inference_parallel`); generations with `want_tokens`, constrained ones
and `Score` run on the single-sequence engine, one at a time, which holds the exact path Proof of Inference
checks against. Every request takes one of the queue's slots first, so the queue bounds both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

from avadios.errors import InvalidArgument, NotFound, Unavailable
from avadios.models import ModelFile, default_model_path, discover_models
from avadios.runtime import ServiceContext
from avadios.sampling_features import network_refusal
from avadios.services.inference.admission import AdmissionQueue
from avadios.services.inference.batch import BatchEngine, BatchPiece, BatchSampling
from avadios.services.inference.chat_format import GGUF_TEMPLATE, QA_FORMAT, Message
from avadios.services.inference.engine import SAMPLER_MIN_P, SAMPLER_TOP_K, Engine, Piece, Sampling, TokenLogprob
from avadios.services.inference.gguf_meta import quantization, read_metadata, serving_context, trained_context
from avadios.transport import ServerContext
from avadios.v1 import common_pb2, inference_pb2, inference_pb2_grpc

log = logging.getLogger("avadios.inference")
Status = common_pb2.HealthReply.Status
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # OpenAI's own limit on logit_bias entries
MAX_EMBED_INPUTS = 256


def json_schema_grammar(schema_text: str) -> str:
    """The llama.cpp grammar (GBNF) that admits exactly the JSON documents of `schema_text`."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        schema = json.loads(schema_text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"response_format: the JSON schema is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise InvalidArgument("response_format: the JSON schema must be a JSON object")
    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises plain exceptions for what it does not support
        raise InvalidArgument(f"response_format: this JSON schema cannot be enforced by a grammar: {exc}") from None


def logprob_message(token: TokenLogprob) -> inference_pb2.TokenLogprob:
    return inference_pb2.TokenLogprob(
        id=token.id,
        piece=token.piece,
        logprob=token.logprob,
        top=[inference_pb2.TokenLogprob(id=i, piece=p, logprob=lp) for i, p, lp in token.top],
    )


def read_model_info(model: ModelFile) -> inference_pb2.ModelInfo:
    """Metadata straight from the GGUF header; no weights are read."""
    meta = read_metadata(model.path)
    arch = str(meta.get("general.architecture") or "")
    return inference_pb2.ModelInfo(
        name=model.name,
        path=str(model.path),
        size_bytes=model.path.stat().st_size,
        context_length=trained_context(meta),
        architecture=arch,
        is_default=model.is_default,
        chat_format=GGUF_TEMPLATE if meta.get("tokenizer.chat_template") else QA_FORMAT,
        quantization=quantization(meta),
    )


class InferenceRoom(inference_pb2_grpc.InferenceServicer):
    descriptor = inference_pb2.DESCRIPTOR.services_by_name["Inference"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self._default_path: Path | None = None
        self._models: dict[str, ModelFile] = {}
        self._infos: dict[str, inference_pb2.ModelInfo] = {}
        self._engine: Engine | None = None
        self._batch: BatchEngine | None = None  # the loaded model's parallel slots
        self._single_lock = asyncio.Lock()  # the single-sequence engine: one request at a time
        # Requests using the loaded model now, and whether one waits to swap it: a swap waits for them to finish.
        self._model_change = asyncio.Condition()
        self._model_users = 0
        self._swapping = False
        slots = self.config.parallel_slots
        self._queue = AdmissionQueue(slots, max(slots, self.config.inference_queue))
        self._served = 0
        self._cancelled = 0
        self._load_task: asyncio.Task[None] | None = None
        self._load_error = ""

    @classmethod
    async def create(cls, ctx: ServiceContext) -> InferenceRoom:
        return cls(ctx)

    @property
    def servicer(self) -> object:
        return self

    async def start(self) -> None:
        self._load_task = asyncio.create_task(self._load_default())

    async def stop(self) -> None:
        if self._load_task is not None:
            self._load_task.cancel()
        self._unload()

    async def _load(self, path: Path) -> None:
        """Load a GGUF with the context it was trained for, capped by `context_length` and by memory: the
        single-sequence context and each of the batch engine's slots hold that many tokens of KV cache."""
        config = self.config
        meta = await asyncio.to_thread(read_metadata, path)
        memory = psutil.virtual_memory().available // (1 + config.parallel_slots)
        context = serving_context(meta, config.context_length, memory)
        engine = await Engine.load(path, context, config.threads_per_replica)
        try:
            self._batch = await asyncio.to_thread(
                BatchEngine, engine.llm, config.parallel_slots, engine.context_length, engine.threads
            )
        except BaseException:
            engine.close()
            raise
        self._engine = engine

    def _unload(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    async def _load_default(self) -> None:
        try:
            path = await asyncio.to_thread(default_model_path, self.config)
            self._default_path = path
            self._refresh_models()
            log.info("loading model", extra={"path": str(path)})
            await self._load(path)
            assert self._engine is not None
            log.info(
                "model loaded",
                extra={
                    "model": path.stem,
                    "threads": self._engine.threads,
                    "n_ctx": self._engine.context_length,
                    "slots": self.config.parallel_slots,
                    "queue": self._queue.limit,
                },
            )
        except Exception as exc:
            self._load_error = f"cannot load the default model: {exc}"
            log.exception("default model failed to load")

    def _refresh_models(self) -> None:
        assert self._default_path is not None
        self._models = {m.name: m for m in discover_models(self.config, self._default_path)}
        for name, model in self._models.items():
            if name not in self._infos:
                try:
                    self._infos[name] = read_model_info(model)
                except Exception as exc:  # a broken file in models/ must not take the service down
                    log.warning("skipping unreadable model %s: %s", model.path, exc)
        self._models = {n: m for n, m in self._models.items() if n in self._infos}

    def health(self) -> common_pb2.HealthReply:
        if self._load_error:
            status, detail = Status.NOT_SERVING, self._load_error
        elif self._engine is None:
            status, detail = Status.LOADING, "loading the default model"
        else:
            status, detail = Status.SERVING, ""
        queue = self._queue.stats()
        return self.ctx.base_health(
            status,
            detail,
            requests_served=self._served,
            in_flight=queue.running + queue.waiting,
            models=list(self._models),
            loaded_model=self._engine.path.stem if self._engine else "",
            queued=queue.waiting,
            slots=queue.slots,
            queue_limit=queue.limit,
            queue_wait_seconds_sum=queue.wait_seconds_sum,
            queue_waits=queue.waits,
            queue_timeouts=queue.timeouts,
            queue_rejected=queue.rejected,
            cancelled=self._cancelled,
        )

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: ServerContext
    ) -> inference_pb2.ListModelsReply:
        if self._default_path is None:
            raise Unavailable("the inference service is still starting")
        self._refresh_models()  # models dropped into <home>/models show up without a restart
        return inference_pb2.ListModelsReply(
            models=list(self._infos[n] for n in self._models), default_model=self._default_path.stem
        )

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: ServerContext
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        sampling = self._sampling(request.sampling)
        want_tokens = request.want_tokens
        if want_tokens and network_refusal(request.sampling):  # a network answer must be re-scorable
            raise InvalidArgument(network_refusal(request.sampling))
        async with self._admission(context), self._model_use(request.model) as engine:
            tokens, stop = self._prompt(engine, request)
            if len(tokens) + sampling.max_tokens > engine.context_length:
                raise InvalidArgument(
                    f"prompt of {len(tokens)} tokens plus max_tokens {sampling.max_tokens} exceeds the "
                    f"model's context of {engine.context_length} tokens"
                )
            if any(t >= engine.n_vocab for t, _ in sampling.logit_bias):
                raise InvalidArgument(f"logit_bias: token ids must be below the vocabulary size {engine.n_vocab}")
            sampling = sampling.with_stop(stop)
            model = engine.path.stem
            model_hash = await asyncio.to_thread(engine.model_hash) if want_tokens else b""
            if want_tokens or sampling.constrained:
                async with self._single_lock:
                    async for piece in engine.generate(tokens, sampling, want_tokens):
                        if piece.finish_reason:
                            yield self._last_chunk(model, piece.finish_reason, piece, model_hash)
                        elif want_tokens:
                            yield inference_pb2.GenerateChunk(
                                text=piece.text, token_ids=piece.token_ids, logprobs=piece.logprobs
                            )
                        elif sampling.logprobs:
                            yield inference_pb2.GenerateChunk(
                                text=piece.text, token_logprobs=[logprob_message(t) for t in piece.details]
                            )
                        else:
                            yield inference_pb2.GenerateChunk(text=piece.text)
                return
            # Plain requests, seeded ones included: the batch engine starts every sequence from an empty cache,
            # so a seeded answer repeats exactly (the single path's prompt-prefix re-use is what broke that).
            assert self._batch is not None
            plain = BatchSampling(
                sampling.max_tokens,
                sampling.temperature,
                sampling.top_p,
                sampling.seed,
                sampling.stop,
                SAMPLER_TOP_K,
                SAMPLER_MIN_P,
            )
            async for batch_piece in self._batch.generate(tokens, plain):
                if batch_piece.finish_reason:
                    yield self._last_chunk(model, batch_piece.finish_reason, batch_piece, b"")
                else:
                    yield inference_pb2.GenerateChunk(text=batch_piece.text)

    def _last_chunk(
        self, model: str, finish_reason: str, counts: Piece | BatchPiece, model_hash: bytes
    ) -> inference_pb2.GenerateChunk:
        self._served += 1
        return inference_pb2.GenerateChunk(
            finish_reason=finish_reason,
            model=model,
            instance=self.ctx.instance,
            usage=inference_pb2.Usage(prompt_tokens=counts.prompt_tokens, completion_tokens=counts.completion_tokens),
            model_hash=model_hash,
        )

    async def Embed(self, request: inference_pb2.EmbedRequest, context: ServerContext) -> inference_pb2.EmbedReply:
        inputs = list(request.inputs)
        if not inputs or len(inputs) > MAX_EMBED_INPUTS:
            raise InvalidArgument(f"input must hold 1 to {MAX_EMBED_INPUTS} texts")
        if any(not text for text in inputs):
            raise InvalidArgument("input must not contain empty strings")
        async with self._admission(context), self._model_use(request.model) as engine:
            vectors, count = await engine.embed(inputs)
            self._served += 1
        return inference_pb2.EmbedReply(
            model=engine.path.stem,
            embeddings=[inference_pb2.Embedding(values=v) for v in vectors],
            prompt_tokens=count,
        )

    async def Tokenize(
        self, request: inference_pb2.TokenizeRequest, context: ServerContext
    ) -> inference_pb2.TokenizeReply:
        async with self._admission(context), self._model_use(request.model) as engine:
            tokens = engine.tokenize(request.content, request.add_special)
            pieces = [engine.token_text(t) for t in tokens] if request.with_pieces else []
        return inference_pb2.TokenizeReply(model=engine.path.stem, tokens=tokens, pieces=pieces)

    async def Detokenize(
        self, request: inference_pb2.DetokenizeRequest, context: ServerContext
    ) -> inference_pb2.DetokenizeReply:
        tokens = list(request.tokens)
        async with self._admission(context), self._model_use(request.model) as engine:
            if any(t >= engine.n_vocab for t in tokens):
                raise InvalidArgument(f"tokens must be below the model's vocabulary size {engine.n_vocab}")
            content = engine.detokenize(tokens)
        return inference_pb2.DetokenizeReply(model=engine.path.stem, content=content)

    async def Score(self, request: inference_pb2.ScoreRequest, context: ServerContext) -> inference_pb2.ScoreReply:
        candidate = list(request.token_ids)
        positions = list(request.positions)
        if not candidate:
            raise InvalidArgument("token_ids is empty: there is nothing to score")
        if any(b <= a for a, b in itertools.pairwise(positions)) or (positions and positions[-1] >= len(candidate)):
            raise InvalidArgument(f"positions must ascend and index token_ids (0..{len(candidate) - 1})")
        async with self._admission(context), self._model_use(request.model) as engine, self._single_lock:
            if any(t >= engine.n_vocab for t in candidate):
                raise InvalidArgument(f"token_ids must be below the model's vocabulary size {engine.n_vocab}")
            tokens, stop = self._prompt(engine, request)
            if len(tokens) + len(candidate) > engine.context_length:
                raise InvalidArgument(
                    f"prompt of {len(tokens)} tokens plus {len(candidate)} candidate tokens exceeds the "
                    f"model's context of {engine.context_length} tokens"
                )
            model_hash = await asyncio.to_thread(engine.model_hash)
            scored = await engine.score(tokens, candidate, positions, SAMPLER_TOP_K, request.want_top)
            self._served += 1
        return inference_pb2.ScoreReply(
            model=engine.path.stem,
            model_hash=model_hash,
            prompt_tokens=scored.prompt_tokens,
            pieces=scored.pieces,
            end_of_generation=scored.end_of_generation,
            stop=[*request.stop, *stop],
            scores=[
                inference_pb2.TokenScore(
                    position=j,
                    logprob=s.logprob,
                    rank=s.rank,
                    top_logprob=s.top_logprob,
                    top_k_logprob=s.top_k_logprob,
                    mass_above=s.mass_above,
                    top_k_mass=s.top_k_mass,
                    top_ids=s.top_ids,
                    top_logprobs=s.top_logprobs,
                )
                for j, s in zip(scored.positions, scored.stats, strict=True)
            ],
            top_k=SAMPLER_TOP_K,
            min_p=SAMPLER_MIN_P,
            instance=self.ctx.instance,
        )

    @contextlib.asynccontextmanager
    async def _admission(self, context: ServerContext) -> AsyncIterator[None]:
        """A slot from this replica's FIFO queue, waiting at most inference_queue_wait_s (and never past the
        request's own deadline). A caller that goes away, waiting or running, gives its place up at once."""
        if self._engine is None and not self._swapping:
            raise Unavailable(self._load_error or "the model is still loading; retry shortly")
        remaining = context.time_remaining()
        wait_s = self.config.inference_queue_wait_s if remaining is None else min(
            self.config.inference_queue_wait_s, remaining
        )
        try:
            async with self._queue.slot(wait_s):
                yield
        except (asyncio.CancelledError, GeneratorExit):
            self._cancelled += 1
            raise

    @contextlib.asynccontextmanager
    async def _model_use(self, name: str) -> AsyncIterator[Engine]:
        """The engine of model `name`, held while the request uses it. Another model than the loaded one is
        swapped in (one model per replica) once the requests using the loaded one have finished; requests that
        come meanwhile wait for the swap."""
        async with self._model_change:
            await self._model_change.wait_for(lambda: not self._swapping)
            if self._engine is None:
                raise Unavailable(self._load_error or "the model is still loading; retry shortly")
            if name and name != self._engine.path.stem:
                self._swapping = True
                try:
                    await self._model_change.wait_for(lambda: self._model_users == 0)
                    await self._swap(name)
                finally:
                    self._swapping = False
                    self._model_change.notify_all()
            engine = self._engine
            assert engine is not None
            self._model_users += 1
        try:
            yield engine
        finally:
            async with self._model_change:
                self._model_users -= 1
                self._model_change.notify_all()

    def _sampling(self, params: inference_pb2.SamplingParams) -> Sampling:
        max_tokens = params.max_tokens or self.config.default_max_tokens
        if not 0.0 <= params.temperature <= 2.0:
            raise InvalidArgument(f"temperature {params.temperature:g} is outside 0..2")
        if not 0.0 <= params.top_p <= 1.0:
            raise InvalidArgument(f"top_p {params.top_p:g} is outside 0..1")
        seed = params.seed if params.HasField("seed") else None
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(params, name) <= 2.0:
                raise InvalidArgument(f"{name} {getattr(params, name):g} is outside -2..2")
        if len(params.logit_bias) > MAX_LOGIT_BIAS:
            raise InvalidArgument(f"logit_bias holds at most {MAX_LOGIT_BIAS} tokens")
        if any(not -100.0 <= bias <= 100.0 for bias in params.logit_bias.values()):
            raise InvalidArgument("logit_bias values must be within -100..100")
        if params.top_logprobs > MAX_TOP_LOGPROBS:
            raise InvalidArgument(f"top_logprobs must be 0..{MAX_TOP_LOGPROBS}")
        return Sampling(
            max_tokens,
            params.temperature,
            params.top_p or 1.0,
            seed,
            tuple(params.stop),
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=tuple(sorted(params.logit_bias.items())),
            grammar=json_schema_grammar(params.json_schema) if params.json_schema else "",
            logprobs=params.logprobs or params.top_logprobs > 0,
            top_logprobs=params.top_logprobs,
        )

    def _prompt(
        self, engine: Engine, request: inference_pb2.GenerateRequest | inference_pb2.ScoreRequest
    ) -> tuple[list[int], tuple[str, ...]]:
        if request.WhichOneof("input") == "chat":
            return engine.render_chat([Message(m.role, m.content) for m in request.chat.messages])
        if not request.prompt:
            raise InvalidArgument("prompt is empty")
        return engine.tokenize_prompt(request.prompt), ()

    async def _swap(self, name: str) -> None:
        """Load model `name` in place of the current one (nobody is using it); on failure the old one again."""
        assert self._engine is not None
        self._refresh_models()
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"model {name!r} is not served here; available: {', '.join(sorted(self._models))}")
        old = self._engine.path
        log.info("swapping model", extra={"from": old.stem, "to": name})
        self._unload()
        try:
            await self._load(model.path)
        except Exception as exc:
            await self._load(old)
            raise Unavailable(f"cannot load model {name!r}: {exc}") from exc
