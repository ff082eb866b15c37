"""The Voice servicer: transcriptions through a bounded queue (one at a time per replica), speech streamed from the
platform's engine as it is synthesized, and the lists of voices and models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from avadios import blobs
from avadios.errors import Busy, InvalidArgument, NotFound, PayloadTooLarge, Unavailable
from avadios.runtime import ServiceContext
from avadios.services.voice import stt, tts
from avadios.services.voice.encode import CONTENT_TYPES, FORMATS, WavReader, encoder_for
from avadios.transport import ServerContext
from avadios.v1 import common_pb2, voice_pb2, voice_pb2_grpc

log = logging.getLogger("avadios.voice")
Status = common_pb2.HealthReply.Status
SPEECH_ALIASES = ("tts-1", "tts-1-hd")  # OpenAI's speech models; both mean this platform's engine
MIN_SPEED, MAX_SPEED = 0.25, 4.0
# Speech chunks stay well under the NATS max payload and small enough that the first one leaves early.
SPEAK_CHUNK_BYTES = 32 * 1024


class VoiceRoom(voice_pb2_grpc.VoiceServicer):
    descriptor = voice_pb2.DESCRIPTOR.services_by_name["Voice"]

    def __init__(self, ctx: ServiceContext, engine: tts.Engine | None) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.engine = engine
        self.transcriber = stt.Transcriber(self.config.voice_threads)
        self._default_path: Path | None = None
        self._whisper_lock = asyncio.Lock()  # one transcription at a time: it takes every core it is given
        self._admitted = 0
        self._served = 0
        self._audio_seconds = 0.0
        self._load_task: asyncio.Task[None] | None = None
        self._load_error = ""

    @classmethod
    async def create(cls, ctx: ServiceContext) -> VoiceRoom:
        engine = tts.pick_engine()
        if engine is None:
            log.warning("no text-to-speech engine: speech requests will be refused", extra={"hint": tts.INSTALL_HINT})
        return cls(ctx, engine)

    @property
    def servicer(self) -> object:
        return self

    async def start(self) -> None:
        self._load_task = asyncio.create_task(self._load_default())

    async def stop(self) -> None:
        if self._load_task is not None:
            self._load_task.cancel()

    async def _load_default(self) -> None:
        """Load the default Whisper model at start, so the first transcription does not pay for it."""
        try:
            path = await asyncio.to_thread(stt.default_model_path)
            async with self._whisper_lock:
                await asyncio.to_thread(self.transcriber.load, stt.WhisperModelFile(stt.DEFAULT_MODEL, path, True))
            self._default_path = path
            log.info("whisper model loaded", extra={"model": stt.DEFAULT_MODEL, "path": str(path)})
        except Exception as exc:
            self._load_error = f"cannot load the default Whisper model: {exc}"
            log.exception("default whisper model failed to load")

    def _models(self) -> dict[str, stt.WhisperModelFile]:
        assert self._default_path is not None
        return stt.discover(self.config.whisper_dir, self._default_path)

    def health(self) -> common_pb2.HealthReply:
        speech = f"speech: {self.engine.name}" if self.engine else "speech: none (install espeak-ng)"
        if self._load_error:
            status, detail = Status.NOT_SERVING, f"{self._load_error}; {speech}"
        elif self._default_path is None:
            status, detail = Status.LOADING, f"loading the Whisper model; {speech}"
        else:
            status, detail = Status.SERVING, f"{self._audio_seconds:.1f} s of audio transcribed; {speech}"
        loaded = self.transcriber.loaded
        return self.ctx.base_health(
            status,
            detail,
            requests_served=self._served,
            in_flight=self._admitted,
            models=list(self._models()) if self._default_path else [],
            loaded_model=loaded.name if loaded else "",
        )

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()

    async def ListModels(
        self, request: voice_pb2.ListVoiceModelsRequest, context: ServerContext
    ) -> voice_pb2.ListVoiceModelsReply:
        if self._default_path is None:
            raise Unavailable(self._load_error or "the voice service is still loading its Whisper model")
        models = [
            voice_pb2.VoiceModelInfo(
                name=m.name,
                kind="transcription",
                path=str(m.path),
                is_default=m.is_default,
                aliases=list(stt.OPENAI_ALIASES) if m.is_default else [],
                english_only=m.english_only,
            )
            for m in self._models().values()
        ]
        if self.engine is not None:
            models.append(
                voice_pb2.VoiceModelInfo(name=self.engine.name, kind="speech", is_default=True, aliases=SPEECH_ALIASES)
            )
        return voice_pb2.ListVoiceModelsReply(models=models)

    async def ListVoices(
        self, request: voice_pb2.ListVoicesRequest, context: ServerContext
    ) -> voice_pb2.ListVoicesReply:
        if self.engine is None:
            return voice_pb2.ListVoicesReply(available=False, detail=tts.INSTALL_HINT)
        voices = await self.engine.voices()
        return voice_pb2.ListVoicesReply(
            engine=self.engine.name,
            available=True,
            default_voice=self.engine.default_voice(),
            voices=[
                voice_pb2.VoiceInfo(
                    name=v.name, language=v.language, gender=v.gender, engine_voice=v.engine_voice, is_alias=v.is_alias
                )
                for v in voices
            ],
        )

    async def Transcribe(
        self, request: voice_pb2.TranscribeRequest, context: ServerContext
    ) -> voice_pb2.TranscribeReply:
        if self._default_path is None:
            raise Unavailable(self._load_error or "the Whisper model is still loading; retry shortly")
        model = stt.resolve(self._models(), request.model)
        if not 0.0 <= request.temperature <= 1.0:
            raise InvalidArgument(f"temperature {request.temperature:g} is outside 0..1")
        stt.check_language(model, request.language)
        async with self._admission():
            audio = await self._audio_of(request)
            async with self._whisper_lock:
                result = await asyncio.to_thread(
                    self.transcriber.transcribe, model, audio, request.language, request.prompt, request.temperature
                )
            self._served += 1
            self._audio_seconds += result.duration_s
        log.info(
            "transcribed",
            extra={
                "request_id": context.request_id,
                "model": model.name,
                "audio_s": round(result.duration_s, 2),
                "compute_s": round(result.compute_s, 3),
            },
        )
        return voice_pb2.TranscribeReply(
            text=result.text,
            language=result.language,
            duration_s=result.duration_s,
            compute_s=result.compute_s,
            model=model.name,
            instance=self.ctx.instance,
            segments=[
                voice_pb2.TranscriptSegment(
                    id=i,
                    start=s.start,
                    end=s.end,
                    text=s.text,
                    avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob,
                )
                for i, s in enumerate(result.segments)
            ]
            if request.want_segments
            else [],
        )

    async def _audio_of(self, request: voice_pb2.TranscribeRequest) -> bytes:
        limit = self.config.voice_max_audio_bytes
        if request.WhichOneof("source") == "audio_ref":
            return await blobs.fetch(self.ctx.nc, request.audio_ref, limit)
        if len(request.audio) > limit:
            raise PayloadTooLarge(f"the audio file of {len(request.audio)} bytes is over the limit of {limit} bytes")
        return request.audio

    async def Speak(
        self, request: voice_pb2.SpeakRequest, context: ServerContext
    ) -> AsyncIterator[voice_pb2.SpeakChunk]:
        engine = self._speech_engine(request)
        text = request.input.strip()
        fmt = request.format or "wav"
        speed = request.speed or 1.0
        if not text:
            raise InvalidArgument("input is empty: there is nothing to speak")
        if len(request.input) > self.config.voice_max_input_chars:
            raise InvalidArgument(
                f"input of {len(request.input)} characters is over the limit of {self.config.voice_max_input_chars}"
            )
        if fmt not in FORMATS:
            raise InvalidArgument(f"response_format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidArgument(f"speed {speed:g} is outside {MIN_SPEED:g}..{MAX_SPEED:g}")
        engine_voice = engine.resolve(request.voice)
        async with self._admission():
            reader = WavReader()
            encoder = None
            first = True
            async for piece in engine.speak(text, engine_voice, speed):
                try:
                    pcm = reader.feed(piece)
                except ValueError as exc:  # the engine wrote something other than 16-bit mono WAV
                    raise Unavailable(f"{engine.name}: {exc}") from None
                if encoder is None:
                    if not reader.sample_rate:
                        continue
                    encoder = encoder_for(fmt, reader.sample_rate)
                for chunk in _pieces(encoder.encode(pcm)):
                    yield self._chunk(chunk, first, fmt, reader.sample_rate, engine_voice)
                    first = False
            if encoder is None:
                raise Unavailable(f"{engine.name} wrote no audio for this input")
            for chunk in _pieces(encoder.finish()):
                yield self._chunk(chunk, first, fmt, reader.sample_rate, engine_voice)
                first = False
            self._served += 1

    def _chunk(self, audio: bytes, first: bool, fmt: str, rate: int, voice: str) -> voice_pb2.SpeakChunk:
        if not first:
            return voice_pb2.SpeakChunk(audio=audio)
        return voice_pb2.SpeakChunk(
            audio=audio, content_type=CONTENT_TYPES[fmt], sample_rate=rate, voice=voice, instance=self.ctx.instance
        )

    def _speech_engine(self, request: voice_pb2.SpeakRequest) -> tts.Engine:
        if self.engine is None:
            raise Unavailable(tts.INSTALL_HINT)
        known = (*SPEECH_ALIASES, self.engine.name)
        if request.model and request.model not in known:
            raise NotFound(f"speech model {request.model!r} is not served here; use one of {', '.join(known)}")
        return self.engine

    @contextlib.asynccontextmanager
    async def _admission(self) -> AsyncIterator[None]:
        """A place in this replica's bounded queue: over it, the caller is told to retry later."""
        if self._admitted >= self.config.voice_queue:
            raise Busy(
                f"voice replica {self.ctx.replica} is busy ({self._admitted} requests running or queued, limit "
                f"{self.config.voice_queue}); retry later"
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1


def _pieces(data: bytes) -> list[bytes]:
    return [data[i : i + SPEAK_CHUNK_BYTES] for i in range(0, len(data), SPEAK_CHUNK_BYTES)]
