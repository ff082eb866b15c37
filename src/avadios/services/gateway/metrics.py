"""The gateway's Prometheus metrics, in a registry owned by the app (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "avadios_requests",
            "HTTP API requests by route, status and tier",
            ["route", "status", "tier"],
            registry=self.registry,
        )
        self.errors = Counter(
            "avadios_errors",
            "HTTP API error responses by route and error code",
            ["route", "code"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "avadios_tokens",
            "Tokens processed, by tier and kind (prompt or completion)",
            ["tier", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "avadios_request_latency_seconds",
            "Whole-request latency by route and tier",
            ["route", "tier"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.p2p_messages = Counter(
            "avadios_p2p_messages",
            "P2P messages by direction (out: this node asked a peer; in: a peer asked this node) and body type",
            ["direction", "type"],
            registry=self.registry,
        )
        self.first_token = Histogram(
            "avadios_time_to_first_token_seconds",
            "Time to the first streamed token",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.audio_seconds = Counter(
            "avadios_audio_transcribed_seconds",
            "Seconds of audio transcribed, by Whisper model",
            ["model"],
            registry=self.registry,
        )
        self.speech_requests = Counter(
            "avadios_speech_requests",
            "Text-to-speech requests that started streaming audio, by format",
            ["format"],
            registry=self.registry,
        )
        self.speech_first_byte = Histogram(
            "avadios_speech_first_byte_seconds",
            "Time from a speech request to its first audio bytes",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "avadios_gateway_in_flight",
            "Generation requests the HTTP API is answering now (queued or running)",
            ["route"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
