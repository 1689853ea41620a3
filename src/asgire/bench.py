"""Measure what sync/async crossings and ``Local`` access cost on this machine.

``python -m asgire bench`` runs a quick subset (about ten seconds) and prints
a table, or JSON with ``--json``; with ``--compare`` it measures side by side
with upstream asgiref (see ``asgire.sidebyside``). The same file is the worker
of both sides there and in ``benchmarks/compare.py``: it uses only the public
``asgiref`` API and the standard library, and imports ``asgire`` only inside
functions, where its absence is allowed for, so it can be run by path with any
interpreter that has some ``asgiref`` installed::

    python -I path/to/bench.py --json --quiet --seconds 1 --only s2a_sensitive

Every timed workload reports seconds per operation (the median over several
batches, after warm-up); the memory workload reports peak bytes traced.

Exit codes: 0 when every selected workload ran, 1 when one of them raised
(the others are still measured and reported), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import os
import platform
import queue
import statistics
import sys
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO

import asgiref
from asgiref.local import Local
from asgiref.sync import AsyncSingleThreadContext, async_to_sync, sync_to_async

#: Version of the JSON document printed by ``--json``.
SCHEMA_VERSION = 1
#: Pending calls held at once by the memory workload.
PENDING_CALLS = 10_000
#: Roughly what the default ``bench`` command should take, in seconds.
QUICK_RUN_SECONDS = 10.0
#: The upstream asgiref release ``--compare`` measures against.
UPSTREAM_VERSION = "3.13.0"

_clock = time.perf_counter


@dataclass(frozen=True)
class Workload:
    """One measurable operation.

    ``run(units)`` performs ``units * ops_per_unit`` operations and returns
    the seconds they took (setup excluded) for a ``"time"`` workload, or the
    peak bytes traced for a ``"memory"`` workload.
    """

    name: str
    summary: str
    run: Callable[[int], float]
    ops_per_unit: int = 1
    kind: Literal["time", "memory"] = "time"
    #: Part of the default ``python -m asgire bench`` selection.
    quick: bool = True
    #: For a crossing, the bare hop of the same shape it is compared with
    #: (the table's "x floor" column).
    floor: str | None = None
    #: Whether it hands work to another thread; the table shows no context
    #: switches for one that does not, where any counted are other threads'.
    hops: bool = True


def _work() -> int:
    return 1


async def _async_work() -> int:
    return 1


def _run_timed_in_loop(body: Callable[[int], Any], units: int) -> float:
    """Time ``await body(units)`` inside a fresh event loop, loop setup excluded."""

    async def timed() -> float:
        start = _clock()
        await body(units)
        return _clock() - start

    return asyncio.run(timed())


def _bare_hop(units: int) -> float:
    # The floor any thread hop pays: hand a callable to a long-lived worker
    # through a queue and get the result back with call_soon_threadsafe.
    jobs: queue.SimpleQueue[tuple[Callable[[], int], asyncio.Future[int]] | None]
    jobs = queue.SimpleQueue()

    def serve(loop: asyncio.AbstractEventLoop) -> None:
        while (job := jobs.get()) is not None:
            func, future = job
            loop.call_soon_threadsafe(future.set_result, func())

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        worker = threading.Thread(
            target=serve, args=(loop,), name="bench-bare-hop", daemon=True
        )
        worker.start()
        try:
            start = _clock()
            for _ in range(units):
                future = loop.create_future()
                jobs.put((_work, future))
                await future
            return _clock() - start
        finally:
            jobs.put(None)
            worker.join()

    return asyncio.run(timed())


def _bare_hop_back(units: int) -> float:
    # The floor for async_to_sync back to a running loop: a sync worker thread
    # hands a callable to the loop with call_soon_threadsafe and waits on a
    # queue for the result.
    results: queue.SimpleQueue[int] = queue.SimpleQueue()

    def post(loop: asyncio.AbstractEventLoop) -> float:
        start = _clock()
        for _ in range(units):
            loop.call_soon_threadsafe(lambda: results.put(_work()))
            results.get()
        return _clock() - start

    async def main() -> float:
        return await asyncio.to_thread(post, asyncio.get_running_loop())

    return asyncio.run(main())


class _Resumable:
    """The least an awaitable can be for a task: it keeps the task's wake-up
    and calls it the moment the value arrives, where a Future would leave it
    for the loop's next pass."""

    __slots__ = ("_asyncio_future_blocking", "_loop", "_wakeup", "value")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asyncio_future_blocking = False
        self.value = 0

    def __await__(self) -> Generator[_Resumable, None, int]:
        self._asyncio_future_blocking = True
        yield self
        return self.value

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(self, callback: Any, *, context: Any = None) -> None:
        self._wakeup = (callback, context)

    def result(self) -> int:
        return self.value

    def resume(self, value: int) -> None:
        self.value = value
        callback, context = self._wakeup
        context.run(callback, self)


class _Doorbell:
    """Callbacks posted to a loop from other threads: a deque and, on Linux,
    an eventfd the loop reads (one write to post, one read to collect);
    elsewhere ``call_soon_threadsafe``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._posted: deque[tuple[Callable[[int], object], int]] = deque()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK) if _HAS_EVENTFD else -1
        if self._fd >= 0:
            loop.add_reader(self._fd, self._collect)

    def post(self, callback: Callable[[int], object], value: int) -> None:
        if self._fd < 0:
            self._loop.call_soon_threadsafe(callback, value)
            return
        self._posted.append((callback, value))
        os.eventfd_write(self._fd, 1)

    def _collect(self) -> None:
        os.eventfd_read(self._fd)
        posted = self._posted
        for _ in range(len(posted)):
            callback, value = posted.popleft()
            callback(value)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)


_HAS_EVENTFD = hasattr(os, "eventfd")


def _least_hop(units: int) -> float:
    # What a library doing nothing but the hop would cost: the cheapest
    # hand-over known both ways (a waiting worker, a doorbell back) and the
    # task resumed in the very callback that brings the result.
    jobs: queue.SimpleQueue[tuple[Callable[[], int], _Resumable] | None]
    jobs = queue.SimpleQueue()

    def serve(doorbell: _Doorbell) -> None:
        while (job := jobs.get()) is not None:
            func, waiter = job
            doorbell.post(waiter.resume, func())

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        doorbell = _Doorbell(loop)
        worker = threading.Thread(
            target=serve, args=(doorbell,), name="bench-least-hop", daemon=True
        )
        worker.start()
        try:
            start = _clock()
            for _ in range(units):
                waiter = _Resumable(loop)
                jobs.put((_work, waiter))
                await waiter
            return _clock() - start
        finally:
            jobs.put(None)
            worker.join()
            doorbell.close()

    return asyncio.run(timed())


def _least_hop_back(units: int) -> float:
    # What async_to_sync back to a running loop would cost if the library did
    # nothing but the hop: the sync thread rings the loop's doorbell, the
    # loop's callback runs the coroutine to its end in place and puts the
    # result on a queue the sync thread waits on.
    results: queue.SimpleQueue[int] = queue.SimpleQueue()

    def run_coroutine(_: int) -> None:
        coroutine = _async_work()
        try:
            coroutine.send(None)
        except StopIteration as done:
            results.put(done.value)

    def post(doorbell: _Doorbell) -> float:
        start = _clock()
        for _ in range(units):
            doorbell.post(run_coroutine, 0)
            results.get()
        return _clock() - start

    async def main() -> float:
        doorbell = _Doorbell(asyncio.get_running_loop())
        try:
            return await asyncio.to_thread(post, doorbell)
        finally:
            doorbell.close()

    return asyncio.run(main())


def _thread_ping_pong(units: int) -> float:
    # Two wake-ups and nothing else: one thread hands a token to another
    # through a queue and waits for it to come back, no event loop involved.
    there: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        while (token := there.get()) is not None:
            back.put(token)

    worker = threading.Thread(target=echo, name="bench-ping-pong", daemon=True)
    worker.start()
    try:
        start = _clock()
        for _ in range(units):
            there.put(1)
            back.get()
        return _clock() - start
    finally:
        there.put(None)
        worker.join()


def _time_awaits(call: Callable[[], Awaitable[object]], units: int) -> float:
    async def body(n: int) -> None:
        for _ in range(n):
            await call()

    return _run_timed_in_loop(body, units)


def _s2a_sensitive(units: int) -> float:
    return _time_awaits(sync_to_async(_work), units)


def _s2a_non_sensitive(units: int) -> float:
    return _time_awaits(sync_to_async(_work, thread_sensitive=False), units)


def _s2a_inline(units: int) -> float:
    async def body(n: int) -> None:
        for _ in range(n):
            await sync_to_async(_work)()

    return _run_timed_in_loop(body, units)


_GATHER_WIDTH = 100


def _s2a_gather(units: int) -> float:
    call = sync_to_async(_work, thread_sensitive=False)

    async def body(n: int) -> None:
        for _ in range(n):
            await asyncio.gather(*[call() for _ in range(_GATHER_WIDTH)])

    return _run_timed_in_loop(body, units)


def _time_calls(call: Callable[[], object], units: int) -> float:
    start = _clock()
    for _ in range(units):
        call()
    return _clock() - start


def _a2s_from_thread(units: int) -> float:
    return _time_calls(async_to_sync(_async_work), units)


def _a2s_in_single_thread_context(units: int) -> float:
    call = async_to_sync(_async_work)
    with AsyncSingleThreadContext():
        return _time_calls(call, units)


def _a2s_to_outer_loop(units: int) -> float:
    async def main() -> float:
        return await sync_to_async(_a2s_from_thread)(units)

    return asyncio.run(main())


def _django_sandwich(units: int) -> float:
    # A sync view calling async code that reaches back into thread-sensitive
    # sync code (an ORM query), as Django's adapters do.
    query = sync_to_async(_work)

    async def view() -> int:
        return await query()

    return _time_calls(async_to_sync(view), units)


# Local accesses are cheap enough that loop overhead would show, so each
# unit performs ten of them. Reads land in a variable that is checked at the
# end, which also proves the Local returned what was stored.
_LOCAL_UNROLL = 10


def _read_repeatedly(local: Local, units: int) -> float:
    local.value = expected = object()
    value = None
    start = _clock()
    for _ in range(units):
        value = local.value
        value = local.value
        value = local.value
        value = local.value
        value = local.value
        value = local.value
        value = local.value
        value = local.value
        value = local.value
        value = local.value
    elapsed = _clock() - start
    if value is not expected:
        raise AssertionError("Local returned a value that was not stored")
    return elapsed


def _local_get(units: int) -> float:
    return _read_repeatedly(Local(), units)


def _local_get_thread_critical(units: int) -> float:
    return _read_repeatedly(Local(thread_critical=True), units)


def _local_get_in_loop(units: int) -> float:
    async def main() -> float:
        return _read_repeatedly(Local(), units)

    return asyncio.run(main())


def _local_set(units: int) -> float:
    local = Local()
    start = _clock()
    for i in range(units):
        local.value = i
        local.value = i
        local.value = i
        local.value = i
        local.value = i
        local.value = i
        local.value = i
        local.value = i
        local.value = i
        local.value = i
    elapsed = _clock() - start
    if local.value != units - 1:
        raise AssertionError("Local did not keep the last value stored")
    return elapsed


def _build_s2a(units: int) -> float:
    start = _clock()
    for _ in range(units):
        sync_to_async(_work)
    return _clock() - start


def _build_a2s(units: int) -> float:
    start = _clock()
    for _ in range(units):
        async_to_sync(_async_work)
    return _clock() - start


class _CountingExecutor(ThreadPoolExecutor):
    """Counts submissions so the memory workload knows every call is queued."""

    submitted = 0

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _pending_calls_peak(calls: int) -> float:
    release = threading.Event()
    executor = _CountingExecutor(max_workers=2, thread_name_prefix="bench-pending")
    call = sync_to_async(release.wait, thread_sensitive=False, executor=executor)

    async def hold_pending(count: int) -> int:
        executor.submitted = 0
        release.clear()
        tasks: list[asyncio.Future[bool]] = []
        # Measure from here, whether or not someone else started tracing.
        tracing_already = tracemalloc.is_tracing()
        if not tracing_already:
            tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            tasks = [asyncio.ensure_future(call()) for _ in range(count)]
            # Each task needs one step to reach the executor; the extra steps
            # allow for implementations that await something first.
            for _ in range(20):
                await asyncio.sleep(0)
                if executor.submitted >= count:
                    break
            else:
                raise RuntimeError(
                    f"only {executor.submitted} of {count} calls reached the executor"
                )
            return tracemalloc.get_traced_memory()[1] - baseline
        finally:
            if not tracing_already:
                tracemalloc.stop()
            release.set()
            await asyncio.gather(*tasks)

    try:
        # Warm up lazy imports, caches and the worker threads first.
        asyncio.run(hold_pending(min(calls, 200)))
        return float(asyncio.run(hold_pending(calls)))
    finally:
        release.set()
        executor.shutdown(wait=True)


_ALL = [
    Workload("bare_hop", "floor: bare hop to a worker thread and back", _bare_hop),
    Workload(
        "bare_hop_back",
        "floor: bare hop from a sync thread to a running loop and back",
        _bare_hop_back,
    ),
    Workload(
        "least_hop",
        "floor: the cheapest hop to a worker thread and back",
        _least_hop,
        quick=False,
    ),
    Workload(
        "least_hop_back",
        "floor: the cheapest hop from a sync thread to a running loop and back",
        _least_hop_back,
        quick=False,
    ),
    Workload(
        "thread_ping_pong",
        "floor: two threads waking each other through queues, no event loop",
        _thread_ping_pong,
        quick=False,
    ),
    Workload(
        "s2a_sensitive",
        "sync_to_async, thread-sensitive, wrapper reused",
        _s2a_sensitive,
        floor="bare_hop",
    ),
    Workload(
        "s2a_non_sensitive",
        "sync_to_async, thread_sensitive=False, wrapper reused",
        _s2a_non_sensitive,
        floor="bare_hop",
    ),
    Workload(
        "s2a_inline",
        "sync_to_async(f)() with the wrapper built on every call",
        _s2a_inline,
        floor="bare_hop",
    ),
    Workload(
        "s2a_gather_100",
        "one of 100 concurrent thread_sensitive=False calls, gathered",
        _s2a_gather,
        ops_per_unit=_GATHER_WIDTH,
        # No floor: the calls overlap on the executor's threads, so one costs
        # less than a lone hop, and a multiple of it would mislead.
    ),
    Workload(
        "a2s_from_thread",
        "async_to_sync from a plain sync thread",
        _a2s_from_thread,
        floor="bare_hop_back",
    ),
    Workload(
        "a2s_single_thread_context",
        "async_to_sync from a sync thread inside AsyncSingleThreadContext",
        _a2s_in_single_thread_context,
        floor="bare_hop_back",
    ),
    Workload(
        "a2s_to_outer_loop",
        "async_to_sync inside sync_to_async, back to the outer loop",
        _a2s_to_outer_loop,
        floor="bare_hop_back",
    ),
    Workload(
        "django_sandwich",
        "sync -> async_to_sync -> await thread-sensitive sync_to_async",
        _django_sandwich,
        floor="bare_hop_back",
    ),
    Workload(
        "local_get",
        "Local attribute read in sync code",
        _local_get,
        ops_per_unit=_LOCAL_UNROLL,
        hops=False,
    ),
    Workload(
        "local_set",
        "Local attribute write in sync code",
        _local_set,
        ops_per_unit=_LOCAL_UNROLL,
        hops=False,
    ),
    Workload(
        "local_get_in_loop",
        "Local attribute read inside a running event loop",
        _local_get_in_loop,
        ops_per_unit=_LOCAL_UNROLL,
        hops=False,
    ),
    Workload(
        "local_get_thread_critical",
        "Local(thread_critical=True) attribute read",
        _local_get_thread_critical,
        ops_per_unit=_LOCAL_UNROLL,
        hops=False,
    ),
    Workload("build_s2a", "building a sync_to_async wrapper", _build_s2a, hops=False),
    Workload(
        "build_a2s",
        "building an async_to_sync wrapper",
        _build_a2s,
        quick=False,
        hops=False,
    ),
    Workload(
        "pending_10k_memory",
        f"peak memory of {PENDING_CALLS:,} pending thread_sensitive=False calls",
        _pending_calls_peak,
        kind="memory",
        quick=False,
    ),
]

#: Every workload by name, in reporting order.
WORKLOADS: dict[str, Workload] = {w.name: w for w in _ALL}


def calibrate(workload: Workload, batch_seconds: float, deadline: float) -> int:
    """Find how many units make a batch of about ``batch_seconds``.

    The calibration batches also warm up threads, caches and lazy imports,
    which is why they are never counted. Stops early at ``deadline``.
    """
    if workload.kind == "memory":
        return PENDING_CALLS
    units = 1
    while True:
        elapsed = workload.run(units)
        if elapsed >= batch_seconds or _clock() >= deadline:
            return units
        growth = batch_seconds / elapsed * 1.2 if elapsed > 0 else 100.0
        units = max(units + 1, math.ceil(units * min(growth, 100.0)))


if sys.platform == "win32":  # pragma: no cover - measured on POSIX

    def _voluntary_switches() -> int | None:
        return None

else:
    import resource

    def _voluntary_switches() -> int | None:
        """This process's voluntary context switches so far: a thread that
        blocks (to wait for another) counts one."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


class _Batch(NamedTuple):
    """What one batch measured."""

    #: Seconds per operation; peak bytes for the memory workload.
    value: float
    #: Voluntary context switches per operation: a thread that blocks to wait
    #: for another counts one, so a round trip to another thread and back
    #: takes two. None for memory, or where the system does not count them.
    switches: float | None
    #: CPU seconds per operation, of every thread of the process (user and
    #: system time): unlike the clock, it leaves out time spent waiting to be
    #: scheduled. None for memory.
    cpu: float | None


def _batch(workload: Workload, units: int) -> _Batch:
    """Run one batch of ``units`` units of ``workload``."""
    if workload.kind == "memory":
        return _Batch(workload.run(units), None, None)
    before = _voluntary_switches()
    cpu_before = time.process_time()
    value = workload.run(units)
    cpu = time.process_time() - cpu_before
    after = _voluntary_switches()
    ops = units * workload.ops_per_unit
    switches = None if before is None or after is None else (after - before) / ops
    return _Batch(value / ops, switches, cpu / ops)


def measure(workload: Workload, seconds: float) -> dict[str, Any]:
    """Measure one workload within about ``seconds`` of wall time.

    Returns ``{"unit": "s/op", "value": ..., "ops": ..., "batches": ...,
    "switches_per_op": ..., "cpu_per_op": ...}`` for a timed workload
    (medians over the batches; switches None where they are not counted),
    or ``{"unit": "bytes", "value": ..., "calls": ...}`` for memory.
    """
    if workload.kind == "memory":
        peak = _batch(workload, PENDING_CALLS).value
        return {"unit": "bytes", "value": peak, "calls": PENDING_CALLS}
    deadline = _clock() + seconds
    units = calibrate(workload, seconds / 10, deadline)
    batches: list[_Batch] = []
    while len(batches) < 3 or (_clock() < deadline and len(batches) < 100):
        batches.append(_batch(workload, units))
    return {
        "unit": "s/op",
        "value": statistics.median(batch.value for batch in batches),
        "ops": units * workload.ops_per_unit * len(batches),
        "batches": len(batches),
        "switches_per_op": _median_or_none([batch.switches for batch in batches]),
        "cpu_per_op": _median_or_none([batch.cpu for batch in batches]),
    }


def _median_or_none(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def serve(requests: TextIO, replies: TextIO) -> None:
    """Answer measurement requests, one JSON object per line, until end of input.

    This lets a driver alternate single batches between two processes, so
    both implementations are measured under the same machine load. The first
    line written describes the environment. Requests and their replies::

        {"op": "calibrate", "workload": NAME, "seconds": S} -> {"units": N}
        {"op": "run", "workload": NAME, "units": N}
            -> {"value": X, "switches": Y, "cpu": Z}

    ``X`` is the batch's seconds per operation for a timed workload and the
    peak bytes for the memory workload; ``Y`` its voluntary context switches
    per operation and ``Z`` its CPU seconds per operation (see ``_Batch``),
    each null where not measured. A failure is replied as ``{"error": "..."}``.
    """

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"environment": environment()})
    for line in requests:
        reply(_answer(line))


def _answer(line: str) -> dict[str, Any]:
    try:
        request = json.loads(line)
        workload = WORKLOADS[request["workload"]]
        if request["op"] == "calibrate":
            seconds = float(request["seconds"])
            return {"units": calibrate(workload, seconds, _clock() + 20 * seconds)}
        batch = _batch(workload, int(request["units"]))
        return {"value": batch.value, "switches": batch.switches, "cpu": batch.cpu}
    except Exception as exc:  # the driver reports it with the workload's name
        return {"error": f"{type(exc).__name__}: {exc}"}


def _provider() -> tuple[str, str, str]:
    """The distribution behind ``import asgiref``, its version, and a caveat.

    With asgire installed, ``python -m asgire info``'s own check decides (so
    upstream files written over asgire's are named as what runs). Run by path
    where only upstream is installed, it can only be upstream.
    """
    try:
        from asgire import info
    except ImportError:
        try:
            return "asgiref", importlib.metadata.version("asgiref"), ""
        except importlib.metadata.PackageNotFoundError:
            return "asgiref", "unknown", ""
    found = info.diagnose(info.find_asgiref(), importlib.metadata.distributions())
    return info.import_provider(found)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict[str, Any]:
    """Describe the interpreter, the asgiref implementation and the machine."""
    provider, provider_version, caveat = _provider()
    return {
        "asgiref_version": asgiref.__version__,
        "provider": provider,
        "provider_version": provider_version,
        "provider_caveat": caveat,
        "module": str(Path(asgiref.__file__).parent),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        # As asgire.info.gil_enabled: this module runs alone, over upstream's
        # asgiref too, importing nothing of asgire's at the top.
        # cpython-private: _is_gil_enabled
        "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "os": f"{platform.system()} {platform.machine()}",
    }


def measure_all(
    names: Sequence[str],
    seconds: float,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Measure the named workloads and return the JSON document ``--json`` prints.

    A workload that raises is reported as ``{"error": "..."}`` and the rest
    still run.
    """
    results: dict[str, Any] = {}
    for index, name in enumerate(names):
        if progress is not None:
            progress(index, len(names), name)
        try:
            results[name] = measure(WORKLOADS[name], seconds)
        except Exception as exc:  # reported, so one broken path hides nothing else
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    if progress is not None:
        progress(len(names), len(names), "")
    return {
        "schema": SCHEMA_VERSION,
        "environment": environment(),
        "seconds_per_workload": seconds,
        "results": results,
    }


def _progress_printer(stream: TextIO) -> Callable[[int, int, str], None]:
    interactive = stream.isatty()

    def show(done: int, total: int, name: str) -> None:
        if interactive:
            line = f"measuring [{done}/{total}] {name}" if name else ""
            stream.write(f"\r{line:<60}\r" if not name else f"\r{line:<60}")
        elif name:
            stream.write(f"measuring [{done + 1}/{total}] {name}\n")
        stream.flush()

    return show


def describe_machine(env: dict[str, Any]) -> str:
    """The interpreter and processor of an ``environment()``, in one line."""
    return (
        f"{env['python_implementation']} {env['python']}; {env['cpu']}, "
        f"{env['cores']} cores"
    )


def layout(rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a plain-text table: the first column aligned left, the
    last left as free text, the figures between aligned right. A column
    blank in every row is left out."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    lines = []
    for label, *figures, text in rows:
        cells = [label.ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(figures, widths[1:-1], strict=True)
        ]
        cells.append(text)
        lines.append("  ".join(cell for cell in cells if cell).rstrip())
    return lines


def describe_provider(env: dict[str, Any]) -> str:
    """Who ``environment()`` found behind ``import asgiref``, for a reader."""
    name = "upstream asgiref" if env["provider"] == "asgiref" else env["provider"]
    caveat = env.get("provider_caveat")
    return f"{name} {env['provider_version']}" + (f" ({caveat})" if caveat else "")


def format_time(seconds: float) -> str:
    """Render a duration with a unit suited to its size, e.g. ``12.3 us``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(count: float) -> str:
    """Render a byte count in binary units, e.g. ``3.2 MiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} B"


def format_table(document: dict[str, Any]) -> str:
    """Render a ``measure_all`` document as a plain-text table."""
    env = document["environment"]
    results: dict[str, Any] = document["results"]
    rows: list[tuple[str, str, str, str, str, str]] = []
    for name, result in results.items():
        workload = WORKLOADS.get(name)
        summary = workload.summary if workload else ""
        if "error" in result:
            rows.append((name, "error", "", "", "", result["error"]))
        elif result["unit"] == "bytes":
            rows.append((name, format_bytes(result["value"]), "", "", "", summary))
        else:
            value = result["value"]
            vs_floor = switches = ""
            if workload is not None and workload.floor is not None:
                floor = results.get(workload.floor, {}).get("value")
                if floor:
                    vs_floor = f"{value / floor:.2f}"
            hops = workload is None or workload.hops
            if hops and result.get("switches_per_op") is not None:
                switches = f"{result['switches_per_op']:.2f}"
            rate = f"{1 / value:,.0f}" if value > 0 else ""
            rows.append((name, format_time(value), rate, vs_floor, switches, summary))
    # A column nothing was measured for (no floors, or no switch counts on
    # Windows) is left out, with its legend.
    any_floor = any(row[3] for row in rows)
    any_switches = any(row[4] for row in rows)
    rows.insert(
        0,
        (
            "workload",
            "per op",
            "ops/s",
            "x floor" if any_floor else "",
            "switches" if any_switches else "",
            "what",
        ),
    )
    lines = [
        f"asgiref {env['asgiref_version']} provided by {describe_provider(env)}; "
        f"{describe_machine(env)}",
        "",
        *layout(rows),
        "",
    ]
    if any_floor:
        lines.append(
            "x floor: time per op divided by that of the bare hop of the same"
            " shape (bare_hop, or bare_hop_back for async_to_sync)."
        )
    if any_switches:
        lines.append(
            "switches: voluntary context switches per op (thread wake-ups; a"
            " round trip to another thread and back takes two); blank where"
            " the workload stays in one thread."
        )
    if "s2a_gather_100" in results:
        lines.append(
            "s2a_gather_100: the time per call of 100 made at once; their hops"
            " overlap on the executor's threads, so a call costs less than a"
            " lone bare hop."
        )
    lines.append(
        "Against upstream asgiref in the same run: python -m asgire bench --compare"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` command's options to ``parser``."""
    parser.add_argument(
        "--json", action="store_true", help="print a JSON document instead of a table"
    )
    parser.add_argument(
        "--seconds",
        type=_positive_float,
        metavar="S",
        help="time budget per workload (default: about "
        f"{QUICK_RUN_SECONDS:g} s in total for the selection)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=list(WORKLOADS),
        metavar="NAME",
        help="run only these workloads (see --list); may be repeated",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="run every workload, including the slow ones left out by default",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the workloads and exit"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress indicator on stderr"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help=f"measure side by side with upstream asgiref {UPSTREAM_VERSION}, "
        "built in a throwaway environment (uv if on PATH, else venv and pip), "
        "and print the ratio asgire / upstream per workload",
    )
    parser.add_argument(
        "--upstream-from",
        type=Path,
        metavar="PATH",
        help="with --compare: install upstream from this wheel, or from the "
        "wheels in this folder, instead of the package index",
    )
    parser.add_argument(
        "--installer",
        choices=["uv", "pip"],
        help="with --compare: what builds upstream's environment (default: "
        "uv if on PATH, else venv and pip)",
    )
    # The line protocol --compare and benchmarks/compare.py drive; see serve().
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def selected_workloads(args: argparse.Namespace) -> list[str]:
    """The workload names ``args`` selects, in reporting order."""
    if args.only:
        return [name for name in WORKLOADS if name in args.only]
    if args.all:
        return list(WORKLOADS)
    return [name for name, workload in WORKLOADS.items() if workload.quick]


def run(args: argparse.Namespace) -> int:
    """Run the ``bench`` command; returns the process exit code."""
    if args.serve:
        serve(sys.stdin, sys.stdout)
        return 0
    if args.list:
        if args.json:
            listing = {
                name: {
                    "summary": w.summary,
                    "kind": w.kind,
                    "ops_per_unit": w.ops_per_unit,
                    "quick": w.quick,
                }
                for name, w in WORKLOADS.items()
            }
            print(json.dumps(listing, indent=2))
        else:
            width = max(map(len, WORKLOADS))
            for name, w in WORKLOADS.items():
                marker = " " if w.quick else "*"
                print(f"{name:<{width}} {marker} {w.summary}")
            print("\n* not run by default; use --all or --only")
        return 0
    names = selected_workloads(args)
    seconds = args.seconds or max(0.2, QUICK_RUN_SECONDS / len(names))
    if args.compare:
        # asgire's own command, never reached by a worker under upstream.
        from asgire import sidebyside

        return sidebyside.run(args, names, seconds)
    if args.upstream_from or args.installer:
        print(
            "bench: --upstream-from and --installer go with --compare", file=sys.stderr
        )
        return 2
    progress = None if args.quiet else _progress_printer(sys.stderr)
    document = measure_all(names, seconds, progress)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(format_table(document))
    failed = any("error" in result for result in document["results"].values())
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Measure sync/async crossings and Local access of the "
        "installed asgiref.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
