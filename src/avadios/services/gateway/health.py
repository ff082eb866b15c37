"""The gateway's view of the node: the latest heartbeat of every service instance, aged out when silent."""

from __future__ import annotations

import time
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from avadios.runtime import HEARTBEAT_INTERVAL_S, HEARTBEAT_SUBJECT
from avadios.v1 import common_pb2

STALE_AFTER_S = HEARTBEAT_INTERVAL_S * 3.5
Status = common_pb2.HealthReply.Status


@dataclass(slots=True)
class Beat:
    reply: common_pb2.HealthReply
    received: float


class HealthBoard:
    def __init__(self) -> None:
        self._beats: dict[str, Beat] = {}

    async def subscribe(self, nc: NatsClient) -> None:
        await nc.subscribe(f"{HEARTBEAT_SUBJECT}.>", cb=self._on_beat)

    async def _on_beat(self, msg: Msg) -> None:
        try:
            reply = common_pb2.HealthReply.FromString(msg.data)
        except Exception:
            return  # a malformed heartbeat is ignored, not trusted
        self._beats[reply.instance] = Beat(reply, time.monotonic())

    def live(self, service: str | None = None) -> list[common_pb2.HealthReply]:
        now = time.monotonic()
        for instance in [i for i, b in self._beats.items() if now - b.received > STALE_AFTER_S * 20]:
            del self._beats[instance]  # forget long-dead instances (restarted processes get new ids)
        return sorted(
            (
                b.reply
                for b in self._beats.values()
                if now - b.received <= STALE_AFTER_S and (service is None or b.reply.service == service)
            ),
            key=lambda r: (r.service, r.replica, r.instance),
        )

    def counters_text(self) -> str:
        """Every live instance's own counters as Prometheus text (avadios_service_counter_total)."""
        lines = []
        for reply in self.live():
            for name, value in sorted(reply.counters.items()):
                labels = f'service="{reply.service}",replica="{reply.replica}",name="{name}"'
                lines.append(f"avadios_service_counter_total{{{labels}}} {value}")
        if not lines:
            return ""
        head = "# HELP avadios_service_counter_total A service's own counters since it started, by name\n"
        return head + "# TYPE avadios_service_counter_total counter\n" + "\n".join(lines) + "\n"

    def inference_ready(self) -> bool:
        return any(r.status == Status.SERVING for r in self.live("inference"))

    def summary(self) -> tuple[str, dict[str, list[dict[str, object]]]]:
        """("ok" | "loading" | "unavailable", per-service instance details) for GET /health."""
        services: dict[str, list[dict[str, object]]] = {}
        for reply in self.live():
            services.setdefault(reply.service, []).append(_describe(reply))
        inference = self.live("inference")
        if any(r.status == Status.SERVING for r in inference):
            state = "ok"
        elif any(r.status == Status.LOADING for r in inference):
            state = "loading"
        else:
            state = "unavailable"
        return state, services


def _describe(reply: common_pb2.HealthReply) -> dict[str, object]:
    return {
        "service": reply.service,
        "instance": reply.instance,
        "replica": reply.replica,
        "pid": reply.pid,
        "status": Status.Name(reply.status).lower(),
        "detail": reply.detail,
        "requests_served": reply.requests_served,
        "in_flight": reply.in_flight,
        "models": list(reply.models),
        "loaded_model": reply.loaded_model,
        "counters": dict(sorted(reply.counters.items())),
        "uptime_s": round(reply.uptime_s, 1),
        **(_queue(reply) if reply.slots else {}),
    }


def _queue(reply: common_pb2.HealthReply) -> dict[str, object]:
    """A service with a request queue (inference): its slots and line now, and its waits since start."""
    waits = reply.queue_waits
    return {
        "queue": {
            "slots": reply.slots,
            "running": reply.in_flight - reply.queued,
            "waiting": reply.queued,
            "limit": reply.queue_limit,
            "mean_wait_s": round(reply.queue_wait_seconds_sum / waits, 3) if waits else 0.0,
            "timeouts": reply.queue_timeouts,
            "rejected": reply.queue_rejected,
            "cancelled": reply.cancelled,
        }
    }
