"""How a transcript is written out for each OpenAI `response_format`: json, text, verbose_json, srt and vtt."""

from __future__ import annotations

from typing import Any

from avadios.v1 import voice_pb2

TRANSCRIPT_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def _clock(seconds: float, decimal: str) -> str:
    millis = round(max(0.0, seconds) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(reply: voice_pb2.TranscribeReply) -> str:
    cues = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(reply.segments, start=1)
    ]
    return "\n".join(cues)


def vtt(reply: voice_pb2.TranscribeReply) -> str:
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in reply.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def verbose_json(reply: voice_pb2.TranscribeReply) -> dict[str, Any]:
    return {
        "task": "transcribe",
        "language": reply.language,
        "duration": round(reply.duration_s, 3),
        "text": reply.text,
        "segments": [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": 0.0,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in reply.segments
        ],
    }


def render(reply: voice_pb2.TranscribeReply, response_format: str) -> str | dict[str, Any]:
    """The body: a dict for the JSON formats, text for the others."""
    if response_format == "json":
        return {"text": reply.text}
    if response_format == "verbose_json":
        return verbose_json(reply)
    if response_format == "srt":
        return srt(reply)
    if response_format == "vtt":
        return vtt(reply)
    return reply.text + "\n"
