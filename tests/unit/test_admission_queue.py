"""The inference replica's request queue: FIFO slots, 429 when full, 503 past the wait, cancelled waiters leave."""

from __future__ import annotations

import asyncio
import math

import pytest

from avadios.errors import QueueFull, QueueTimeout, http_status_of
from avadios.services.inference.admission import AdmissionQueue


async def hold(queue: AdmissionQueue, started: list[int], n: int, release: asyncio.Event, wait_s: float = 5) -> None:
    async with queue.slot(wait_s):
        started.append(n)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_get_slots_in_arrival_order() -> None:
    queue = AdmissionQueue(slots=2, limit=10)
    started: list[int] = []
    releases = [asyncio.Event() for _ in range(6)]
    tasks = []
    for n in range(6):
        tasks.append(asyncio.create_task(hold(queue, started, n, releases[n])))
        await settle()
    assert started == [0, 1]
    assert queue.stats().waiting == 4 and queue.stats().running == 2
    for n in range(6):
        releases[n].set()
        await settle()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3, 4, 5]
    stats = queue.stats()
    assert (stats.running, stats.waiting, stats.waits) == (0, 0, 6)


async def test_a_full_queue_refuses_at_once_with_429_and_a_retry_estimate() -> None:
    queue = AdmissionQueue(slots=1, limit=2)
    release = asyncio.Event()
    started: list[int] = []
    tasks = [asyncio.create_task(hold(queue, started, n, release)) for n in range(2)]
    await settle()
    with pytest.raises(QueueFull) as refused:
        async with queue.slot(5):
            pass
    assert http_status_of(refused.value) == 429 and refused.value.retry_after_s is not None
    assert refused.value.retry_after_s >= 1
    release.set()
    await asyncio.gather(*tasks)
    assert queue.stats().rejected == 1 and started == [0, 1]


async def test_a_wait_past_its_deadline_is_refused_with_503_and_loses_no_slot() -> None:
    queue = AdmissionQueue(slots=1, limit=5)
    release = asyncio.Event()
    started: list[int] = []
    first = asyncio.create_task(hold(queue, started, 0, release))
    await settle()
    with pytest.raises(QueueTimeout) as refused:
        async with queue.slot(0.05):
            pass
    assert http_status_of(refused.value) == 503 and refused.value.reason == "queue_timeout"
    assert queue.stats().waiting == 0 and queue.stats().timeouts == 1
    release.set()
    await first
    async with queue.slot(0.05) as waited:  # the slot came back: the next request starts at once
        assert waited < 0.05
    assert queue.stats().running == 0


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_one_moves_up() -> None:
    queue = AdmissionQueue(slots=1, limit=5)
    release = [asyncio.Event() for _ in range(3)]
    started: list[int] = []
    tasks = [asyncio.create_task(hold(queue, started, n, release[n])) for n in range(3)]
    await settle()
    tasks[1].cancel()  # its client went away while it waited
    await settle()
    assert queue.stats().waiting == 1
    release[0].set()
    await settle()
    assert started == [0, 2]
    release[2].set()
    await asyncio.gather(tasks[0], tasks[2])
    assert queue.stats().running == 0


async def test_a_cancelled_runner_frees_its_slot_for_the_head_of_the_line() -> None:
    queue = AdmissionQueue(slots=1, limit=5)
    release = [asyncio.Event() for _ in range(2)]
    started: list[int] = []
    tasks = [asyncio.create_task(hold(queue, started, n, release[n])) for n in range(2)]
    await settle()
    tasks[0].cancel()
    await settle()
    assert started == [0, 1]
    release[1].set()
    await tasks[1]
    assert queue.stats().running == 0


def test_queue_refusals_become_openai_errors_with_retry_after() -> None:
    import json

    from avadios.errors import RpcError
    from avadios.services.gateway.api.errors import describe, error_response

    for exc, status in ((QueueTimeout("no slot in time", 2.2), 503), (QueueFull("queue full", 7.0), 429)):
        # as it arrives from the inference process: code, message, reason and the estimate, carried by the transport
        remote = RpcError(exc.code, exc.message, exc.reason, exc.retry_after_s)
        response = error_response(describe(remote))
        assert response.status_code == status
        assert response.headers["retry-after"] == str(math.ceil(exc.retry_after_s or 0))
        error = json.loads(bytes(response.body))["error"]
        assert error["code"] == exc.reason and error["message"] == exc.message
