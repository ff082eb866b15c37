"""The OpenAI audio routes, answered by the node's voice service: POST /v1/audio/transcriptions (multipart upload),
POST /v1/audio/speech (audio streamed as it is spoken), GET /v1/audio/voices.

An upload too large for one NATS message goes to the voice service by reference (`avadios.blobs`): the gateway
offers the bytes while the call runs and the voice replica that took it pulls them in chunks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from avadios import blobs
from avadios.errors import InvalidArgument, PayloadTooLarge
from avadios.services.gateway.api.audio_formats import MEDIA_TYPES, TRANSCRIPT_FORMATS, render
from avadios.services.gateway.metrics import Metrics
from avadios.v1 import voice_pb2
from avadios.v1.voice_nats import VoiceClient

TRANSCRIPTIONS_ROUTE = "/v1/audio/transcriptions"
SPEECH_ROUTE = "/v1/audio/speech"
VOICES_ROUTE = "/v1/audio/voices"
# Multipart framing and the form's other fields around the file: what a request body may add to the file's limit.
FORM_OVERHEAD_BYTES = 64 * 1024
# Room kept in a NATS message beside an inline file (the request's other fields, headers).
INLINE_HEADROOM_BYTES = 64 * 1024


class SpeechRequest(BaseModel):
    """OpenAI's speech body. `instructions` and `stream_format` are accepted and ignored: the native engines have
    no use for them."""

    model_config = ConfigDict(extra="ignore")
    input: str = Field(min_length=1, description="the text to speak")
    model: str = Field("tts-1", description="tts-1, tts-1-hd or the engine's name: all mean the native engine")
    voice: str = Field(
        "alloy",
        description="an OpenAI voice (alloy, echo, fable, onyx, nova, shimmer, ...) or one from GET /v1/audio/voices",
    )
    response_format: Literal["wav", "mp3", "opus", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    stream_format: str | None = None


class VoiceOut(BaseModel):
    name: str
    language: str
    gender: str
    engine_voice: str
    openai_alias: bool


class VoicesOut(BaseModel):
    engine: str = Field(description="espeak-ng, say or sapi; empty where the machine has none")
    available: bool
    detail: str = Field(description="when unavailable: what to install")
    default_voice: str
    voices: list[VoiceOut]


class TranscriptionOut(BaseModel):
    text: str


def audio_router(voice: VoiceClient, metrics: Metrics, max_audio_bytes: int) -> APIRouter:
    router = APIRouter(tags=["audio"])

    @router.post(
        TRANSCRIPTIONS_ROUTE,
        summary="Speech to text (OpenAI-compatible); json, text, verbose_json, srt or vtt",
        response_model=TranscriptionOut,
        responses={200: {"content": {m: {} for m in set(MEDIA_TYPES.values())}}},
    )
    async def transcriptions(
        file: Annotated[UploadFile, File(description="wav, mp3, ogg, flac, webm, m4a, ...")],
        model: Annotated[str, Form(description="whisper-1 (the default model) or a name from /v1/models")] = "",
        language: Annotated[str, Form(description="ISO-639-1; empty: detect")] = "",
        prompt: Annotated[str, Form()] = "",
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
        response_format: Annotated[str, Form()] = "json",
    ) -> Response:
        started = time.perf_counter()
        if response_format not in TRANSCRIPT_FORMATS:
            raise InvalidArgument(
                f"response_format {response_format!r} is not supported; use one of {', '.join(TRANSCRIPT_FORMATS)}"
            )
        audio = await file.read(max_audio_bytes + 1)
        if len(audio) > max_audio_bytes:
            raise PayloadTooLarge(f"the audio file is over the limit of {max_audio_bytes} bytes")
        request = voice_pb2.TranscribeRequest(
            request_id=uuid.uuid4().hex,
            model=model,
            filename=file.filename or "",
            language=language,
            prompt=prompt,
            temperature=temperature,
            want_segments=response_format in ("verbose_json", "srt", "vtt"),
        )
        nc = voice.channel.nc
        if len(audio) <= nc.max_payload - INLINE_HEADROOM_BYTES:
            request.audio = audio
            reply = await voice.Transcribe(request, request_id=request.request_id)
        else:
            async with blobs.offered(nc, audio) as ref:
                request.audio_ref.CopyFrom(ref)
                reply = await voice.Transcribe(request, request_id=request.request_id)
        metrics.audio_seconds.labels(reply.model).inc(reply.duration_s)
        metrics.requests.labels(TRANSCRIPTIONS_ROUTE, "200", "1").inc()
        metrics.latency.labels(TRANSCRIPTIONS_ROUTE, "1").observe(time.perf_counter() - started)
        body = render(reply, response_format)
        if isinstance(body, dict):
            return JSONResponse(body)
        return PlainTextResponse(body, media_type=MEDIA_TYPES[response_format])

    @router.post(
        SPEECH_ROUTE,
        summary="Text to speech with the platform's native engine (OpenAI-compatible), streamed as it is spoken",
        response_class=StreamingResponse,
        responses={200: {"content": {"audio/mpeg": {}, "audio/wav": {}, "audio/ogg": {}, "audio/pcm": {}}}},
    )
    async def speech(body: SpeechRequest) -> Response:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        stream = voice.Speak(
            voice_pb2.SpeakRequest(
                request_id=request_id,
                input=body.input,
                model=body.model,
                voice=body.voice,
                format=body.response_format,
                speed=body.speed,
            ),
            request_id=request_id,
        )
        # The first chunk is awaited before the response starts, so a refusal still gets its own status (400, 503).
        first = await anext(aiter(stream))
        metrics.speech_first_byte.observe(time.perf_counter() - started)
        metrics.speech_requests.labels(body.response_format).inc()
        metrics.requests.labels(SPEECH_ROUTE, "200", "1").inc()

        async def audio() -> AsyncIterator[bytes]:
            try:
                yield first.audio
                async for chunk in stream:
                    yield chunk.audio
            finally:  # a client that hangs up stops the engine (the transport cancels the stream)
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()

        # pcm has no header of its own: its rate travels here (the engine's, 22,050 Hz for espeak-ng)
        headers = {
            "X-Request-Id": request_id,
            "X-Avadios-Voice": first.voice,
            "X-Avadios-Sample-Rate": str(first.sample_rate),
        }
        return StreamingResponse(audio(), media_type=first.content_type, headers=headers)

    @router.get(VOICES_ROUTE, summary="The voices of this node's speech engine, OpenAI's names first")
    async def voices() -> VoicesOut:
        reply = await voice.ListVoices(voice_pb2.ListVoicesRequest(), timeout=10)
        return VoicesOut(
            engine=reply.engine,
            available=reply.available,
            detail=reply.detail,
            default_voice=reply.default_voice,
            voices=[
                VoiceOut(
                    name=v.name,
                    language=v.language,
                    gender=v.gender,
                    engine_voice=v.engine_voice,
                    openai_alias=v.is_alias,
                )
                for v in reply.voices
            ],
        )

    return router
