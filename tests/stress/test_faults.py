"""Faults: exceptions, cancellation, dead loops, fork and garbage collection."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import gc
import importlib
import random
import sys
import threading
import time
import traceback
import weakref
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

base_exception_group: Any
if sys.version_info >= (3, 11):
    base_exception_group = BaseExceptionGroup  # noqa: F821 - builtin from 3.11
else:
    try:  # the backport pytest itself depends on before 3.11
        base_exception_group = importlib.import_module(
            "exceptiongroup"
        ).BaseExceptionGroup
    except ImportError:
        base_exception_group = None


# --- every exception reaches the caller unchanged ---------------------------


class CustomBaseException(BaseException):
    pass


def plain_error() -> BaseException:
    return ValueError("plain")


def chained_error() -> BaseException:
    try:
        raise KeyError("root cause")
    except KeyError as cause:
        try:
            raise RuntimeError("consequence") from cause
        except RuntimeError as error:
            return error


def implicitly_chained_error() -> BaseException:
    try:
        raise OSError("first")
    except OSError:
        try:
            raise LookupError("while handling")
        except LookupError as error:
            return error


def grouped_error() -> BaseException:
    if base_exception_group is None:
        pytest.skip("exception groups need Python 3.11 or the exceptiongroup package")
    inner = base_exception_group("inner", [KeyError("k"), CustomBaseException()])
    return base_exception_group("outer", [ValueError("v"), inner])


ERRORS: dict[str, Callable[[], BaseException]] = {
    "ValueError": plain_error,
    "KeyboardInterrupt": lambda: KeyboardInterrupt(),
    "SystemExit": lambda: SystemExit(3),
    "GeneratorExit": lambda: GeneratorExit(),
    "custom BaseException": lambda: CustomBaseException("custom"),
    "exception group": grouped_error,
    "explicit cause": chained_error,
    "implicit context": implicitly_chained_error,
}


class Thrower:
    """Raises a prepared exception from a sync or an async function."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def raising_sync_function(self) -> None:
        raise self.error

    async def raising_coroutine_function(self) -> None:
        raise self.error


def across_sync_to_async(thrower: Thrower) -> BaseException | None:
    async def caller() -> BaseException | None:
        try:
            await sync_to_async(thrower.raising_sync_function)()
        except BaseException as caught:
            return caught
        return None

    return asyncio.run(caller())


def across_async_to_sync_new_loop(thrower: Thrower) -> BaseException | None:
    try:
        async_to_sync(thrower.raising_coroutine_function)()
    except BaseException as caught:
        return caught
    return None


def across_async_to_sync_outer_loop(thrower: Thrower) -> BaseException | None:
    def in_worker() -> BaseException | None:
        try:
            async_to_sync(thrower.raising_coroutine_function)()
        except BaseException as caught:
            return caught
        return None

    return asyncio.run(sync_to_async(in_worker)())


def across_async_to_sync_forced_new_loop(thrower: Thrower) -> BaseException | None:
    def in_worker() -> BaseException | None:
        try:
            async_to_sync(thrower.raising_coroutine_function, force_new_loop=True)()
        except BaseException as caught:
            return caught
        return None

    return asyncio.run(sync_to_async(in_worker, thread_sensitive=False)())


def across_async_to_sync_single_thread_context(
    thrower: Thrower,
) -> BaseException | None:
    try:
        with AsyncSingleThreadContext():
            async_to_sync(thrower.raising_coroutine_function)()
    except BaseException as caught:
        return caught
    return None


def across_sync_async_sync(thrower: Thrower) -> BaseException | None:
    async def middle() -> None:
        await sync_to_async(thrower.raising_sync_function)()

    try:
        async_to_sync(middle)()
    except BaseException as caught:
        return caught
    return None


def across_async_sync_async(thrower: Thrower) -> BaseException | None:
    def middle() -> None:
        async_to_sync(thrower.raising_coroutine_function)()

    async def caller() -> BaseException | None:
        try:
            await sync_to_async(middle, thread_sensitive=False)()
        except BaseException as caught:
            return caught
        return None

    return asyncio.run(caller())


ROUTES: dict[str, tuple[Callable[[Thrower], BaseException | None], str]] = {
    "sync_to_async": (across_sync_to_async, "raising_sync_function"),
    "async_to_sync, new loop": (
        across_async_to_sync_new_loop,
        "raising_coroutine_function",
    ),
    "async_to_sync, outer loop": (
        across_async_to_sync_outer_loop,
        "raising_coroutine_function",
    ),
    "async_to_sync, forced new loop": (
        across_async_to_sync_forced_new_loop,
        "raising_coroutine_function",
    ),
    "async_to_sync, single-thread context": (
        across_async_to_sync_single_thread_context,
        "raising_coroutine_function",
    ),
    "sync->async->sync": (across_sync_async_sync, "raising_sync_function"),
    "async->sync->async": (across_async_sync_async, "raising_coroutine_function"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", ERRORS)
def test_exception_reaches_caller_unchanged(kind: str, route: str) -> None:
    error = ERRORS[kind]()
    cause, context = error.__cause__, error.__context__
    args = error.args
    cross, raiser = ROUTES[route]

    caught = cross(Thrower(error))

    assert caught is error
    assert type(caught) is type(error)
    assert caught.args == args
    assert caught.__cause__ is cause
    assert caught.__context__ is context
    frames = [frame.name for frame in traceback.extract_tb(caught.__traceback__)]
    assert raiser in frames, f"raising frame missing from traceback: {frames}"
    if base_exception_group is not None and isinstance(caught, base_exception_group):
        group: Any = caught
        flat = group.exceptions[1].exceptions
        assert [type(e) for e in flat] == [KeyError, CustomBaseException]


# --- cancellation leaves nothing behind --------------------------------------


def pending_futures(before: weakref.WeakSet[Any]) -> list[object]:
    """Futures not done now that were not there at ``before``."""
    gc.collect()
    current = asyncio.current_task() if _in_loop() else None
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, (asyncio.Future, concurrent.futures.Future))
        and not obj.done()
        and obj is not current
        and obj not in before
    ]


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def existing_futures() -> weakref.WeakSet[Any]:
    # Weakly held, so they can still go away, and no id can be reused.
    gc.collect()
    return weakref.WeakSet(
        obj
        for obj in gc.get_objects()
        if isinstance(obj, (asyncio.Future, concurrent.futures.Future))
    )


async def wait_until(flag: threading.Event, timeout: float = 5.0) -> None:
    """Poll a thread-side flag from the loop without blocking it."""
    deadline = time.monotonic() + timeout
    while not flag.is_set():
        assert time.monotonic() < deadline, "worker never started"
        await asyncio.sleep(0.005)


async def expect_cancelled(task: asyncio.Future[Any], timeout: float = 5.0) -> None:
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), timeout)


async def thread_sensitive_worker_still_serves() -> None:
    assert await asyncio.wait_for(sync_to_async(lambda: 42)(), 5) == 42


class Lane:
    """One way sync work gets a thread: which executor, and who is waiting."""

    NAMES = (
        "thread-sensitive",
        "thread-sensitive in context",
        "caller thread",
        "own pool",
        "default executor",
    )

    def __init__(self, name: str) -> None:
        self.name = name

    def call(self, func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        if self.name == "own pool":
            return sync_to_async(func, thread_sensitive=False, executor=self.pool)
        if self.name == "default executor":
            return sync_to_async(func, thread_sensitive=False)
        # The shared worker, the context's worker, or (under async_to_sync)
        # the blocked caller's own thread.
        return sync_to_async(func)

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="stress-lane") as self.pool:
            if self.name == "caller thread":
                async_to_sync(self._inside)(scenario)
            else:
                asyncio.run(self._inside(scenario))

    async def _inside(self, scenario: Callable[[], Awaitable[None]]) -> None:
        if self.name == "default executor":
            single = ThreadPoolExecutor(1, thread_name_prefix="stress-default")
            asyncio.get_running_loop().set_default_executor(single)
        if self.name == "thread-sensitive in context":
            async with ThreadSensitiveContext():
                await scenario()
        else:
            await scenario()
        # Whatever was cancelled, the lane's thread is free for the next call.
        assert await asyncio.wait_for(self.call(lambda: 42)(), 5) == 42


@pytest.mark.timeout(30)
@pytest.mark.parametrize("lane", Lane.NAMES)
def test_cancel_before_worker_starts(lane: str) -> None:
    ran: list[int] = []
    way = Lane(lane)

    async def scenario() -> None:
        before = existing_futures()
        gate, busy = threading.Event(), threading.Event()

        def occupy() -> None:
            busy.set()
            gate.wait(10)

        blocker = asyncio.ensure_future(way.call(occupy)())
        await wait_until(busy)
        # Queued behind `occupy`: the lane has one thread.
        queued = asyncio.ensure_future(way.call(ran.append)(1))
        await asyncio.sleep(0.05)
        queued.cancel()
        await expect_cancelled(queued)
        gate.set()
        await asyncio.wait_for(blocker, 5)
        assert pending_futures(before) == []

    way.run(scenario)
    assert ran == [], "a call cancelled before it started still ran"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("lane", Lane.NAMES)
def test_cancel_while_sync_work_runs(lane: str) -> None:
    finished: list[int] = []
    way = Lane(lane)

    async def scenario() -> None:
        before = existing_futures()
        gate, started = threading.Event(), threading.Event()

        def work() -> int:
            started.set()
            gate.wait(10)
            finished.append(1)
            return 1

        task = asyncio.ensure_future(way.call(work)())
        await wait_until(started)
        task.cancel()
        # Whether cancellation waits for the thread or not, releasing the
        # work must let it finish and the task end cancelled.
        asyncio.get_running_loop().call_later(0.1, gate.set)
        await expect_cancelled(task)
        await asyncio.sleep(0.2)
        assert pending_futures(before) == []

    way.run(scenario)
    assert finished == [1]


@pytest.mark.timeout(30)
def test_cancel_while_sync_work_waits_in_nested_async_to_sync() -> None:
    before = existing_futures()
    seen: list[str] = []

    async def scenario() -> None:
        entered = threading.Event()

        async def innermost() -> None:
            entered.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append("innermost cancelled")
                raise

        def work() -> None:
            try:
                async_to_sync(innermost)()
            except asyncio.CancelledError:
                seen.append("sync side got CancelledError")
                raise

        task = asyncio.ensure_future(sync_to_async(work)())
        await wait_until(entered)
        task.cancel()
        await expect_cancelled(task)
        await thread_sensitive_worker_still_serves()
        assert pending_futures(before) == []

    asyncio.run(scenario())
    assert seen == ["innermost cancelled", "sync side got CancelledError"]


STORM_CALLS = 3_000


@pytest.mark.timeout(60)
def test_cancellation_storm_loses_and_duplicates_nothing(
    thread_watch: Any, figures: Any
) -> None:
    # Cancellations land at random points of many concurrent crossings of
    # every kind; each call either returns its own answer or is cancelled.
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    chooser = random.Random(8)

    def record(index: int) -> int:
        with lock:
            runs[index] += 1
        return index

    async def async_record(index: int) -> int:
        await asyncio.sleep(0)
        return await sync_to_async(record)(index)

    def nested(index: int) -> int:
        return async_to_sync(async_record)(index)

    free = sync_to_async(record, thread_sensitive=False)
    pinned = sync_to_async(record)
    bridged = sync_to_async(nested, thread_sensitive=False)

    async def storm() -> list[int | BaseException]:
        before = existing_futures()
        loop = asyncio.get_running_loop()
        tasks = []
        for index in range(STORM_CALLS):
            call = (free, pinned, bridged)[index % 3]
            task = asyncio.ensure_future(call(index))
            if chooser.random() < 0.5:
                loop.call_later(chooser.random() * 0.05, task.cancel)
            tasks.append(task)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), 30
        )
        await asyncio.sleep(0.2)  # cancelled work still running may finish
        await thread_sensitive_worker_still_serves()
        assert pending_futures(before) == []
        return outcomes

    outcomes = asyncio.run(storm())
    answered = [i for i, outcome in enumerate(outcomes) if outcome == i]
    cancelled = [
        i for i, o in enumerate(outcomes) if isinstance(o, asyncio.CancelledError)
    ]
    assert len(answered) + len(cancelled) == STORM_CALLS, [
        o for o in outcomes if not isinstance(o, (int, asyncio.CancelledError))
    ][:5]
    assert all(runs[i] == 1 for i in answered), "an answered call ran twice or never"
    assert max(runs.values(), default=0) <= 1, "a call ran more than once"
    thread_watch.assert_none_left()
    figures.record(
        "faults: cancellation storm",
        calls=STORM_CALLS,
        answered=len(answered),
        cancelled=len(cancelled),
        cancelled_after_running=sum(1 for i in cancelled if runs[i]),
    )


@pytest.mark.timeout(30)
def test_cancel_during_thread_sensitive_context_exit(thread_watch: Any) -> None:
    before = existing_futures()
    contexts: list[weakref.ref[ThreadSensitiveContext]] = []

    async def scenario() -> None:
        gate, started = threading.Event(), threading.Event()
        exiting = asyncio.Event()

        def work() -> None:
            started.set()
            gate.wait(10)

        async def block() -> None:
            context = ThreadSensitiveContext()
            contexts.append(weakref.ref(context))
            async with context:
                busy = asyncio.ensure_future(sync_to_async(work)())
                await wait_until(started)
                busy.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await busy
                # The context's worker is still inside `work`, so leaving the
                # block has to wait for it.
                exiting.set()

        task = asyncio.ensure_future(block())
        await exiting.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        await expect_cancelled(task)
        gate.set()
        await asyncio.sleep(0.1)
        assert pending_futures(before) == []

    asyncio.run(scenario())
    thread_watch.assert_none_left()
    gc.collect()
    assert contexts[0]() is None
    assert len(SyncToAsync.context_to_thread_executor) == 0


# --- the loop to call back into is gone --------------------------------------


class AbandonedWorker:
    """A sync worker left running after its loop finished, then released."""

    def __init__(self, thread_sensitive: bool) -> None:
        self.thread_sensitive = thread_sensitive
        self.loop = asyncio.new_event_loop()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="stress-abandoned")
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.outcome: list[object] = []

    async def coroutine(self) -> str:
        return "ran"

    def work(self) -> None:
        self.started.set()
        self.release.wait(10)
        try:
            self.outcome.append(async_to_sync(self.coroutine)())
        except Exception as error:
            self.outcome.append(error)
        finally:
            self.finished.set()

    async def start_and_abandon(self) -> None:
        if self.thread_sensitive:
            call = sync_to_async(self.work)  # on the shared thread-sensitive worker
        else:
            call = sync_to_async(self.work, thread_sensitive=False, executor=self.pool)
        task = asyncio.ensure_future(call())
        await wait_until(self.started)
        task.cancel()  # the thread keeps running; the loop will not wait for it
        with pytest.raises(asyncio.CancelledError):
            await task

    def run(self, close: bool, timeout: float = 5.0) -> bool:
        """Abandon the worker, release it; True if it finished in time."""
        self.loop.run_until_complete(self.start_and_abandon())
        if close:
            self.loop.close()
        self.release.set()
        in_time = self.finished.wait(timeout)
        if not in_time and not self.loop.is_closed():
            # Let the stranded callback run, so the thread can end.
            self.loop.run_until_complete(asyncio.sleep(0.1))
            self.finished.wait(timeout)
        self.pool.shutdown()
        self.loop.close()
        return in_time


SENSITIVITY = pytest.mark.parametrize(
    "thread_sensitive", [False, True], ids=["own executor", "thread-sensitive"]
)


@pytest.mark.timeout(30)
@SENSITIVITY
def test_async_to_sync_after_loop_closed_runs_in_a_new_loop(
    thread_sensitive: bool,
) -> None:
    worker = AbandonedWorker(thread_sensitive)
    assert worker.run(close=True), "async_to_sync hung on a closed loop"
    assert worker.outcome == ["ran"]


@pytest.mark.timeout(30)
@SENSITIVITY
def test_async_to_sync_into_an_idle_loop_waits_for_it_to_run(
    thread_sensitive: bool,
) -> None:
    worker = AbandonedWorker(thread_sensitive)
    assert not worker.run(close=False, timeout=0.5), "ran before its loop did"
    assert worker.outcome == ["ran"]


# --- fork ---------------------------------------------------------------------


def double(value: int) -> int:
    return value * 2


async def double_via_sync(value: int) -> int:
    return await sync_to_async(double)(value)


async def double_in_context(value: int) -> int:
    async with ThreadSensitiveContext():
        return await sync_to_async(double)(value)


def use_bridges_without_shared_worker() -> None:
    assert async_to_sync(double_via_sync)(1) == 2
    free = sync_to_async(double, thread_sensitive=False)
    assert asyncio.run(free(2)) == 4
    assert asyncio.run(double_in_context(3)) == 6


def warm_up_every_bridge() -> None:
    use_bridges_without_shared_worker()
    assert asyncio.run(sync_to_async(double)(4)) == 8


@pytest.mark.timeout(60)
def test_forked_child_can_use_both_bridges(in_forked_child: Callable[..., str]) -> None:
    warm_up_every_bridge()
    assert in_forked_child(use_bridges_without_shared_worker) == ""


@pytest.mark.timeout(60)
def test_child_forked_inside_worker_does_not_call_back_to_parent_loop(
    in_forked_child: Callable[..., str],
) -> None:
    def fork_from_worker() -> None:
        # This thread's state points at the parent's loop, which the child
        # does not have running.
        assert in_forked_child(use_bridges_without_shared_worker) == ""

    async def parent() -> None:
        await sync_to_async(fork_from_worker, thread_sensitive=False)()

    warm_up_every_bridge()
    asyncio.run(parent())


@pytest.mark.asgire_only
@pytest.mark.timeout(60)
def test_forked_child_gets_a_fresh_thread_sensitive_worker(
    in_forked_child: Callable[..., str],
) -> None:
    warm_up_every_bridge()  # the parent's shared worker thread now exists

    def child() -> None:
        assert asyncio.run(sync_to_async(double)(5)) == 10

    assert in_forked_child(child) == ""


@pytest.mark.asgire_only
@pytest.mark.timeout(60)
def test_child_forked_inside_thread_sensitive_context_gets_fresh_workers(
    in_forked_child: Callable[..., str],
) -> None:
    def child() -> None:
        assert asyncio.run(sync_to_async(double)(6)) == 12

    async def parent() -> None:
        async with ThreadSensitiveContext():
            await sync_to_async(double)(1)  # the context's worker now exists
            forked = sync_to_async(in_forked_child, thread_sensitive=False)
            assert await forked(child) == ""

    asyncio.run(parent())


# --- garbage collection -------------------------------------------------------


def collected(*refs: weakref.ref[Any], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(ref() is not None for ref in refs):
        if time.monotonic() > deadline:
            return False
        gc.collect()
        time.sleep(0.01)
    return True


def released(thread: threading.Thread) -> bool:
    """Ended, or parked by asgire as an idle thread for reuse."""
    return not thread.is_alive() or thread.name.startswith("asgire-")


@pytest.mark.timeout(30)
def test_thread_sensitive_context_releases_executor_and_thread(
    thread_watch: Any,
) -> None:
    found: dict[str, Any] = {}

    def note_thread() -> None:
        found["thread"] = threading.current_thread()

    async def scenario() -> None:
        context = ThreadSensitiveContext()
        async with context:
            await sync_to_async(note_thread)()
            found["executor"] = weakref.ref(
                SyncToAsync.context_to_thread_executor[context]
            )
        found["context"] = weakref.ref(context)

    asyncio.run(scenario())
    assert collected(found["context"], found["executor"])
    thread_watch.assert_none_left()
    assert released(found["thread"])


@pytest.mark.timeout(30)
def test_context_never_exited_is_released_with_its_task(thread_watch: Any) -> None:
    found: dict[str, Any] = {}

    def note_thread() -> None:
        found["thread"] = threading.current_thread()

    async def forgets_to_exit() -> None:
        context = ThreadSensitiveContext()
        await context.__aenter__()
        await sync_to_async(note_thread)()
        found["context"] = weakref.ref(context)
        found["executor"] = weakref.ref(SyncToAsync.context_to_thread_executor[context])

    asyncio.run(forgets_to_exit())
    assert collected(found["context"], found["executor"])
    thread_watch.assert_none_left()
    assert len(SyncToAsync.context_to_thread_executor) == 0


@pytest.mark.timeout(30)
def test_async_single_thread_context_releases_executor_and_thread(
    thread_watch: Any,
) -> None:
    found: dict[str, Any] = {}

    async def note_loop_thread() -> None:
        found.setdefault("threads", set()).add(threading.current_thread())

    with AsyncSingleThreadContext() as context:
        async_to_sync(note_loop_thread)()
        async_to_sync(note_loop_thread)()
        found["executor"] = weakref.ref(AsyncToSync.context_to_thread_executor[context])
    found["context"] = weakref.ref(context)
    del context

    assert len(found["threads"]) == 1  # both calls ran on the context's thread
    assert collected(found["context"], found["executor"])
    thread_watch.assert_none_left()
    assert len(AsyncToSync.context_to_thread_executor) == 0


@pytest.mark.timeout(30)
def test_single_thread_context_never_exited_is_released_with_its_thread(
    thread_watch: Any,
) -> None:
    found: dict[str, Any] = {}

    async def note_loop_thread() -> None:
        found["loop thread"] = threading.current_thread()

    def forgets_to_exit() -> None:
        # The context lives in this thread's context variables only.
        context = AsyncSingleThreadContext()
        context.__enter__()
        async_to_sync(note_loop_thread)()
        found["context"] = weakref.ref(context)
        found["executor"] = weakref.ref(AsyncToSync.context_to_thread_executor[context])

    thread = threading.Thread(target=forgets_to_exit, name="stress-forgetful")
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    del thread

    assert collected(found["context"], found["executor"])
    thread_watch.assert_none_left()
    assert released(found["loop thread"])
    assert len(AsyncToSync.context_to_thread_executor) == 0


@pytest.mark.timeout(30)
def test_new_loop_and_its_thread_are_released(thread_watch: Any) -> None:
    found: dict[str, Any] = {}

    async def note_loop() -> None:
        found["thread"] = threading.current_thread()

    async_to_sync(note_loop)()
    thread_watch.assert_none_left()
    assert released(found["thread"])
    assert len(AsyncToSync.loop_thread_executors) == 0
