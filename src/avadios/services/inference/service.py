"""The Inference servicer: validates requests, admits them into a bounded queue, streams from the engine."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

from avadios.errors import Busy, InvalidArgument, NotFound, Unavailable
from avadios.models import ModelFile, default_model_path, discover_models
from avadios.runtime import ServiceContext
from avadios.sampling_features import network_refusal
from avadios.services.inference.chat_format import GGUF_TEMPLATE, QA_FORMAT, Message
from avadios.services.inference.engine import SAMPLER_MIN_P, SAMPLER_TOP_K, Engine, Sampling, TokenLogprob
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
        self._engine_lock = asyncio.Lock()  # one generation (and one model swap) at a time per replica
        self._admitted = 0
        self._served = 0
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
        if self._engine is not None:
            self._engine.close()

    async def _load_default(self) -> None:
        try:
            path = await asyncio.to_thread(default_model_path, self.config)
            self._default_path = path
            self._refresh_models()
            log.info("loading model", extra={"path": str(path)})
            self._engine = await self._load(path)
            log.info(
                "model loaded",
                extra={
                    "model": path.stem,
                    "threads": self._engine.threads,
                    "n_ctx": self._engine.context_length,
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
        return self.ctx.base_health(
            status,
            detail,
            requests_served=self._served,
            in_flight=self._admitted,
            models=list(self._models),
            loaded_model=self._engine.path.stem if self._engine else "",
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
        async with self._admission():
            engine = await self._engine_for(request.model)
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
            async for piece in engine.generate(tokens, sampling, want_tokens):
                if piece.finish_reason:
                    self._served += 1
                    yield inference_pb2.GenerateChunk(
                        finish_reason=piece.finish_reason,
                        model=model,
                        instance=self.ctx.instance,
                        usage=inference_pb2.Usage(
                            prompt_tokens=piece.prompt_tokens, completion_tokens=piece.completion_tokens
                        ),
                        model_hash=model_hash,
                    )
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

    async def Embed(self, request: inference_pb2.EmbedRequest, context: ServerContext) -> inference_pb2.EmbedReply:
        inputs = list(request.inputs)
        if not inputs or len(inputs) > MAX_EMBED_INPUTS:
            raise InvalidArgument(f"input must hold 1 to {MAX_EMBED_INPUTS} texts")
        if any(not text for text in inputs):
            raise InvalidArgument("input must not contain empty strings")
        async with self._admission():
            engine = await self._engine_for(request.model)
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
        async with self._admission():
            engine = await self._engine_for(request.model)
        tokens = engine.tokenize(request.content, request.add_special)
        pieces = [engine.token_text(t) for t in tokens] if request.with_pieces else []
        return inference_pb2.TokenizeReply(model=engine.path.stem, tokens=tokens, pieces=pieces)

    async def Detokenize(
        self, request: inference_pb2.DetokenizeRequest, context: ServerContext
    ) -> inference_pb2.DetokenizeReply:
        async with self._admission():
            engine = await self._engine_for(request.model)
        tokens = list(request.tokens)
        if any(t >= engine.n_vocab for t in tokens):
            raise InvalidArgument(f"tokens must be below the model's vocabulary size {engine.n_vocab}")
        return inference_pb2.DetokenizeReply(model=engine.path.stem, content=engine.detokenize(tokens))

    async def Score(self, request: inference_pb2.ScoreRequest, context: ServerContext) -> inference_pb2.ScoreReply:
        candidate = list(request.token_ids)
        positions = list(request.positions)
        if not candidate:
            raise InvalidArgument("token_ids is empty: there is nothing to score")
        if any(b <= a for a, b in itertools.pairwise(positions)) or (positions and positions[-1] >= len(candidate)):
            raise InvalidArgument(f"positions must ascend and index token_ids (0..{len(candidate) - 1})")
        async with self._admission():
            engine = await self._engine_for(request.model)
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
    async def _admission(self) -> AsyncIterator[None]:
        """A place in this replica's bounded queue, then the engine to itself (one request at a time)."""
        if self._engine is None:
            raise Unavailable(self._load_error or "the model is still loading; retry shortly")
        if self._admitted >= self.config.inference_queue:
            raise Busy(
                f"inference replica {self.ctx.replica} is busy ({self._admitted} requests running or "
                f"queued, limit {self.config.inference_queue}); retry later"
            )
        self._admitted += 1
        try:
            async with self._engine_lock:
                yield
        finally:
            self._admitted -= 1

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

    async def _load(self, path: Path) -> Engine:
        """Load a GGUF with the context it was trained for, capped by `context_length` and by memory."""
        meta = await asyncio.to_thread(read_metadata, path)
        context = serving_context(meta, self.config.context_length, psutil.virtual_memory().available)
        return await Engine.load(path, context, self.config.inference_threads)

    async def _engine_for(self, name: str) -> Engine:
        """The engine for `name`, swapping the model in memory if another one is loaded (one per replica)."""
        assert self._engine is not None
        if not name or name == self._engine.path.stem:
            return self._engine
        self._refresh_models()
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"model {name!r} is not served here; available: {', '.join(sorted(self._models))}")
        log.info("swapping model", extra={"from": self._engine.path.stem, "to": name})
        old, self._engine = self._engine, None
        old.close()
        try:
            self._engine = await self._load(model.path)
        except Exception as exc:
            self._engine = await self._load(old.path)
            raise Unavailable(f"cannot load model {name!r}: {exc}") from exc
        return self._engine
