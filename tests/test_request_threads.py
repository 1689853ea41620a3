"""``asgire.request_threads``: reusable threads for ``ThreadSensitiveContext``."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from asgiref.local import Local
from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async

pytest.importorskip("asgire")

from asgire import request_threads
from asgiref._bridge import request_threads as _request_threads  # after the skip

pytestmark = pytest.mark.asgire_only


def request_thread_names() -> list[str]:
    return sorted(
        t.name
        for t in threading.enumerate()
        if t.name.startswith(_request_threads.THREAD_NAME)
    )


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test starts with an empty cache and zeroed counts, switched off;
    at the end the switch goes off again and every request thread must end."""
    assert not request_thread_names()
    _request_threads._cache._reset()
    yield
    request_threads.disable()
    wait_for(lambda: not request_thread_names())
    _request_threads.configure(enabled=False, max_threads=None, idle_timeout=60.0)
    _request_threads._cache._reset()


@pytest.fixture
def switch() -> Callable[..., None]:
    """``switch(**settings)`` is ``request_threads.enable(**settings)``."""
    return request_threads.enable


def current_thread() -> threading.Thread:
    return threading.current_thread()


here = sync_to_async(current_thread)


async def in_context(*steps: Callable[[], Any]) -> list[Any]:
    """One request: a task of its own (as a server runs each request) in a
    context, running each step as a thread-sensitive call."""

    async def request() -> list[Any]:
        async with ThreadSensitiveContext():
            return [await sync_to_async(step)() for step in steps]

    return await asyncio.ensure_future(request())


# -- The switch ---------------------------------------------------------------------


async def test_off_by_default_each_context_gets_a_fresh_thread() -> None:
    assert request_threads.status() == request_threads.Status(
        enabled=False,
        max_threads=None,
        idle_timeout=60.0,
        busy=0,
        idle=0,
        waiting=0,
        started=0,
        retired=0,
    )
    first = (await in_context(current_thread))[0]
    second = (await in_context(current_thread))[0]
    assert first is not second
    assert not first.is_alive()
    assert not first.name.startswith("asgire-")
    assert request_threads.status().started == 0


async def test_on_sequential_contexts_reuse_one_thread(
    switch: Callable[..., None],
) -> None:
    switch()
    threads = [(await in_context(current_thread))[0] for _ in range(5)]
    assert len(set(threads)) == 1
    assert threads[0].name == "asgire-request-1_0"
    assert threads[0].is_alive()
    status = request_threads.status()
    assert (status.enabled, status.busy, status.idle, status.started) == (
        True,
        0,
        1,
        1,
    )


async def test_a_context_without_thread_sensitive_calls_takes_no_thread(
    switch: Callable[..., None],
) -> None:
    switch()
    async with ThreadSensitiveContext():
        await sync_to_async(current_thread, thread_sensitive=False)()
    assert request_threads.status().started == 0


async def test_nested_contexts_and_tasks_share_the_outer_contexts_thread(
    switch: Callable[..., None],
) -> None:
    switch()
    async with ThreadSensitiveContext():
        outer = await here()
        async with ThreadSensitiveContext():
            inner = await here()
        from_task = await asyncio.ensure_future(here())
        assert request_threads.status().busy == 1
    assert outer is inner is from_task
    assert request_threads.status().idle == 1


async def test_calls_outside_any_context_stay_on_the_single_thread(
    switch: Callable[..., None],
) -> None:
    switch()
    outside = await here()
    pool: Any = SyncToAsync.single_thread_executor
    assert outside in pool._threads
    assert request_threads.status().started == 0


async def test_a_context_with_its_own_executor_keeps_it(
    switch: Callable[..., None],
) -> None:
    switch()
    own = ThreadPoolExecutor(max_workers=1, thread_name_prefix="own")
    try:
        async with ThreadSensitiveContext(executor=own):
            thread = await here()
        assert thread.name.startswith("own")
        assert request_threads.status().started == 0
    finally:
        own.shutdown()


async def test_switching_off_retires_idle_threads_and_busy_ones_when_given_back(
    switch: Callable[..., None],
) -> None:
    switch()
    barrier = threading.Barrier(2, timeout=10)
    await asyncio.gather(*(in_context(barrier.wait) for _ in range(2)))
    async with ThreadSensitiveContext():
        busy = await here()
        (idle,) = {
            t
            for t in threading.enumerate()
            if t.name.startswith("asgire-request-")
            and t is not busy
            and not t.name.endswith("reaper")
        }
        request_threads.disable()
        idle.join(5)
        assert not idle.is_alive()
        assert busy.is_alive()
        assert await here() is busy
    busy.join(5)
    assert not busy.is_alive()
    fresh = (await in_context(current_thread))[0]
    assert not fresh.name.startswith("asgire-")
    wait_for(lambda: request_threads.status().retired == 2)
    status = request_threads.status()
    assert (status.busy, status.idle) == (0, 0)
    # The settings are kept for the next enable().
    assert (status.max_threads, status.idle_timeout) == (None, 60.0)


def test_settings_are_checked() -> None:
    with pytest.raises(TypeError, match=r"^max_threads must be an int or None, not"):
        request_threads.enable(max_threads=2.0)  # ty: ignore[invalid-argument-type]
    with pytest.raises(TypeError, match=r"^max_threads must be an int or None, not"):
        request_threads.enable(max_threads=True)
    with pytest.raises(ValueError, match=r"^max_threads must be at least 1, not 0$"):
        request_threads.enable(max_threads=0)
    with pytest.raises(TypeError, match=r"^idle_timeout must be a number, not '1'$"):
        request_threads.enable(idle_timeout="1")  # ty: ignore[invalid-argument-type]
    with pytest.raises(TypeError, match=r"^idle_timeout must be a number, not True$"):
        request_threads.enable(idle_timeout=True)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"^idle_timeout must be a positive"):
            request_threads.enable(idle_timeout=bad)
    assert not request_threads.status().enabled


# -- One context per thread ---------------------------------------------------------


async def test_concurrent_contexts_never_share_a_thread(
    switch: Callable[..., None],
) -> None:
    switch()
    count = 6
    barrier = threading.Barrier(count, timeout=10)

    def meet() -> threading.Thread:
        barrier.wait()  # every context is live at once
        return threading.current_thread()

    runs = await asyncio.gather(
        *(in_context(current_thread, meet, current_thread) for _ in range(count))
    )
    for first, met, last in runs:
        assert first is met is last
    assert len({run[0] for run in runs}) == count
    assert request_threads.status().idle == count


async def test_a_thread_goes_back_only_once_its_leftover_calls_have_run(
    switch: Callable[..., None],
) -> None:
    """A task the context started and did not wait for keeps the thread
    until its call is done: the context's exit waits for it, as upstream's
    does, and no other context can have the thread meanwhile."""
    switch()
    release = threading.Event()
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    def slow() -> threading.Thread:
        loop.call_soon_threadsafe(started.set)
        assert release.wait(10)
        return threading.current_thread()

    async def request() -> asyncio.Task[threading.Thread]:
        async with ThreadSensitiveContext():
            leftover = asyncio.ensure_future(sync_to_async(slow)())
            await started.wait()
        return leftover

    exiting = asyncio.ensure_future(request())
    await asyncio.sleep(0.05)
    assert not exiting.done()
    assert request_threads.status().busy == 1
    other = (await in_context(current_thread))[0]
    release.set()
    leftover = await exiting
    assert await leftover is not other
    assert request_threads.status().idle == 2


async def test_a_task_calling_after_its_context_exited_gets_a_fresh_thread(
    switch: Callable[..., None],
) -> None:
    switch()
    gate = asyncio.Event()

    async def late() -> threading.Thread:
        await gate.wait()
        return await here()

    async with ThreadSensitiveContext():
        inside = await here()
        task = asyncio.ensure_future(late())
    gate.set()
    after = await task
    assert after is not inside
    assert not after.name.startswith("asgire-")
    status = request_threads.status()
    assert (status.busy, status.idle, status.started) == (0, 1, 1)


async def test_a_cancelled_exit_still_gives_the_thread_back(
    switch: Callable[..., None],
) -> None:
    switch()
    loop = asyncio.get_running_loop()
    release = threading.Event()
    started = asyncio.Event()

    leftovers: list[asyncio.Future[None]] = []

    def work() -> None:
        loop.call_soon_threadsafe(started.set)
        assert release.wait(10)

    async def request() -> None:
        async with ThreadSensitiveContext():
            leftovers.append(asyncio.ensure_future(sync_to_async(work)()))
            await started.wait()

    task = asyncio.ensure_future(request())
    await started.wait()
    await asyncio.sleep(0.01)  # the exit waits for work() now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert request_threads.status().busy == 1
    release.set()
    await leftovers[0]
    wait_for(lambda: request_threads.status().idle == 1)
    assert request_threads.status().busy == 0


async def test_a_context_dropped_without_exiting_frees_its_thread(
    switch: Callable[..., None],
) -> None:
    """Its executor is only weakly held: when the context goes, so does the
    thread, and the count of threads in use."""
    switch(max_threads=1)
    context = ThreadSensitiveContext()
    token = SyncToAsync.thread_sensitive_context.set(context)
    context.token = token
    try:
        thread = await here()
    finally:
        SyncToAsync.thread_sensitive_context.reset(token)
    assert request_threads.status().busy == 1
    del context, token
    await asyncio.sleep(0)  # the loop lets go of the call's context
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    assert request_threads.status().busy == 0
    # max_threads=1: the next context is not kept waiting.
    assert (await in_context(current_thread))[0].name == "asgire-request-2_0"


# -- What a reused thread keeps, and what it doesn't ------------------------------

critical = Local(thread_critical=True)
shared = Local()
request_id: contextvars.ContextVar[int] = contextvars.ContextVar("request_id")


async def test_thread_critical_data_outlives_the_request_default_data_does_not(
    switch: Callable[..., None],
) -> None:
    def first() -> None:
        critical.connection = "kept"
        shared.user = "gone"
        request_id.set(1)

    def second() -> tuple[object, object, object]:
        return (
            getattr(critical, "connection", None),
            getattr(shared, "user", None),
            request_id.get(None),
        )

    await in_context(first)
    assert await in_context(second) == [(None, None, None)]  # switch off
    switch()
    await in_context(first)
    assert await in_context(second) == [("kept", None, None)]


async def test_a_request_thread_keeps_nothing_of_the_context_that_started_it(
    switch: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.14 can start a thread in a copy of its starter's context
    (``sys.flags.thread_inherit_context``); done here for every version."""
    original_start = threading.Thread.start

    def inheriting_start(thread: threading.Thread) -> None:
        inherited = contextvars.copy_context()
        run = thread.run
        thread.run = lambda: inherited.run(run)  # ty: ignore[invalid-assignment]
        original_start(thread)

    monkeypatch.setattr(threading.Thread, "start", inheriting_start)
    switch()
    request_id.set(7)
    async with ThreadSensitiveContext() as context:
        await here()
        pool = SyncToAsync.context_to_thread_executor[context]
    # Run directly on the thread, outside any call's copied context.
    base = pool.submit(contextvars.copy_context).result(timeout=10)
    assert request_id not in base
    state = pool.submit(lambda: dict(SyncToAsync.threadlocal.__dict__))
    assert state.result(timeout=10) == {}


# -- Retiring -------------------------------------------------------------------------


class Connection:
    """Stands for a database connection: caught in a reference cycle, as
    Django's connection wrapper is, and closed by its finaliser."""

    closed: list[str] = []  # noqa: RUF012

    def __init__(self, name: str) -> None:
        self.name = name
        self.cycle = self

    def __del__(self) -> None:
        Connection.closed.append(self.name)


def connect(name: str) -> Callable[[], None]:
    def open_connection() -> None:
        critical.db = Connection(name)

    return open_connection


async def test_an_idle_thread_retires_and_its_thread_critical_data_is_finalised(
    switch: Callable[..., None],
) -> None:
    Connection.closed.clear()
    switch(idle_timeout=0.2)
    started = time.monotonic()
    thread = (await in_context(current_thread, connect("a")))[0]
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started >= 0.2
    wait_for(lambda: request_threads.status().retired == 1)
    assert Connection.closed == ["a"]  # collected, not waiting for the collector
    # The reaper is gone too once nothing is idle.
    wait_for(lambda: not request_thread_names())


async def test_with_the_collector_disabled_retiring_leaves_cycles_to_it(
    switch: Callable[..., None],
) -> None:
    Connection.closed.clear()
    switch(idle_timeout=0.1)
    gc.disable()
    try:
        await in_context(connect("b"))
        wait_for(lambda: request_threads.status().retired == 1)
        assert Connection.closed == []
    finally:
        gc.enable()
    gc.collect()
    assert Connection.closed == ["b"]


async def test_the_most_recently_used_thread_is_lent_first_and_the_rest_retire(
    switch: Callable[..., None],
) -> None:
    switch(idle_timeout=0.5)
    barrier = threading.Barrier(3, timeout=10)
    burst = await asyncio.gather(
        *(in_context(current_thread, barrier.wait) for _ in range(3))
    )
    assert len({run[0] for run in burst}) == 3
    # Kept busy until the other two have retired, one thread serves all.
    used: set[threading.Thread] = set()
    deadline = time.monotonic() + 10
    while True:
        used.add((await in_context(current_thread))[0])
        if request_threads.status().retired == 2:
            break
        assert time.monotonic() < deadline, "the idle threads did not retire"
        await asyncio.sleep(0.02)
    assert len(used) == 1
    assert (used.pop()).is_alive()


async def test_a_shorter_idle_timeout_applies_to_threads_already_idle(
    switch: Callable[..., None],
) -> None:
    switch(idle_timeout=60)
    thread = (await in_context(current_thread))[0]
    await asyncio.sleep(0.05)  # the reaper is asleep for 60 s
    switch(idle_timeout=0.1)
    thread.join(5)
    assert not thread.is_alive()


# -- max_threads ----------------------------------------------------------------------


class Holder:
    """A request that holds its thread until ``release()``."""

    def __init__(self) -> None:
        self._entered = asyncio.Event()
        self._go = asyncio.Event()
        self._task: asyncio.Task[threading.Thread] | None = None

    async def hold(self) -> None:
        self._task = asyncio.ensure_future(self._request())
        await self._entered.wait()

    async def _request(self) -> threading.Thread:
        async with ThreadSensitiveContext():
            thread = await here()
            self._entered.set()
            await self._go.wait()
            return thread

    def release(self) -> None:
        self._go.set()

    async def done(self) -> threading.Thread:
        """Release the thread; the one it held, once the request is over."""
        assert self._task is not None
        self.release()
        return await self._task


async def test_at_max_threads_a_context_waits_for_one_and_never_shares(
    switch: Callable[..., None],
) -> None:
    switch(max_threads=2)
    holders: dict[threading.Thread, int] = {}
    lock = threading.Lock()
    overlaps: list[threading.Thread] = []

    def take() -> None:
        me = threading.current_thread()
        with lock:
            holders[me] = holders.get(me, 0) + 1
            if holders[me] > 1:
                overlaps.append(me)

    def release() -> None:
        with lock:
            holders[threading.current_thread()] -= 1

    async def request(n: int) -> list[Any]:
        async with ThreadSensitiveContext():
            first = await here()
            await sync_to_async(take)()
            await asyncio.sleep(0.01 * (n % 3))
            middle = await here()
            await sync_to_async(release)()
            return [first, middle]

    waiting_seen: list[int] = []

    async def watch() -> None:
        while True:
            waiting_seen.append(request_threads.status().waiting)
            await asyncio.sleep(0.001)

    watcher = asyncio.ensure_future(watch())
    try:
        runs = await asyncio.gather(*(request(n) for n in range(8)))
    finally:
        watcher.cancel()
    assert overlaps == []
    for first, middle in runs:
        assert first is middle
    assert len({run[0] for run in runs}) == 2
    assert max(waiting_seen) > 0
    status = request_threads.status()
    assert (status.started, status.busy, status.idle, status.waiting) == (2, 0, 2, 0)


async def test_waiting_contexts_are_served_in_order(
    switch: Callable[..., None],
) -> None:
    switch(max_threads=1)
    order: list[int] = []
    holder = Holder()

    async def request(n: int) -> None:
        async with ThreadSensitiveContext():
            await sync_to_async(order.append)(n)

    await holder.hold()
    waiting = [asyncio.ensure_future(request(n)) for n in range(4)]
    await asyncio.sleep(0.05)
    assert request_threads.status().waiting == 4
    await holder.done()
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3]


async def test_a_waiting_contexts_calls_run_in_order_and_report_errors(
    switch: Callable[..., None],
) -> None:
    switch(max_threads=1)
    holder = Holder()

    def boom() -> None:
        raise LookupError("boom")

    log: list[int] = []

    async def waiter() -> None:
        async with ThreadSensitiveContext():
            calls = [
                asyncio.ensure_future(sync_to_async(log.append)(n)) for n in range(3)
            ]
            failing = asyncio.ensure_future(sync_to_async(boom)())
            await asyncio.sleep(0.02)
            assert request_threads.status().waiting == 1
            holder.release()
            await asyncio.gather(*calls)
            with pytest.raises(LookupError, match=r"^boom$"):
                await failing
            log.append(-1)
            assert await here() is (await here())

    await holder.hold()
    await waiter()
    await holder.done()
    assert log == [0, 1, 2, -1]


async def test_a_waiting_call_cancelled_before_it_starts_never_runs(
    switch: Callable[..., None],
) -> None:
    switch(max_threads=1)
    holder = Holder()
    ran: list[str] = []

    async def waiter() -> None:
        async with ThreadSensitiveContext():
            call = asyncio.ensure_future(sync_to_async(ran.append)("cancelled"))
            await asyncio.sleep(0.02)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            holder.release()
            await sync_to_async(ran.append)("after")

    await holder.hold()
    await waiter()
    await holder.done()
    assert ran == ["after"]


@pytest.mark.parametrize("change", ["raise max_threads", "switch off"])
async def test_a_change_of_settings_serves_waiting_contexts(
    switch: Callable[..., None], change: str
) -> None:
    """Raising max_threads makes room for them; switched off, they get
    threads of their own, retired when given back."""
    switch(max_threads=1)
    holder = Holder()
    await holder.hold()
    waiting = asyncio.ensure_future(in_context(current_thread))
    await asyncio.sleep(0.02)
    assert request_threads.status().waiting == 1
    if change == "switch off":
        request_threads.disable()
    else:
        switch(max_threads=2)
    (served,) = await waiting
    assert served is not await holder.done()
    assert request_threads.status().started == 2
    if change == "switch off":
        served.join(10)
        assert not served.is_alive()
    else:
        assert served.is_alive()
        assert request_threads.status().idle == 2


async def test_lowering_max_threads_retires_threads_over_it_when_given_back(
    switch: Callable[..., None],
) -> None:
    switch()
    barrier = threading.Barrier(3, timeout=10)
    await asyncio.gather(*(in_context(barrier.wait) for _ in range(3)))
    assert request_threads.status().idle == 3
    switch(max_threads=1)
    barrier = threading.Barrier(3, timeout=10)
    runs = await asyncio.gather(
        *(in_context(current_thread, barrier.wait) for _ in range(3))
    )
    assert len({run[0] for run in runs}) == 3  # idle ones are lent all the same
    wait_for(lambda: request_threads.status().retired == 2)
    assert request_threads.status().idle == 1


# -- Odd hand-backs -------------------------------------------------------------------


def test_a_thread_not_lent_from_the_cache_is_retired_when_given_back() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    thread = pool.submit(current_thread).result(timeout=10)
    _request_threads.give_back(pool)
    thread.join(5)
    assert not thread.is_alive()
    wait_for(lambda: request_threads.status().retired == 1)
    wait_for(lambda: not request_thread_names())


def test_a_lease_refuses_calls_after_its_context_exited(
    switch: Callable[..., None],
) -> None:
    """Its thread may be serving another context by then."""
    switch()
    pool = _request_threads.executor_for(True)
    assert isinstance(pool, ThreadPoolExecutor)
    lease = _request_threads._Lease()
    lease._bind(pool)
    assert lease.submit(int).result(timeout=10) == 0
    lease.shutdown()
    lease.shutdown()  # once is enough
    assert request_threads.status().idle == 1  # given back, still running
    with pytest.raises(
        RuntimeError, match=r"^cannot schedule new futures after shutdown$"
    ):
        lease.submit(int)


def test_a_lease_whose_thread_was_shut_down_gives_nothing_back() -> None:
    lease = _request_threads._Lease()
    queued: Future[Any] = lease.submit(int)
    assert queued.cancel()
    pool = ThreadPoolExecutor(max_workers=1)
    lease._bind(pool)  # the cancelled call is skipped
    pool.shutdown()
    lease.shutdown()
    assert request_threads.status().retired == 0


# -- fork() and exit ------------------------------------------------------------------


async def test_a_forked_child_starts_with_an_empty_cache_and_the_same_settings(
    switch: Callable[..., None], in_forked_child: Callable[..., str]
) -> None:
    switch(max_threads=3, idle_timeout=30)
    parent_thread = (await in_context(current_thread))[0]

    def child() -> None:
        status = request_threads.status()
        assert (status.enabled, status.max_threads, status.idle_timeout) == (
            True,
            3,
            30.0,
        )
        assert (status.busy, status.idle, status.started) == (0, 0, 0)
        (thread,) = asyncio.run(in_context(current_thread))
        assert thread is not parent_thread
        assert thread.name == "asgire-request-1_0"

    forked = sync_to_async(in_forked_child, thread_sensitive=False)
    assert await forked(child) == ""


def test_idle_request_threads_do_not_hold_up_interpreter_exit(
    python_output: Callable[[str], list[str]],
) -> None:
    """The fixture fails a child that has not exited within a minute; with an
    idle thread waiting an hour for work, it exits at once."""
    script = (
        "import asyncio\n"
        "from asgire import request_threads\n"
        "from asgiref.sync import ThreadSensitiveContext, sync_to_async\n"
        "request_threads.enable(idle_timeout=3600)\n"
        "async def request():\n"
        "    async with ThreadSensitiveContext():\n"
        "        await sync_to_async(print)('served')\n"
        "asyncio.run(request())\n"
        "print(request_threads.status().idle)\n"
    )
    assert python_output(script) == ["served", "1"]


def test_the_module_holds_no_strong_reference_to_lent_threads() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    cache = _request_threads._cache
    cache._lent.add(pool)
    assert _request_threads.lent(pool)
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    assert len(cache._lent) == 0
