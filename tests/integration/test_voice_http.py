"""Voice through a real node (`avadios up`) and the official `openai` client: speech, transcriptions in every
response format, bad uploads refused with OpenAI's error shape while the node keeps serving."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, OpenAI

from tests.helpers import Node, eventually, running_node
from tests.voice_support import (
    SENTENCES,
    audio_seconds,
    needs_espeak,
    spoken,
    transcribe_over_http,
    word_error_rate,
)

pytestmark = needs_espeak
MAX_AUDIO = 3_000_000  # over the 1 MiB NATS message, so a large upload travels by reference


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("home"), AVADIOS_VOICE_MAX_AUDIO_BYTES=str(MAX_AUDIO)) as n:

        def voice_serving() -> bool:
            services = httpx.get(n.api_url + "/health").json()["services"]
            return any(s["status"] == "serving" for s in services.get("voice", []))

        eventually(voice_serving, 60, "the voice service to serve")
        yield n


@pytest.fixture(scope="module")
def client(node: Node) -> OpenAI:
    return OpenAI(base_url=node.api_url + "/v1", api_key="unused-on-loopback", max_retries=0)


def transcribe(node: Node, audio: bytes, **form: str) -> httpx.Response:
    return transcribe_over_http(node.api_url, audio, **form)


def test_say_then_transcribe_round_trip_with_the_openai_client(client: OpenAI) -> None:
    text = " ".join(SENTENCES[:2])
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav")
    audio = speech.content
    assert audio_seconds(audio)[1] > 3.0
    transcript = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio))
    assert word_error_rate([text], [transcript.text]) <= 0.20, transcript.text


@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "mp3float"), ("opus", "opus")])
def test_speech_comes_streamed_in_mp3_and_opus(client: OpenAI, fmt: str, codec: str) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1-hd",
        voice="nova",
        input=SENTENCES[2],
        response_format=fmt,  # type: ignore[arg-type]
    ) as response:
        assert response.headers["content-type"] in ("audio/mpeg", "audio/ogg")
        assert response.headers["x-avadios-voice"] == "en-us+f3"
        pieces = list(response.iter_bytes())
    found, seconds = audio_seconds(b"".join(pieces))
    assert found == codec and seconds > 1.5


def test_each_transcription_response_format(client: OpenAI, node: Node) -> None:
    audio = spoken(" ".join(SENTENCES[:2]))
    as_json = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="json")
    as_text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="text")
    assert as_text.strip() == as_json.text and "quick brown fox" in as_json.text.lower()

    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", audio), response_format="verbose_json"
    )
    assert verbose.language == "en" and 3.0 < verbose.duration < 10.0 and verbose.segments
    assert "".join(s.text for s in verbose.segments).strip() == verbose.text == as_json.text

    srt = transcribe(node, audio, response_format="srt")
    assert srt.status_code == 200 and srt.headers["content-type"].startswith("application/x-subrip")
    assert re.match(r"1\n00:00:00,000 --> 00:00:\d\d,\d{3}\n\S", srt.text), srt.text

    # the official client returns the subtitle formats as text, as it does from OpenAI
    assert (
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="srt") == srt.text
    )
    vtt = transcribe(node, audio, response_format="vtt")
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    assert re.match(r"WEBVTT\n\n00:00:00\.000 --> 00:00:\d\d\.\d{3}\n\S", vtt.text), vtt.text
    assert (
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="vtt") == vtt.text
    )


def test_bad_uploads_get_openai_errors_and_the_node_keeps_serving(client: OpenAI, node: Node) -> None:
    for audio, says in ((b"", "empty"), (b"%PDF-1.7 not audio" * 100, "could not be decoded")):
        reply = transcribe(node, audio)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert says in error["message"] and error["type"] == "invalid_request_error" and error["code"]
    with pytest.raises(BadRequestError, match="could not be decoded"):
        client.audio.transcriptions.create(model="whisper-1", file=("x.mp3", b"\xff\xfb" + b"\x00" * 5000))

    too_big = transcribe(node, b"\x00" * (MAX_AUDIO + 10))
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    bad_format = transcribe(node, spoken("hi"), response_format="docx")
    assert bad_format.status_code == 400 and "srt" in bad_format.json()["error"]["message"]
    unknown = transcribe(node, spoken("hi"), model="large-v3")
    assert unknown.status_code == 404 and "tiny.en" in unknown.json()["error"]["message"]

    # still serving: a good upload over one NATS message (by reference) is transcribed
    long_audio = spoken(" ".join(SENTENCES * 3))
    assert 1 << 20 < len(long_audio) < MAX_AUDIO
    reply = transcribe(node, long_audio)
    assert reply.status_code == 200, reply.text
    assert word_error_rate([" ".join(SENTENCES * 3)], [reply.json()["text"]]) <= 0.20
    assert httpx.get(node.api_url + "/health").status_code == 200


def test_bad_speech_requests_get_openai_errors(node: Node) -> None:
    for body, status, says in (
        ({"model": "tts-1", "input": ""}, 400, "input"),
        ({"model": "tts-1", "input": "hi", "speed": 8}, 400, "speed"),
        ({"model": "tts-1", "input": "hi", "response_format": "flac"}, 400, "response_format"),
        ({"model": "tts-9", "input": "hi"}, 404, "tts-9"),
        ({"model": "tts-1", "input": "hi", "voice": "-w /tmp/x"}, 400, "not a voice name"),
    ):
        reply = httpx.post(node.api_url + "/v1/audio/speech", json=body, timeout=30)
        assert reply.status_code == status, reply.text
        assert says in reply.json()["error"]["message"]


def test_models_voices_health_and_metrics_show_voice(client: OpenAI, node: Node) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"whisper-1", "tiny.en", "tts-1", "tts-1-hd", "espeak-ng", "gemma-3-270m-q4_k_m"} <= ids
    voices = httpx.get(node.api_url + "/v1/audio/voices").json()
    assert voices["engine"] == "espeak-ng" and voices["available"]
    assert {"alloy", "echo", "fable", "onyx", "nova", "shimmer"} <= {v["name"] for v in voices["voices"]}
    health = httpx.get(node.api_url + "/health").json()
    assert health["services"]["voice"][0]["loaded_model"] == "tiny.en"
    metrics = httpx.get(node.api_url + "/metrics").text
    seconds = re.search(r'avadios_audio_transcribed_seconds_total\{model="tiny.en"\} ([\d.e+]+)', metrics)
    assert seconds and float(seconds[1]) > 3.0, metrics
    assert re.search(r'avadios_speech_requests_total\{format="wav"\} [1-9]', metrics)


def test_cli_say_then_transcribe(node: Node, tmp_path: Path) -> None:
    text = " ".join(SENTENCES[:2])
    out = tmp_path / "out.mp3"
    said = node.cli("say", text, "-o", str(out), "--voice", "alloy", "--json")
    assert said.returncode == 0, said.stderr
    summary = json.loads(said.stdout)
    assert summary["format"] == "mp3" and summary["voice"] == "en-us" and summary["bytes"] == out.stat().st_size
    assert audio_seconds(out.read_bytes())[0] == "mp3float"

    heard = node.cli("transcribe", str(out), "--json")
    assert heard.returncode == 0, heard.stderr
    transcript = json.loads(heard.stdout)
    assert word_error_rate([text], [transcript["text"]]) <= 0.20 and transcript["segments"]
    plain = node.cli("transcribe", str(out))
    assert plain.returncode == 0 and plain.stdout.strip() == transcript["text"]
    srt = node.cli("transcribe", str(out), "--format", "srt")
    assert srt.stdout.startswith("1\n00:00:00,000 --> ")

    models = node.cli("models")
    assert models.returncode == 0 and "whisper-1" in models.stderr and "transcription" in models.stderr


def test_cli_voice_errors_are_clear_and_leave_no_file(node: Node, tmp_path: Path) -> None:
    missing = node.cli("transcribe", str(tmp_path / "nope.wav"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio" * 100)
    refused = node.cli("transcribe", str(junk))
    assert refused.returncode == 1 and "could not be decoded" in refused.stderr
    out = tmp_path / "bad.wav"
    bad = node.cli("say", "hello", "-o", str(out), "--speed", "9")
    assert bad.returncode == 1 and "speed" in bad.stderr and not out.exists()
    assert not list(tmp_path.glob("*.partial"))
