"""Reusable request threads under load: many requests at once, some cancelled,
with and without ``max_threads``; no thread serves two requests at once, and
nothing is left behind once the switch goes off."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from asgiref.local import Local
from asgiref.sync import ThreadSensitiveContext, sync_to_async

pytest.importorskip("asgire")

from asgire import request_threads  # after the skip: upstream runs lack it

pytestmark = [pytest.mark.stress, pytest.mark.asgire_only]

REQUESTS = 2_000
CONCURRENCY = 64
connection = Local(thread_critical=True)


class Ledger:
    """Which request each call ran for, per thread, in the order they ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[threading.Thread, list[int]] = defaultdict(list)
        self.threads_of: dict[int, set[threading.Thread]] = defaultdict(set)
        self.connections: set[int] = set()

    def call(self, request: int) -> None:
        me = threading.current_thread()
        if getattr(connection, "id", None) is None:
            connection.id = id(me)  # one "connection" per thread, opened once
        with self.lock:
            self.by_thread[me].append(request)
            self.threads_of[request].add(me)
            self.connections.add(connection.id)

    def interleaved(self) -> list[str]:
        """Threads on which a request's calls resumed after another
        request's: two requests shared that thread."""
        shared = []
        for thread, requests in self.by_thread.items():
            blocks = [
                r for i, r in enumerate(requests) if i == 0 or requests[i - 1] != r
            ]
            if len(blocks) != len(set(blocks)):
                shared.append(thread.name)
        return shared


async def serve(ledger: Ledger, seed: int) -> tuple[int, int]:
    """``REQUESTS`` requests, ``CONCURRENCY`` at a time, one in ten cancelled
    at a random point; returns (completed, cancelled)."""
    rng = random.Random(seed)
    call = sync_to_async(ledger.call)
    slots = asyncio.Semaphore(CONCURRENCY)

    async def request(n: int) -> None:
        async with slots, ThreadSensitiveContext():
            if rng.random() < 0.1:
                # A task the request starts and does not wait for: its call
                # is queued on the request's thread, which the exit waits for.
                asyncio.ensure_future(call(n))  # noqa: RUF006
                await asyncio.sleep(0)
            for _ in range(rng.randint(1, 4)):
                await call(n)
                if rng.random() < 0.3:
                    await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(request(n)) for n in range(REQUESTS)]
    for n in rng.sample(range(REQUESTS), REQUESTS // 10):
        asyncio.get_running_loop().call_later(rng.random() * 0.2, tasks[n].cancel)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert all(o is None or isinstance(o, asyncio.CancelledError) for o in outcomes)
    return REQUESTS - cancelled, cancelled


@pytest.mark.timeout(120)
@pytest.mark.parametrize("max_threads", [None, 8], ids=["unbounded", "max_threads=8"])
def test_many_requests_never_share_a_thread_and_leave_nothing_behind(
    max_threads: int | None, resources: Any, figures: Any
) -> None:
    ledger = Ledger()
    before = request_threads.status().started
    request_threads.enable(max_threads=max_threads, idle_timeout=30)
    try:
        started = time.perf_counter()
        completed, cancelled = asyncio.run(serve(ledger, seed=25))
        elapsed = time.perf_counter() - started
        status = request_threads.status()
        threads = status.started - before
    finally:
        request_threads.disable()
        request_threads.enable(max_threads=None, idle_timeout=60.0)
        request_threads.disable()
    assert ledger.interleaved() == []
    assert all(len(threads) == 1 for threads in ledger.threads_of.values())
    assert (status.busy, status.waiting) == (0, 0)
    if max_threads is not None:
        assert threads <= max_threads
    # A thread is given back once its queue has run, which may be after a
    # cancelled request has let its slot go: each such request may have
    # made one more thread start.
    assert threads <= CONCURRENCY + cancelled
    # One "connection" per thread, whatever the number of requests.
    assert len(ledger.connections) == threads
    resources.assert_back_to_baseline()
    figures.record(
        f"request threads, max_threads={max_threads}",
        requests=completed,
        cancelled=cancelled,
        threads=threads,
        requests_per_s=round(completed / elapsed),
    )
