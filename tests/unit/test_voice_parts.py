"""The voice service's pure parts: engine choice, WAV stream parsing, voice names, model discovery, replicas."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from avadios.config import load_config, parse_replicas, with_replicas
from avadios.errors import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    RpcError,
    Unavailable,
    http_status,
    http_status_of,
)
from avadios.services.gateway.api import audio_formats
from avadios.services.voice import stt, tts
from avadios.services.voice.encode import WavReader, encoder_for, wav_header
from avadios.v1 import voice_pb2


def test_without_any_engine_speech_is_unavailable_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert tts.pick_engine("Linux") is None
    assert tts.pick_engine("Darwin") is None and tts.pick_engine("Windows") is None
    refusal = Unavailable(tts.INSTALL_HINT)
    assert http_status(refusal.code) == 503 and "apt-get install espeak-ng" in refusal.message


def test_each_platform_gets_its_own_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("say", "powershell", "espeak-ng"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert isinstance(tts.pick_engine("Darwin"), tts.MacSay)
    assert isinstance(tts.pick_engine("Windows"), tts.Sapi)
    assert isinstance(tts.pick_engine("Linux"), tts.Espeak)


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=97))
def test_a_wav_stream_cut_anywhere_gives_back_its_rate_and_every_sample(pcm: bytes, step: int) -> None:
    stream = wav_header(22050) + pcm
    reader = WavReader()
    out = b"".join(reader.feed(stream[i : i + step]) for i in range(0, len(stream), step))
    assert reader.sample_rate == 22050 and out == pcm


def test_a_stream_that_is_not_wav_is_refused() -> None:
    with pytest.raises(ValueError, match="not a WAV"):
        WavReader().feed(b"ID3\x04" + b"\x00" * 40)


def test_voice_names_that_could_read_as_options_are_refused() -> None:
    engine = tts.Espeak("/usr/bin/espeak-ng")
    assert engine.resolve("") == "en-us" and engine.resolve("Nova") == "en-us+f3" and engine.resolve("de") == "de"
    for bad in ("-w/tmp/x", "--path=/", "../x", "a" * 80, "en\nus"):
        with pytest.raises(InvalidArgument):
            engine.resolve(bad)


def test_espeak_voice_listing_leaves_out_mbrola_voices() -> None:
    listing = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)
 5  en-us           --/F      us-mbrola-1        mb/mb-us1            (en 8)
 5  de              --/F      German             gmw/de
"""
    voices = tts.parse_espeak_voices(listing)
    assert [(v.name, v.gender) for v in voices] == [("de", "female"), ("en-us", "male")]


def test_an_unsupported_format_names_the_supported_ones() -> None:
    with pytest.raises(InvalidArgument, match="wav, mp3, opus, pcm"):
        encoder_for("flac", 22050)


def test_whisper_models_dropped_into_the_home_are_found_and_openai_names_mean_the_default(tmp_path: Path) -> None:
    (tmp_path / "base.en").mkdir()
    (tmp_path / "base.en" / "model.bin").write_bytes(b"")
    (tmp_path / "not-a-model").mkdir()
    models = stt.discover(tmp_path, Path("/shipped/tiny.en"))
    assert list(models) == ["tiny.en", "base.en"]
    assert stt.resolve(models, "whisper-1").is_default and stt.resolve(models, "").is_default
    assert stt.resolve(models, "base.en").path == tmp_path / "base.en"
    with pytest.raises(NotFound, match=r"base\.en, tiny\.en"):
        stt.resolve(models, "large-v3")


def test_voice_scales_by_replicas_like_inference(tmp_path: Path) -> None:
    config = with_replicas(load_config({"home": tmp_path}, env={}), parse_replicas("voice=3,inference=2"))
    assert config.replicas("voice") == 3 and config.replicas("inference") == 2 and config.replicas("cache") == 1
    env = load_config({"home": tmp_path}, env={"AVADIOS_VOICE_REPLICAS": "2", "AVADIOS_VOICE_QUEUE": "6"})
    assert env.voice_replicas == 2 and env.voice_queue == 6
    with pytest.raises(ValueError, match="voice_queue"):
        load_config({"home": tmp_path, "voice_queue": 0}, env={})


def _reply(*segments: tuple[float, float, str]) -> voice_pb2.TranscribeReply:
    return voice_pb2.TranscribeReply(
        text="".join(t for _, _, t in segments).strip(),
        language="en",
        duration_s=3725.5,
        segments=[voice_pb2.TranscriptSegment(id=i, start=a, end=b, text=t) for i, (a, b, t) in enumerate(segments)],
    )


def test_subtitles_number_their_cues_and_write_hours_minutes_seconds_and_milliseconds() -> None:
    reply = _reply((0.0, 2.5, " Hello there."), (3599.9994, 3725.25, " An hour later."))
    assert audio_formats.srt(reply) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:59:59,999 --> 01:02:05,250\nAn hour later.\n"
    )
    assert audio_formats.vtt(reply) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n00:59:59.999 --> 01:02:05.250\nAn hour later.\n"
    )
    assert audio_formats.render(reply, "json") == {"text": "Hello there. An hour later."}
    assert audio_formats.render(reply, "text") == "Hello there. An hour later.\n"
    verbose = audio_formats.render(reply, "verbose_json")
    assert isinstance(verbose, dict) and verbose["duration"] == 3725.5 and len(verbose["segments"]) == 2


def test_an_upload_over_the_limit_refused_in_another_process_is_still_413_not_busy() -> None:
    remote = RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "9 bytes is over the limit of 8 bytes", "request_too_large")
    busy = RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "voice replica 0 is busy")
    assert http_status_of(remote) == 413 and http_status_of(busy) == 429
    assert http_status_of(PayloadTooLarge("over")) == 413
