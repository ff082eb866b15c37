"""The voice service as its own process on a real NATS: real faster-whisper on tiny.en, real espeak-ng."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from nats.aio.client import Client as NatsClient

from avadios import blobs
from avadios.errors import AvadiosError, RpcError
from avadios.transport import NatsChannel, connect
from avadios.v1 import common_pb2, voice_pb2
from avadios.v1.voice_nats import VoiceClient
from tests.helpers import NatsProcess
from tests.voice_support import (
    ESPEAK,
    SENTENCES,
    audio_seconds,
    needs_espeak,
    reencoded,
    spoken,
    word_error_rate,
)

MAX_AUDIO = 400_000
QUEUE = 2


@contextlib.contextmanager
def running_voice(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m avadios.services.voice` as its own process, as the supervisor starts it."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "avadios.services.voice"], env=env, stdout=log, stderr=log)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voice-home")


@pytest.fixture(scope="module")
def voice_process(home: Path) -> Iterator[NatsProcess]:
    server = NatsProcess()
    server.start()
    env = {
        **os.environ,
        "AVADIOS_HOME": str(home),
        "AVADIOS_NATS_URL": server.url,
        "AVADIOS_VOICE_MAX_AUDIO_BYTES": str(MAX_AUDIO),
        "AVADIOS_VOICE_THREADS": "2",
        "AVADIOS_VOICE_QUEUE": str(QUEUE),
    }
    try:
        with running_voice(env, home / "voice.log"):
            yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(voice_process: NatsProcess) -> AsyncIterator[NatsClient]:
    client = await connect(voice_process.url, "voice-test")
    yield client
    await client.close()


@pytest.fixture
async def voice(nc: NatsClient) -> VoiceClient:
    return await serving(VoiceClient(NatsChannel(nc), default_timeout=60))


async def serving(client: VoiceClient) -> VoiceClient:
    """The client, once its voice service reports SERVING (its Whisper model loaded)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            health = await client.Health(common_pb2.HealthRequest(), timeout=2)
            if health.status == common_pb2.HealthReply.SERVING:
                return client
        except AvadiosError:  # not started yet (no responders) or still loading
            pass
        await asyncio.sleep(0.2)
    pytest.fail("the voice service did not report SERVING within 60 s")


async def transcribe(voice: VoiceClient, audio: bytes, **fields: object) -> voice_pb2.TranscribeReply:
    return await voice.Transcribe(voice_pb2.TranscribeRequest(audio=audio, **fields))  # type: ignore[arg-type]


async def speak(client: VoiceClient, text: str, **fields: object) -> tuple[list[voice_pb2.SpeakChunk], bytes]:
    chunks = [c async for c in client.Speak(voice_pb2.SpeakRequest(input=text, **fields))]  # type: ignore[arg-type]
    return chunks, b"".join(c.audio for c in chunks)


@needs_espeak
async def test_known_sentences_spoken_by_espeak_are_transcribed_with_low_word_error_rate(voice: VoiceClient) -> None:
    replies = [await transcribe(voice, spoken(s), model="whisper-1") for s in SENTENCES]
    wer = word_error_rate(list(SENTENCES), [r.text for r in replies])
    assert wer <= 0.20, [r.text for r in replies]
    assert all(r.model == "tiny.en" and r.language == "en" for r in replies)
    assert all(1.0 < r.duration_s < 10.0 and r.compute_s > 0 for r in replies)


@needs_espeak
async def test_segments_have_times_within_the_audio(voice: VoiceClient) -> None:
    reply = await transcribe(voice, spoken(" ".join(SENTENCES[:2])), want_segments=True)
    assert reply.segments, "verbose transcription returned no segments"
    assert all(0 <= s.start < s.end <= reply.duration_s + 0.5 for s in reply.segments)
    assert "".join(s.text for s in reply.segments).strip() == reply.text


@pytest.mark.parametrize(
    ("audio", "says"),
    [
        (b"", "empty"),
        (b"this is not audio at all, just some text" * 20, "could not be decoded"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40, "could not be decoded"),
    ],
    ids=["empty", "text", "truncated-wav"],
)
async def test_bad_files_are_refused_with_a_reason_and_the_service_keeps_serving(
    voice: VoiceClient, audio: bytes, says: str
) -> None:
    with pytest.raises(RpcError) as refused:
        await transcribe(voice, audio)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert says in refused.value.message
    health = await voice.Health(common_pb2.HealthRequest())
    assert health.status == common_pb2.HealthReply.SERVING


@needs_espeak
async def test_large_audio_travels_by_reference_in_chunks_and_over_the_limit_is_refused(
    voice: VoiceClient, nc: NatsClient
) -> None:
    audio = spoken(SENTENCES[0])
    assert len(audio) < MAX_AUDIO
    async with blobs.offered(nc, audio, chunk_bytes=16_384) as ref:
        assert ref.size > 3 * ref.chunk_bytes  # really several chunks
        reply = await voice.Transcribe(voice_pb2.TranscribeRequest(audio_ref=ref))
    # the same bytes as sent inline: the same transcript (beam search at temperature 0 is deterministic)
    assert reply.text == (await transcribe(voice, audio)).text and "quick brown fox" in reply.text

    too_long = spoken(" ".join(SENTENCES * 2))
    assert len(too_long) > MAX_AUDIO
    async with blobs.offered(nc, too_long) as ref:
        with pytest.raises(RpcError) as refused:
            await voice.Transcribe(voice_pb2.TranscribeRequest(audio_ref=ref))
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "over the limit" in refused.value.message


async def test_unknown_model_and_foreign_language_are_refused(voice: VoiceClient) -> None:
    with pytest.raises(RpcError) as unknown:
        await transcribe(voice, b"x", model="large-v9")
    assert unknown.value.code is grpc.StatusCode.NOT_FOUND and "tiny.en" in unknown.value.message
    with pytest.raises(RpcError) as french:
        await transcribe(voice, b"x", language="fr")
    assert french.value.code is grpc.StatusCode.INVALID_ARGUMENT and "English only" in french.value.message


@needs_espeak
async def test_models_list_the_shipped_whisper_model_and_serve_ones_dropped_into_the_home(
    voice: VoiceClient, home: Path
) -> None:
    models = (await voice.ListModels(voice_pb2.ListVoiceModelsRequest())).models
    default = next(m for m in models if m.kind == "transcription" and m.is_default)
    assert default.name == "tiny.en" and "whisper-1" in default.aliases and default.path.endswith(("model", "tiny.en"))
    assert any(m.kind == "speech" and "tts-1" in m.aliases for m in models)
    # A CTranslate2 Whisper model dropped into <home>/models/whisper/<name>/ (a copy of tiny.en) is listed and served.
    shutil.copytree(default.path, home / "models" / "whisper" / "my-tiny.en")
    models = (await voice.ListModels(voice_pb2.ListVoiceModelsRequest())).models
    assert "my-tiny.en" in {m.name for m in models}
    audio = spoken(SENTENCES[0])
    reply = await transcribe(voice, audio, model="my-tiny.en")
    assert reply.model == "my-tiny.en" and reply.text == (await transcribe(voice, audio)).text


@needs_espeak
@pytest.mark.parametrize(("fmt", "codec"), [("wav", "pcm_s16le"), ("mp3", "mp3float"), ("opus", "opus")])
async def test_speech_streams_in_chunks_in_each_format_and_transcribes_back(
    voice: VoiceClient, fmt: str, codec: str
) -> None:
    text = " ".join(SENTENCES[:3])
    chunks, audio = await speak(voice, text, format=fmt, voice="alloy", model="tts-1")
    assert len(chunks) > 1, "speech came as one message, not streamed"
    assert chunks[0].content_type.startswith("audio/") and chunks[0].sample_rate == 22050
    assert chunks[0].voice == "en-us"
    decoded_codec, seconds = audio_seconds(audio)
    assert decoded_codec == codec and 4.0 < seconds < 20.0
    reply = await transcribe(voice, audio)
    assert word_error_rate([text], [reply.text]) <= 0.2, reply.text


@needs_espeak
async def test_speed_changes_the_length_of_speech(voice: VoiceClient) -> None:
    _, normal = await speak(voice, SENTENCES[1])
    _, fast = await speak(voice, SENTENCES[1], speed=2.0)
    assert audio_seconds(fast)[1] < 0.7 * audio_seconds(normal)[1]


@needs_espeak
@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"input": "  "}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ({"input": "hi", "format": "flac"}, grpc.StatusCode.INVALID_ARGUMENT, "not supported"),
        ({"input": "hi", "speed": 9.0}, grpc.StatusCode.INVALID_ARGUMENT, "outside"),
        ({"input": "hi", "voice": "--path=/etc"}, grpc.StatusCode.INVALID_ARGUMENT, "not a voice name"),
        ({"input": "hi", "model": "tts-9"}, grpc.StatusCode.NOT_FOUND, "not served"),
        ({"input": "x" * 5000}, grpc.StatusCode.INVALID_ARGUMENT, "over the limit"),
    ],
    ids=["empty", "format", "speed", "voice-option", "model", "too-long"],
)
async def test_bad_speech_requests_are_refused_with_a_reason(
    voice: VoiceClient, fields: dict[str, object], code: grpc.StatusCode, says: str
) -> None:
    with pytest.raises(RpcError) as refused:
        [c async for c in voice.Speak(voice_pb2.SpeakRequest(**fields))]  # type: ignore[arg-type]
    assert refused.value.code is code and says in refused.value.message


@needs_espeak
async def test_voices_list_openai_names_and_espeak_languages(voice: VoiceClient) -> None:
    reply = await voice.ListVoices(voice_pb2.ListVoicesRequest())
    assert reply.available and reply.engine == "espeak-ng" and reply.default_voice == "en-us"
    names = {v.name: v for v in reply.voices}
    assert {"alloy", "echo", "fable", "onyx", "nova", "shimmer"} <= set(names)
    assert names["nova"].is_alias and names["nova"].gender == "female"
    assert {"en-us", "en-gb", "de", "fr-fr"} <= set(names)
    assert not any(v.engine_voice.startswith("mb-") for v in reply.voices)


@needs_espeak
async def test_a_full_queue_refuses_more_with_busy_and_serves_what_it_took(voice: VoiceClient) -> None:
    audio = spoken(" ".join(SENTENCES[:3]))
    outcomes = await asyncio.gather(*(transcribe(voice, audio) for _ in range(QUEUE + 3)), return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, voice_pb2.TranscribeReply)]
    refused = [o for o in outcomes if isinstance(o, RpcError)]
    assert len(done) + len(refused) == len(outcomes), outcomes
    assert len(done) >= QUEUE and len({d.text for d in done}) == 1
    assert refused and all(r.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in r.message for r in refused)
    health = await voice.Health(common_pb2.HealthRequest())
    assert health.in_flight == 0 and health.status == common_pb2.HealthReply.SERVING


async def test_without_a_speech_engine_speech_is_unavailable_and_says_what_to_install(tmp_path: Path) -> None:
    server = NatsProcess()
    server.start()
    # A PATH with no espeak-ng, say or powershell on it: the machine has no speech engine.
    env = {**os.environ, "AVADIOS_HOME": str(tmp_path), "AVADIOS_NATS_URL": server.url, "PATH": str(tmp_path)}
    with running_voice(env, tmp_path / "voice.log"):
        client = await connect(server.url, "voice-test-no-engine")
        try:
            voice = await serving(VoiceClient(NatsChannel(client), default_timeout=60))
            with pytest.raises(RpcError) as refused:
                await speak(voice, "hello")
            assert refused.value.code is grpc.StatusCode.UNAVAILABLE
            assert "apt-get install espeak-ng" in refused.value.message
            voices = await voice.ListVoices(voice_pb2.ListVoicesRequest())
            assert not voices.available and "espeak-ng" in voices.detail and not voices.voices
            health = await voice.Health(common_pb2.HealthRequest())
            assert health.status == common_pb2.HealthReply.SERVING and "install espeak-ng" in health.detail
            if ESPEAK is not None:  # transcription does not need the engine (the test audio does)
                assert "quick brown fox" in (await transcribe(voice, spoken(SENTENCES[0]))).text.lower()
        finally:
            await client.close()
            server.stop()


@needs_espeak
@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [("flac", "flac", 22050), ("webm", "libopus", 48000), ("ogg", "libopus", 48000), ("mp4", "aac", 22050)],
    ids=["flac", "webm-opus", "ogg-opus", "m4a-aac"],
)
async def test_recordings_in_other_containers_transcribe_like_the_wav(
    voice: VoiceClient, container: str, codec: str, rate: int
) -> None:
    wav = spoken(" ".join(SENTENCES[:2]))
    reply = await transcribe(voice, reencoded(wav, container, codec, rate))
    assert word_error_rate([" ".join(SENTENCES[:2])], [reply.text]) <= 0.20, reply.text
    assert abs(reply.duration_s - (await transcribe(voice, wav)).duration_s) < 0.2
