"""An inference replica's request queue: `slots` requests run at once, the rest wait in arrival order (FIFO).

A request that finds `limit` requests already running or waiting is refused at once (`QueueFull`, HTTP 429); one
that waits past its own wait deadline is refused then (`QueueTimeout`, HTTP 503), both with an estimate of when a
retry may get in. A waiter whose caller goes away (its task is cancelled) leaves the line at once, and a slot
given up is handed straight to the head of the line, so nothing overtakes the queue. No I/O: the clock is
injectable, and what `/metrics` and `avadios status` show is kept here (`QueueStats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from avadios.errors import QueueFull, QueueTimeout

# How many recent run times the Retry-After estimate averages.
RECENT_RUNS = 32


@dataclass(frozen=True, slots=True)
class QueueStats:
    running: int
    waiting: int
    slots: int
    limit: int
    wait_seconds_sum: float  # since start, over every request that got a slot
    waits: int
    timeouts: int
    rejected: int


class AdmissionQueue:
    def __init__(self, slots: int, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1 or limit < slots:
            raise ValueError(f"a queue needs at least one slot and a limit of at least its slots ({slots}, {limit})")
        self.slots = slots
        self.limit = limit
        self._clock = clock
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._wait_sum = 0.0
        self._waits = 0
        self._timeouts = 0
        self._rejected = 0
        self._recent_runs: deque[float] = deque(maxlen=RECENT_RUNS)

    def stats(self) -> QueueStats:
        return QueueStats(
            self._running,
            len(self._waiters),
            self.slots,
            self.limit,
            self._wait_sum,
            self._waits,
            self._timeouts,
            self._rejected,
        )

    def retry_after_s(self) -> float:
        """About when a request sent now would get a slot: the line ahead of it, `slots` at a time, at the
        recent run time per request (1 s when nothing has run yet); whole seconds, at least one."""
        per_run = sum(self._recent_runs) / len(self._recent_runs) if self._recent_runs else 1.0
        rounds = (len(self._waiters) + 1) / self.slots
        return float(max(1, math.ceil(per_run * rounds)))

    @contextlib.asynccontextmanager
    async def slot(self, wait_s: float) -> AsyncIterator[float]:
        """Hold a slot for the body of the `async with`; yields how long the request waited for it."""
        queued_at = self._clock()
        await self._acquire(wait_s)
        started = self._clock()
        self._wait_sum += started - queued_at
        self._waits += 1
        try:
            yield started - queued_at
        finally:
            self._recent_runs.append(self._clock() - started)
            self._release()

    async def _acquire(self, wait_s: float) -> None:
        if self._running < self.slots and not self._waiters:
            self._running += 1
            return
        if self._running + len(self._waiters) >= self.limit:
            self._rejected += 1
            raise QueueFull(
                f"the inference queue is full ({self._running} running, {len(self._waiters)} waiting, limit "
                f"{self.limit}); retry later",
                self.retry_after_s(),
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), wait_s)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot came just as the wait ended: give it on, not away
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                self._timeouts += 1
                raise QueueTimeout(
                    f"no inference slot came free within {wait_s:.3g} s ({self._running} running, "
                    f"{len(self._waiters)} waiting); retry later",
                    self.retry_after_s(),
                ) from None
            raise

    def _release(self) -> None:
        """A slot is free: it goes to the longest waiter still waiting, else back to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: _running stays the same
                return
        self._running -= 1
