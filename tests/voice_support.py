"""Test support for voice: known sentences spoken by the real espeak-ng, word error rate, audio length."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from typing import cast

import av
import httpx
import jiwer
import pytest
from av.audio.stream import AudioStream

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng): text-to-speech and the spoken test audio need it",
)
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please send the report to the office before noon.",
    "Our network answers questions on your own computer.",
    "It is a beautiful day to walk along the river.",
)


def spoken(text: str, voice: str = "en-us") -> bytes:
    """A WAV of espeak-ng speaking `text` (22,050 Hz mono)."""
    assert ESPEAK is not None
    return subprocess.run([ESPEAK, "-v", voice, "--stdout", text], capture_output=True, check=True).stdout


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    return float(jiwer.wer([normalized(r) for r in references], [normalized(h) for h in hypotheses]))


def audio_seconds(data: bytes) -> tuple[str, float]:
    """The codec and length of an encoded audio file, as FFmpeg (PyAV) reads it."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        samples = sum(int(frame.samples) for frame in container.decode(stream))
        return stream.codec_context.name, samples / stream.rate


def transcribe_over_http(api_url: str, audio: bytes, **form: str) -> httpx.Response:
    """POST /v1/audio/transcriptions as a multipart upload, the way OpenAI's clients send it."""
    return httpx.post(
        api_url + "/v1/audio/transcriptions",
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1", **form},
        timeout=120,
    )


def reencoded(wav: bytes, container: str, codec: str, rate: int) -> bytes:
    """`wav` re-encoded by FFmpeg (PyAV) into another container and codec, as a user's recording might come."""
    out = io.BytesIO()
    with av.open(io.BytesIO(wav), mode="r") as source, av.open(out, mode="w", format=container) as sink:
        stream = cast(AudioStream, sink.add_stream(codec, rate=rate, layout="mono"))
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for frame in source.decode(audio=0):
            for converted in resampler.resample(frame):
                sink.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            sink.mux(stream.encode(converted))
        sink.mux(stream.encode(None))
    return out.getvalue()
