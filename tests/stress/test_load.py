"""Load: many concurrent crossings lose nothing, and leave nothing behind."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib.util
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from asgiref.sync import (
    AsyncSingleThreadContext,
    AsyncToSync,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

pytestmark = pytest.mark.stress

ASGIRE = importlib.util.find_spec("asgire") is not None

NON_SENSITIVE_CALLS = 10_000
SENSITIVE_CALLS = 1_000
SYNC_THREADS = 64
CALLS_PER_THREAD = 500
# Under tracemalloc upstream asgiref takes 2-3 times as long per crossing as
# asgire: over a minute for 200,000, so the reference run makes fewer.
CROSSINGS = 200_000 if ASGIRE else 40_000
CROSSING_BATCH = 100
# Leaking even one 16-byte object per crossing exceeds this at either count.
CROSSING_GROWTH_LIMIT = 512 * 1024


def echo(value: int) -> int:
    return value


async def async_echo(value: int) -> int:
    return value


class CallLog:
    """Thread-safe record of which call ran, on which thread, in what order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.order: list[int] = []
        self.threads: set[int] = set()

    def run(self, index: int, token: object) -> tuple[int, object]:
        # The caller's context came along, and a change made here goes back.
        assert caller_index.get() == index, "ran in another caller's context"
        worker_answer.set(index)
        with self._lock:
            self.order.append(index)
            self.threads.add(threading.get_ident())
        return index, token


caller_index: contextvars.ContextVar[int] = contextvars.ContextVar("caller_index")
worker_answer: contextvars.ContextVar[int] = contextvars.ContextVar("worker_answer")


async def one_call(
    call: Callable[[int, object], Awaitable[tuple[int, object]]],
    index: int,
    token: object,
) -> tuple[int, object]:
    caller_index.set(index)
    result = await call(index, token)
    if worker_answer.get(None) != index:
        raise AssertionError(f"call {index} got another call's context back")
    return result


async def many_concurrent_calls(
    non_sensitive: CallLog, sensitive: CallLog, in_context: bool = False
) -> tuple[list[tuple[int, object]], list[object]]:
    tokens = [object() for _ in range(NON_SENSITIVE_CALLS + SENSITIVE_CALLS)]
    free = sync_to_async(non_sensitive.run, thread_sensitive=False)
    pinned = sync_to_async(sensitive.run, thread_sensitive=True)
    # Interleave the two kinds so they compete for the loop at the same time.
    calls: list[Awaitable[tuple[int, object]]] = []
    for index, token in enumerate(tokens):
        call = pinned if index % 11 == 10 else free
        calls.append(one_call(call, index, token))
    if in_context:
        async with ThreadSensitiveContext():
            return await asyncio.gather(*calls), tokens
    return await asyncio.gather(*calls), tokens


def check_many_concurrent_calls(
    results: list[tuple[int, object]],
    tokens: list[object],
    non_sensitive: CallLog,
    sensitive: CallLog,
) -> None:
    for index, (got_index, got_token) in enumerate(results):
        assert got_index == index
        assert got_token is tokens[index], f"call {index} got another call's result"
    pinned_indices = [i for i in range(len(tokens)) if i % 11 == 10]
    free_indices = [i for i in range(len(tokens)) if i % 11 != 10]
    assert len(pinned_indices) == SENSITIVE_CALLS
    assert len(free_indices) == NON_SENSITIVE_CALLS
    # Every call ran exactly once; the thread-sensitive ones one after another,
    # in the order they were made, on a single thread.
    assert sorted(non_sensitive.order) == free_indices
    assert sensitive.order == pinned_indices
    assert len(sensitive.threads) == 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("in_context", [False, True], ids=["shared", "in context"])
def test_concurrent_calls_from_one_loop_each_reach_their_caller(
    in_context: bool, resources: Any, figures: Any
) -> None:
    # The first thread-sensitive call starts the shared worker that outlives it.
    asyncio.run(sync_to_async(echo)(0))
    resources.rebase()

    non_sensitive, sensitive = CallLog(), CallLog()
    results, tokens = asyncio.run(
        many_concurrent_calls(non_sensitive, sensitive, in_context)
    )
    check_many_concurrent_calls(results, tokens, non_sensitive, sensitive)
    resources.assert_back_to_baseline()
    figures.record(
        "load: one loop" + (", in a ThreadSensitiveContext" if in_context else ""),
        non_sensitive_calls=len(non_sensitive.order),
        sensitive_calls=len(sensitive.order),
        non_sensitive_threads=len(non_sensitive.threads),
    )


@pytest.mark.timeout(90)
def test_concurrent_calls_under_async_to_sync_keep_sensitive_ones_on_caller() -> None:
    non_sensitive, sensitive = CallLog(), CallLog()
    results, tokens = async_to_sync(many_concurrent_calls)(non_sensitive, sensitive)
    check_many_concurrent_calls(results, tokens, non_sensitive, sensitive)
    # Under async_to_sync, thread-sensitive work runs on the blocked caller.
    assert sensitive.threads == {threading.get_ident()}


class SyncThreadLoad:
    """Sync threads making async_to_sync calls, some of which come back to sync."""

    def __init__(self, threads: int, calls_per_thread: int) -> None:
        self.threads = threads
        self.calls_per_thread = calls_per_thread
        self.callbacks = 0
        self.new_loops = 0
        self._lock = threading.Lock()

    async def answer(self, worker: int, call: int) -> tuple[int, int, int]:
        if call % 5 == 0:
            # Back into sync: thread-sensitive, so onto the waiting worker.
            ident = await sync_to_async(self.sync_answer)()
            with self._lock:
                self.callbacks += 1
            return worker, call, ident
        await asyncio.sleep(0)
        return worker, call, 0

    def sync_answer(self) -> int:
        return threading.get_ident()

    def worker(self, worker: int) -> list[tuple[int, int, int]]:
        results = []
        normal = async_to_sync(self.answer)
        isolated = async_to_sync(self.answer, force_new_loop=True)
        for call in range(self.calls_per_thread):
            if call % 50 == 7:
                results.append(isolated(worker, call))
                with self._lock:
                    self.new_loops += 1
            else:
                results.append(normal(worker, call))
        return results

    async def run(self) -> None:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="stress-sync") as pool:
            work = sync_to_async(self.worker, thread_sensitive=False, executor=pool)
            everything = await asyncio.gather(*(work(w) for w in range(self.threads)))
        for worker, results in enumerate(everything):
            assert [r[:2] for r in results] == [
                (worker, call) for call in range(self.calls_per_thread)
            ]
            idents = {r[2] for r in results if r[1] % 5 == 0}
            # Each callback ran on the worker thread that was waiting for it.
            assert len(idents) == 1
            assert 0 not in idents


@pytest.mark.timeout(120)
def test_sync_threads_calling_async_return_resources_to_baseline(
    resources: Any, figures: Any
) -> None:
    # Warm up with the same shape, so lazily created pools exist in the baseline.
    asyncio.run(SyncThreadLoad(SYNC_THREADS, 8).run())
    resources.rebase()

    load = SyncThreadLoad(SYNC_THREADS, CALLS_PER_THREAD)
    asyncio.run(load.run())
    # A loop thread parked for reuse per sync thread at most, nothing else.
    after = resources.assert_back_to_baseline(parked_limit=SYNC_THREADS)

    assert load.callbacks == SYNC_THREADS * CALLS_PER_THREAD // 5
    figures.record(
        "load: sync threads",
        threads=SYNC_THREADS,
        async_to_sync_calls=SYNC_THREADS * CALLS_PER_THREAD,
        sync_to_async_callbacks=load.callbacks,
        fresh_loop_calls=load.new_loops,
        threads_after=len(after.threads),
        parked_loop_threads_after=after.parked,
        fds_after=after.fds,
        open_loops_after=after.loops,
    )


def executor_map_sizes() -> dict[str, int]:
    return {
        "SyncToAsync.context_to_thread_executor": len(
            SyncToAsync.context_to_thread_executor
        ),
        "AsyncToSync.loop_thread_executors": len(AsyncToSync.loop_thread_executors),
        "AsyncToSync.context_to_thread_executor": len(
            AsyncToSync.context_to_thread_executor
        ),
    }


def single_thread_round_trip(value: int) -> int:
    # Populates AsyncToSync.context_to_thread_executor for the block's length.
    with AsyncSingleThreadContext():
        first = async_to_sync(async_echo, force_new_loop=True)(value)
        return async_to_sync(async_echo, force_new_loop=True)(first)


def fresh_loop_round_trip(value: int) -> int:
    # Populates AsyncToSync.loop_thread_executors for the call's length.
    return async_to_sync(async_echo, force_new_loop=True)(value)


async def context_round_trip(value: int) -> int:
    # Populates SyncToAsync.context_to_thread_executor for the block's length.
    async with ThreadSensitiveContext():
        return await sync_to_async(echo)(value)


async def crossings(total: int, on_batch: Callable[[int], None]) -> int:
    free = sync_to_async(echo, thread_sensitive=False)
    pinned = sync_to_async(echo)
    isolated = sync_to_async(single_thread_round_trip, thread_sensitive=False)
    fresh_loop = sync_to_async(fresh_loop_round_trip, thread_sensitive=False)
    crossed = 0
    batch_number = 0
    while crossed < total:
        calls: list[Awaitable[int]] = [free(i) for i in range(CROSSING_BATCH // 2)]
        calls += [pinned(i) for i in range(CROSSING_BATCH // 2 - 3)]
        if batch_number % 10 == 0:
            # Costly crossings through the maps keyed by context or loop: a
            # sync_to_async with two nested async_to_sync, one with one, and
            # one sync_to_async in a fresh ThreadSensitiveContext.
            calls += [isolated(-1), fresh_loop(-2), context_round_trip(-3)]
            crossed += 3
        else:
            calls += [free(-1), pinned(-2), free(-3)]
        results = await asyncio.gather(*calls)
        assert results[: CROSSING_BATCH // 2] == list(range(CROSSING_BATCH // 2))
        assert results[-3:] == [-1, -2, -3]
        crossed += CROSSING_BATCH
        batch_number += 1
        on_batch(crossed)
    return crossed


@pytest.mark.timeout(180)
def test_crossings_do_not_grow_memory_or_executor_maps(
    resources: Any, figures: Any
) -> None:
    warm_up = CROSSINGS // 20
    marks: dict[str, int] = {}
    # Only deviations are kept: the check must not grow memory itself.
    map_growth: list[tuple[int, dict[str, int]]] = []

    def on_batch(crossed: int) -> None:
        sizes = executor_map_sizes()
        if sizes != maps_before and len(map_growth) < 10:
            map_growth.append((crossed, sizes))
        if crossed >= warm_up and "baseline" not in marks:
            gc.collect()
            marks["baseline"] = tracemalloc.get_traced_memory()[0]
            marks["baseline_at"] = crossed

    asyncio.run(crossings(CROSSING_BATCH * 10, lambda crossed: None))
    resources.rebase()
    maps_before = executor_map_sizes()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        crossed = asyncio.run(crossings(CROSSINGS, on_batch))
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started

    growth = current - marks["baseline"]
    figures.record(
        "load: crossings",
        crossings=crossed,
        traced_growth_bytes=growth,
        traced_peak_bytes=peak,
        seconds_under_tracemalloc=elapsed,
    )
    assert growth < CROSSING_GROWTH_LIMIT, (
        f"memory grew {growth} bytes over {crossed - marks['baseline_at']} crossings"
    )
    assert map_growth == [], f"executor maps grew from {maps_before}"
    resources.assert_back_to_baseline()
