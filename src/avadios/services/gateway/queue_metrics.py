"""Prometheus series of every inference replica's request queue, read from the replicas' latest heartbeats.

Each replica counts its own queue (`avadios.services.inference.admission`); its heartbeat carries the numbers,
so the gateway's one `/metrics` shows them per instance without a scrape port per service, and the node-wide
totals are a `sum()` away in PromQL.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from avadios.services.gateway.health import HealthBoard


class QueueCollector(Collector):
    def __init__(self, board: HealthBoard, service: str = "inference") -> None:
        self.board = board
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
        labels = ["service", "instance"]
        depth = GaugeMetricFamily("avadios_queue_depth", "Requests waiting for a slot", labels=labels)
        running = GaugeMetricFamily("avadios_queue_running", "Requests holding a slot (running)", labels=labels)
        slots = GaugeMetricFamily("avadios_queue_slots", "Requests a replica runs at once", labels=labels)
        limit = GaugeMetricFamily("avadios_queue_limit", "Requests a replica holds before 429", labels=labels)
        wait = SummaryMetricFamily(
            "avadios_queue_wait_seconds", "Time requests waited for a slot (those that got one)", labels=labels
        )
        timeouts = CounterMetricFamily(
            "avadios_queue_timeouts", "Requests refused (503) because no slot came within their wait", labels=labels
        )
        rejected = CounterMetricFamily("avadios_queue_rejected", "Requests refused (429): queue full", labels=labels)
        cancelled = CounterMetricFamily(
            "avadios_queue_cancelled", "Requests whose caller went away before they finished", labels=labels
        )
        for beat in self.board.live(self.service):
            key = [beat.service, beat.instance]
            depth.add_metric(key, beat.queued)
            running.add_metric(key, beat.in_flight - beat.queued)
            slots.add_metric(key, beat.slots)
            limit.add_metric(key, beat.queue_limit)
            wait.add_metric(key, count_value=beat.queue_waits, sum_value=beat.queue_wait_seconds_sum)
            timeouts.add_metric(key, beat.queue_timeouts)
            rejected.add_metric(key, beat.queue_rejected)
            cancelled.add_metric(key, beat.cancelled)
        yield from (depth, running, slots, limit, wait, timeouts, rejected, cancelled)
