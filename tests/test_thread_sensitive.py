"""Where thread-sensitive sync code runs, and the contexts that steer it."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from asgiref.sync import (
    AsyncSingleThreadContext,
    AsyncToSync,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

OWN_THREAD = r"^You cannot submit onto CurrentThreadExecutor from its own thread$"
DEADLOCK = r"^Single thread executor already being used, would deadlock$"
ALREADY_ENTERED = r"^ThreadSensitiveContext is already entered$"
ENTERED_AGAIN = r"^ThreadSensitiveContext with an executor cannot be entered again$"
T = TypeVar("T")
OUTLIVED = (
    r"^ThreadSensitiveContext has exited\. Tasks created inside a context with an "
    r"executor must finish before it exits\.$"
)


def current_thread() -> threading.Thread:
    return threading.current_thread()


here = sync_to_async(current_thread)
anywhere = sync_to_async(current_thread, thread_sensitive=False)


def single_thread_executor_threads() -> set[threading.Thread]:
    pool: Any = SyncToAsync.single_thread_executor
    return set(pool._threads)


def spawn_in_empty_context(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start a task that inherits none of the caller's context variables."""

    def spawn() -> asyncio.Task[T]:
        return asyncio.ensure_future(coro)

    return contextvars.Context().run(spawn)


class LateTasks:
    """``spawn()`` starts a task that waits for ``gate``, then makes a
    thread-sensitive call and returns the thread it ran on."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.tasks: list[asyncio.Task[threading.Thread]] = []

    async def spawn(self) -> None:
        self.tasks.append(asyncio.ensure_future(self._late()))

    async def _late(self) -> threading.Thread:
        await self.gate.wait()
        return await here()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supplied")
    try:
        yield pool
    finally:
        pool.shutdown()


def in_supplied(thread: threading.Thread) -> bool:
    return thread.name.startswith("supplied")


# Class attributes


def test_sync_to_async_class_attributes_have_the_documented_types() -> None:
    assert isinstance(SyncToAsync.threadlocal, threading.local)
    assert isinstance(SyncToAsync.single_thread_executor, ThreadPoolExecutor)
    assert isinstance(SyncToAsync.thread_sensitive_context, contextvars.ContextVar)
    assert isinstance(SyncToAsync.deadlock_context, contextvars.ContextVar)
    assert isinstance(SyncToAsync.context_to_thread_executor, weakref.WeakKeyDictionary)


def test_default_single_thread_executor_is_a_one_worker_pool() -> None:
    pool = SyncToAsync.single_thread_executor
    assert isinstance(pool, ThreadPoolExecutor)
    assert isinstance(pool._threads, set)
    assert pool._max_workers == 1


def test_importing_sync_takes_one_pool_number_for_thread_names(
    python_output: Callable[[str], list[str]],
) -> None:
    # Thread names like "ThreadPoolExecutor-0_0" show up in logs, and some
    # tools pick the thread-sensitive thread out by its name.
    script = """
import asyncio, threading
from concurrent.futures import ThreadPoolExecutor
from asgiref.sync import sync_to_async
def name():
    return threading.current_thread().name
print(asyncio.run(sync_to_async(name)()))
with ThreadPoolExecutor(max_workers=1) as pool:
    print(pool.submit(name).result())
"""
    assert python_output(script) == ["ThreadPoolExecutor-0_0", "ThreadPoolExecutor-1_0"]


async def test_threadlocal_holds_the_calling_loop_inside_sync_code(
    in_new_thread: Callable[..., Any],
) -> None:
    loop = asyncio.get_running_loop()

    def main_loop() -> Any:
        return getattr(SyncToAsync.threadlocal, "main_event_loop", None)

    assert await sync_to_async(main_loop)() is loop
    assert await sync_to_async(main_loop, thread_sensitive=False)() is loop
    assert in_new_thread(main_loop) is None


def test_context_manager_signatures() -> None:
    parameters = list(inspect.signature(ThreadSensitiveContext).parameters.values())
    assert [(p.name, p.kind, p.default) for p in parameters] == [
        ("executor", inspect.Parameter.KEYWORD_ONLY, None)
    ]
    assert list(inspect.signature(AsyncSingleThreadContext).parameters) == []


# The process-wide single thread


async def test_top_level_thread_sensitive_calls_share_the_single_thread() -> None:
    first = await here()
    assert first is await here()
    assert first in single_thread_executor_threads()
    assert first is not threading.current_thread()


async def test_thread_sensitive_calls_from_sibling_tasks_share_the_single_thread() -> (
    None
):
    threads = await asyncio.gather(here(), here(), here())
    assert len(set(threads)) == 1
    assert threads[0] in single_thread_executor_threads()


async def test_replaced_single_thread_executor_receives_thread_sensitive_calls() -> (
    None
):
    original = SyncToAsync.single_thread_executor
    replacement = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replacement")
    SyncToAsync.single_thread_executor = replacement
    try:
        first, second = await here(), await here()
        assert first is second
        assert first.name.startswith("replacement")
        # Non-sensitive calls are unaffected by the replacement.
        assert not (await anywhere()).name.startswith("replacement")
    finally:
        SyncToAsync.single_thread_executor = original
        replacement.shutdown()
    assert (await here()) in single_thread_executor_threads()


async def test_reentering_the_single_thread_from_the_same_context_raises() -> None:
    def starts_its_own_loop() -> None:
        async def inner() -> None:
            await here()

        # A private loop in the single thread, inheriting the caller's
        # context: its thread-sensitive call could only wait on itself.
        asyncio.run(inner())

    with pytest.raises(RuntimeError, match=DEADLOCK):
        await sync_to_async(starts_its_own_loop)()
    # The guard is lifted once the outer call has finished.
    assert await here() in single_thread_executor_threads()


async def test_deadlock_guard_does_not_affect_non_sensitive_calls() -> None:
    def starts_its_own_loop() -> threading.Thread:
        async def inner() -> threading.Thread:
            return await anywhere()

        return asyncio.run(inner())

    thread = await sync_to_async(starts_its_own_loop)()
    assert thread not in single_thread_executor_threads()


async def test_sequential_calls_from_one_task_do_not_trip_the_deadlock_guard() -> None:
    for _ in range(3):
        await here()
    async with ThreadSensitiveContext():
        await here()
    await here()


def fails() -> None:
    raise ValueError("failed")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(here, id="thread-sensitive"),
        pytest.param(anywhere, id="non-sensitive"),
        pytest.param(sync_to_async(fails), id="raising"),
        pytest.param(
            sync_to_async(fails, thread_sensitive=False), id="raising-non-sensitive"
        ),
    ],
)
async def test_deadlock_guard_reads_false_after_every_call(
    call: Callable[[], Awaitable[Any]],
) -> None:
    # Code that inspects the guard may read it without a default.
    async def check() -> bool:
        with contextlib.suppress(ValueError):
            await call()
        return SyncToAsync.deadlock_context.get()

    assert await spawn_in_empty_context(check()) is False


async def test_deadlock_guard_reads_false_after_a_call_in_a_context() -> None:
    async def check() -> bool:
        async with ThreadSensitiveContext():
            await here()
            return SyncToAsync.deadlock_context.get()

    assert await spawn_in_empty_context(check()) is False


# Returning to the thread of a waiting async_to_sync


def test_sync_async_sync_stays_on_the_calling_thread() -> None:
    async def middle() -> threading.Thread:
        return await here()

    assert async_to_sync(middle)() is threading.current_thread()


def test_sync_async_sync_stays_on_the_calling_thread_in_any_thread(
    in_new_thread: Callable[..., Any],
) -> None:
    async def middle() -> tuple[threading.Thread, threading.Thread]:
        return await here(), await here()

    def body() -> bool:
        first, second = async_to_sync(middle)()
        return first is second is threading.current_thread()

    assert in_new_thread(body)


def test_nested_frames_all_return_to_the_outermost_sync_thread() -> None:
    seen: list[tuple[str, threading.Thread]] = []

    def level3() -> None:
        seen.append(("sync 3", threading.current_thread()))

    async def level2_async() -> None:
        await sync_to_async(level3)()

    def level2() -> None:
        seen.append(("sync 2", threading.current_thread()))
        async_to_sync(level2_async)()
        seen.append(("sync 2 after", threading.current_thread()))

    async def level1_async() -> None:
        await sync_to_async(level2)()
        await sync_to_async(level3)()

    async_to_sync(level1_async)()
    assert [label for label, _ in seen] == [
        "sync 2",
        "sync 3",
        "sync 2 after",
        "sync 3",
    ]
    assert all(thread is threading.current_thread() for _, thread in seen)


def test_a_loop_the_waiting_thread_runs_itself_cannot_send_work_back_to_it() -> None:
    # The waiting thread is busy in asyncio.run, so it could never run the
    # call: refused at once rather than waited for forever.
    def starts_its_own_loop() -> threading.Thread:
        async def inner() -> threading.Thread:
            return await here()

        return asyncio.run(inner())

    async def outer() -> threading.Thread:
        return await sync_to_async(starts_its_own_loop)()

    outcome: Future[threading.Thread] = Future()

    def caller() -> None:
        try:
            outcome.set_result(async_to_sync(outer)())
        except BaseException as exc:
            outcome.set_exception(exc)

    threading.Thread(target=caller, daemon=True).start()
    with pytest.raises(RuntimeError, match=OWN_THREAD):
        outcome.result(timeout=10)


def test_non_sensitive_calls_do_not_return_to_the_calling_thread() -> None:
    async def middle() -> threading.Thread:
        return await anywhere()

    assert async_to_sync(middle)() is not threading.current_thread()


def test_tasks_spawned_by_the_coroutine_also_return_to_the_calling_thread() -> None:
    async def middle() -> list[threading.Thread]:
        return list(await asyncio.gather(here(), here()))

    threads = async_to_sync(middle)()
    assert threads == [threading.current_thread()] * 2


async def test_sync_code_reached_on_the_outer_loop_returns_to_its_caller_thread() -> (
    None
):
    loop = asyncio.get_running_loop()

    def outer_sync() -> tuple[threading.Thread, threading.Thread, bool]:
        async def on_outer_loop() -> tuple[threading.Thread, bool]:
            return await here(), asyncio.get_running_loop() is loop

        inner, same_loop = async_to_sync(on_outer_loop)()
        return threading.current_thread(), inner, same_loop

    caller, inner, same_loop = await sync_to_async(outer_sync)()
    assert same_loop
    assert inner is caller
    assert caller in single_thread_executor_threads()


async def test_force_new_loop_still_returns_sync_work_to_the_caller_thread() -> None:
    def outer_sync() -> tuple[threading.Thread, threading.Thread]:
        async def elsewhere() -> threading.Thread:
            return await here()

        return threading.current_thread(), async_to_sync(
            elsewhere, force_new_loop=True
        )()

    caller, inner = await sync_to_async(outer_sync)()
    assert inner is caller


# Tasks that outlive the async_to_sync call they were started in
#
# Such a task copies the context of a sync frame that has stopped waiting
# (Uvicorn starts a pipelined request's task from inside the previous
# response's send()). Upstream 3.13.0 sends its thread-sensitive calls to that
# finished frame and fails; asgire treats the task as detached from it.


@pytest.mark.asgire_only
async def test_task_outliving_its_async_to_sync_call_can_make_sensitive_calls() -> None:
    late = LateTasks()

    def outer_sync() -> threading.Thread:
        async_to_sync(late.spawn)()
        return threading.current_thread()

    outer_thread = await sync_to_async(outer_sync)()
    late.gate.set()
    assert await late.tasks[0] is outer_thread
    assert outer_thread in single_thread_executor_threads()
    # The task's own context no longer points at the finished frame.
    assert await late.tasks[0] is await here()


@pytest.mark.asgire_only
async def test_task_outliving_its_call_waits_for_a_busy_single_thread() -> None:
    loop = asyncio.get_running_loop()
    late = LateTasks()
    returned = asyncio.Event()
    release = threading.Event()

    def outer_sync() -> threading.Thread:
        async_to_sync(late.spawn)()
        loop.call_soon_threadsafe(returned.set)
        # Still holding the single thread: the spawned task must queue behind
        # this call, not be told that it would deadlock.
        assert release.wait(10)
        return threading.current_thread()

    outer = asyncio.ensure_future(sync_to_async(outer_sync)())
    await returned.wait()
    late.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    assert await late.tasks[0] is await outer


def test_task_spawned_while_its_frame_waits_runs_on_that_frame_thread() -> None:
    async def late(gate: asyncio.Event) -> threading.Thread:
        await gate.wait()
        return await here()

    async def middle() -> threading.Thread:
        gate = asyncio.Event()
        task = asyncio.ensure_future(late(gate))
        await asyncio.sleep(0)
        gate.set()
        return await task

    assert async_to_sync(middle)() is threading.current_thread()


def test_task_outliving_a_nested_call_runs_on_the_waiting_outer_frames_thread() -> None:
    late = LateTasks()

    def middle() -> None:
        async_to_sync(late.spawn)()  # returns while the task it started lives on

    async def outer() -> threading.Thread:
        await sync_to_async(middle)()
        # The nested call has returned; this outer one is still waiting.
        late.gate.set()
        return await late.tasks[0]

    assert async_to_sync(outer)() is threading.current_thread()


def test_tasks_without_the_callers_context_use_the_thread_that_started_the_loop() -> (
    None
):
    async def middle() -> threading.Thread:
        # A task created in an empty context cannot see the waiting sync
        # frame through its context; the loop itself still knows its starter.
        return await spawn_in_empty_context(here())

    assert async_to_sync(middle)() is threading.current_thread()


def test_thread_sensitive_context_outranks_the_loop_starter_thread() -> None:
    async def in_context() -> threading.Thread:
        async with ThreadSensitiveContext():
            return await here()

    async def middle() -> threading.Thread:
        return await spawn_in_empty_context(in_context())

    thread = async_to_sync(middle)()
    assert thread is not threading.current_thread()
    assert thread not in single_thread_executor_threads()
    assert not thread.is_alive()


def test_waiting_sync_frame_outranks_a_thread_sensitive_context() -> None:
    async def middle() -> threading.Thread:
        async with ThreadSensitiveContext():
            return await here()

    assert async_to_sync(middle)() is threading.current_thread()


# ThreadSensitiveContext without an executor


async def test_context_manager_returns_itself() -> None:
    context = ThreadSensitiveContext()
    async with context as entered:
        assert entered is context


async def test_calls_in_one_context_share_a_dedicated_thread() -> None:
    async with ThreadSensitiveContext():
        first = await here()
        second = await here()
        from_task = await asyncio.ensure_future(here())
    assert first is second is from_task
    assert first not in single_thread_executor_threads()
    assert first is not threading.current_thread()


async def test_each_context_gets_its_own_thread() -> None:
    barrier = threading.Barrier(2, timeout=10)

    def meet() -> threading.Thread:
        barrier.wait()
        return threading.current_thread()

    async def in_own_context() -> threading.Thread:
        async with ThreadSensitiveContext():
            return await sync_to_async(meet)()

    # Both calls must be running at once to pass the barrier.
    first, second = await asyncio.gather(in_own_context(), in_own_context())
    assert first is not second


async def test_outermost_context_wins_without_an_executor() -> None:
    async with ThreadSensitiveContext():
        outer = await here()
        async with ThreadSensitiveContext():
            inner = await here()
        after = await here()
    assert outer is inner is after


async def test_exiting_joins_the_context_thread() -> None:
    async with ThreadSensitiveContext():
        thread = await here()
        assert thread.is_alive()
    assert not thread.is_alive()


# Right after the call, the thread may still hold it; a while later,
# nothing does.
@pytest.mark.asgire_only
@pytest.mark.parametrize("pause", [False, True])
async def test_exiting_after_calls_that_returned_does_not_turn_the_loop(
    pause: bool,
) -> None:
    # The thread has nothing left to do but leave: it is joined at once.
    # Upstream joins every context's thread from a thread of its own.
    loop = asyncio.get_running_loop()
    turned: list[str] = []
    async with ThreadSensitiveContext():
        thread = await here()
        if pause:
            await asyncio.sleep(0.05)
            gc.collect()
        loop.call_soon(turned.append, "turned")
    assert turned == []
    assert not thread.is_alive()


@pytest.mark.asgire_only
async def test_with_joining_at_once_switched_off_the_exit_turns_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgiref._bridge import pool

    monkeypatch.setattr(pool, "JOIN_IDLE_AT_ONCE", False)
    loop = asyncio.get_running_loop()
    turned: list[str] = []
    async with ThreadSensitiveContext():
        thread = await here()
        loop.call_soon(turned.append, "turned")
    assert turned == ["turned"]
    assert not thread.is_alive()


async def test_exiting_after_a_call_that_raised_joins_the_thread() -> None:
    def fail() -> threading.Thread:
        raise LookupError(threading.current_thread())

    with pytest.raises(LookupError) as raised:
        async with ThreadSensitiveContext():
            await sync_to_async(fail)()
    thread = raised.value.args[0]
    assert thread not in single_thread_executor_threads()
    assert not thread.is_alive()


@pytest.mark.asgire_only
async def test_a_last_call_cancelled_before_it_started_keeps_the_loop_running() -> None:
    # The thread is still busy with an earlier call when the block exits: a
    # cancelled call queued behind it must not pass for one that returned.
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    released = threading.Event()

    def busy() -> bool:
        loop.call_soon_threadsafe(started.set)
        return released.wait(5)  # set from the loop, if it keeps running

    async with ThreadSensitiveContext():
        running = asyncio.ensure_future(sync_to_async(busy)())
        await started.wait()
        queued = asyncio.ensure_future(here())  # behind busy(), on its thread
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await asyncio.sleep(0.01)  # the cancelled call's report arrives
        loop.call_soon(released.set)
    assert await running is True


async def test_work_submitted_to_the_context_executor_keeps_the_loop_running() -> None:
    # The last sync_to_async call returned, but work handed to the context's
    # executor directly is still running, and needs the loop to finish.
    loop = asyncio.get_running_loop()
    released = threading.Event()

    def waits_for_the_loop() -> bool:
        return released.wait(5)  # set from the loop, if it keeps running

    async with ThreadSensitiveContext() as context:
        await here()
        executor = SyncToAsync.context_to_thread_executor[context]
        submitted = executor.submit(waits_for_the_loop)
        loop.call_soon(released.set)
    assert submitted.result(timeout=0) is True


async def test_context_without_calls_exits_cleanly() -> None:
    async with ThreadSensitiveContext():
        pass
    assert await here() in single_thread_executor_threads()


async def test_calls_after_the_context_go_back_to_the_single_thread() -> None:
    async with ThreadSensitiveContext():
        inside = await here()
    after = await here()
    assert after is not inside
    assert after in single_thread_executor_threads()


async def test_exiting_does_not_block_the_loop_while_the_thread_needs_it() -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = asyncio.Event()

    def needs_the_loop() -> str:
        loop.call_soon_threadsafe(started.set)

        async def wait_for_release() -> str:
            await release.wait()
            return "released"

        return async_to_sync(wait_for_release)()

    async with ThreadSensitiveContext():
        pending = asyncio.ensure_future(sync_to_async(needs_the_loop)())
        await started.wait()
        # Runs on the next loop iteration, i.e. only once the exit below
        # has yielded to the loop. A blocking exit would never get there.
        loop.call_soon(release.set)
    assert await pending == "released"


async def test_exiting_does_not_use_the_loops_default_executor() -> None:
    class Recording(ThreadPoolExecutor):
        submitted = 0

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            Recording.submitted += 1
            return super().submit(fn, *args, **kwargs)

    default = Recording(max_workers=1)
    asyncio.get_running_loop().set_default_executor(default)
    try:
        async with ThreadSensitiveContext():
            await here()
        assert Recording.submitted == 0
    finally:
        default.shutdown()


async def test_a_context_whose_exit_is_cancelled_still_lets_its_thread_end() -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    exiting = asyncio.Event()
    release = threading.Event()
    workers: list[threading.Thread] = []

    def work() -> None:
        workers.append(threading.current_thread())
        loop.call_soon_threadsafe(started.set)
        assert release.wait(10)

    async def block() -> None:
        async with ThreadSensitiveContext():
            busy = asyncio.ensure_future(sync_to_async(work)())
            await started.wait()
            busy.cancel()  # the context's thread stays inside work()
            with pytest.raises(asyncio.CancelledError):
                await busy
            exiting.set()

    task = asyncio.ensure_future(block())
    await exiting.wait()
    await asyncio.sleep(0)  # the block is now waiting for the thread to finish
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()
    # Blocking the loop is safe here: the thread needs nothing from it to end.
    workers[0].join(timeout=10)
    assert not workers[0].is_alive()
    await asyncio.sleep(0)  # what the thread reported on its way out arrives


def _fail() -> None:
    raise LookupError("the last call failed")


# With a failed last call, the exit cannot rely on the thread being idle.
@pytest.mark.parametrize("last_call_fails", [False, True])
async def test_a_context_whose_executor_was_shut_down_already_exits_cleanly(
    last_call_fails: bool,
) -> None:
    async with ThreadSensitiveContext() as context:
        worker = await here()
        if last_call_fails:
            with pytest.raises(LookupError):
                await sync_to_async(_fail)()
        SyncToAsync.context_to_thread_executor[context].shutdown()
    assert not worker.is_alive()
    assert await here() in single_thread_executor_threads()


async def test_an_executor_installed_for_a_context_runs_its_calls_until_exit() -> None:
    class InstalledPool(ThreadPoolExecutor):
        pass

    installed = InstalledPool(max_workers=1, thread_name_prefix="installed")
    async with ThreadSensitiveContext() as context:
        SyncToAsync.context_to_thread_executor[context] = installed
        first = await here()
        second = await here()
    assert first is second
    assert first.name.startswith("installed")
    # Exiting shut the executor down and joined its thread.
    assert not first.is_alive()
    with pytest.raises(RuntimeError):
        installed.submit(int)


# ThreadSensitiveContext with an executor


async def test_supplied_executor_runs_the_contexts_calls(
    executor: ThreadPoolExecutor,
) -> None:
    async with ThreadSensitiveContext(executor=executor):
        first = await here()
        from_task = await asyncio.ensure_future(here())
    assert in_supplied(first)
    assert first is from_task


async def test_supplied_executor_is_not_shut_down_on_exit(
    executor: ThreadPoolExecutor,
) -> None:
    async with ThreadSensitiveContext(executor=executor):
        inside = await here()
    assert executor.submit(current_thread).result(timeout=10) is inside
    # A new context can reuse the same executor.
    async with ThreadSensitiveContext(executor=executor):
        assert await here() is inside


async def test_supplied_executor_opens_a_nested_context_and_restores_the_parent(
    executor: ThreadPoolExecutor,
) -> None:
    async with ThreadSensitiveContext():
        parent = await here()
        async with ThreadSensitiveContext(executor=executor):
            nested = await here()
            async with ThreadSensitiveContext():
                # Without an executor the enclosing context still wins.
                innermost = await here()
        after = await here()
    assert in_supplied(nested)
    assert innermost is nested
    assert not in_supplied(parent)
    assert after is parent


async def test_top_level_placement_is_restored_after_a_supplied_executor(
    executor: ThreadPoolExecutor,
) -> None:
    async with ThreadSensitiveContext(executor=executor):
        await here()
    assert await here() in single_thread_executor_threads()


async def test_parent_is_restored_when_the_block_raises(
    executor: ThreadPoolExecutor,
) -> None:
    async with ThreadSensitiveContext():
        parent = await here()

        async def fails() -> None:
            async with ThreadSensitiveContext(executor=executor):
                await here()
                raise LookupError("inside")

        with pytest.raises(LookupError):
            await fails()
        assert await here() is parent


async def test_parent_is_restored_when_the_block_is_cancelled(
    executor: ThreadPoolExecutor,
) -> None:
    entered = asyncio.Event()

    async def body() -> tuple[threading.Thread, threading.Thread]:
        async with ThreadSensitiveContext():
            parent = await here()
            try:
                async with ThreadSensitiveContext(executor=executor):
                    await here()
                    entered.set()
                    await asyncio.sleep(60)
            except asyncio.CancelledError:
                return parent, await here()
        raise AssertionError("not cancelled")

    task = asyncio.ensure_future(body())
    await entered.wait()
    task.cancel()
    parent, after = await task
    assert after is parent


@pytest.mark.asgire_only
def test_a_context_refuses_an_executor_without_submit() -> None:
    # Upstream accepts it and fails on the first thread-sensitive call.
    with pytest.raises(
        TypeError, match=r"^executor must be a concurrent\.futures\.Executor, not "
    ):
        ThreadSensitiveContext(executor=object())  # ty: ignore[invalid-argument-type]


async def test_entering_a_context_with_an_executor_twice_is_refused(
    executor: ThreadPoolExecutor,
) -> None:
    context = ThreadSensitiveContext(executor=executor)
    async with context:
        with pytest.raises(RuntimeError, match=ALREADY_ENTERED):
            await context.__aenter__()
        assert in_supplied(await here())
    assert await here() in single_thread_executor_threads()


async def test_reentering_a_context_with_an_executor_is_refused(
    executor: ThreadPoolExecutor,
) -> None:
    context = ThreadSensitiveContext(executor=executor)
    async with context:
        pass
    with pytest.raises(RuntimeError, match=ENTERED_AGAIN):
        async with context:
            pass
    assert await here() in single_thread_executor_threads()


async def call_after_the_context_exits(
    executor: ThreadPoolExecutor, call: Callable[[], Awaitable[threading.Thread]]
) -> threading.Thread:
    """Await ``call()`` in a task started inside a context with ``executor``
    that is still running once the context has exited."""
    proceed = asyncio.Event()

    async def late() -> threading.Thread:
        await proceed.wait()
        return await call()

    async with ThreadSensitiveContext(executor=executor):
        straggler = asyncio.ensure_future(late())
        await asyncio.sleep(0)
    proceed.set()
    return await straggler


async def test_tasks_outliving_a_context_with_an_executor_cannot_call_sync_code(
    executor: ThreadPoolExecutor,
) -> None:
    with pytest.raises(RuntimeError, match=OUTLIVED):
        await call_after_the_context_exits(executor, here)


async def test_outliving_tasks_may_still_make_non_sensitive_calls(
    executor: ThreadPoolExecutor,
) -> None:
    assert not in_supplied(await call_after_the_context_exits(executor, anywhere))


def test_supplied_executor_outranks_a_waiting_sync_frame(
    executor: ThreadPoolExecutor,
) -> None:
    def current_executor() -> Any:
        return getattr(AsyncToSync.executors, "current", None)

    async def middle() -> dict[str, Any]:
        seen: dict[str, Any] = {"before": await here()}
        inherited = current_executor()
        async with ThreadSensitiveContext(executor=executor):
            seen["inside"] = await here()
            seen["hidden"] = current_executor() is None
        seen["after"] = await here()
        seen["restored"] = current_executor() is inherited
        return seen

    seen = async_to_sync(middle)()
    caller = threading.current_thread()
    assert seen["before"] is caller
    assert in_supplied(seen["inside"])
    assert seen["hidden"]
    assert seen["after"] is caller
    assert seen["restored"]


def test_nested_async_to_sync_inside_a_supplied_executor_returns_to_its_thread(
    executor: ThreadPoolExecutor,
) -> None:
    def in_supplied_thread() -> tuple[threading.Thread, threading.Thread]:
        async def deeper() -> threading.Thread:
            return await here()

        return threading.current_thread(), async_to_sync(deeper)()

    async def middle() -> tuple[threading.Thread, threading.Thread]:
        async with ThreadSensitiveContext(executor=executor):
            return await sync_to_async(in_supplied_thread)()

    outer, inner = async_to_sync(middle)()
    assert in_supplied(outer)
    assert inner is outer


# AsyncSingleThreadContext


def test_single_thread_context_returns_itself() -> None:
    context = AsyncSingleThreadContext()
    with context as entered:
        assert entered is context


async def loop_thread() -> tuple[threading.Thread, asyncio.AbstractEventLoop]:
    return threading.current_thread(), asyncio.get_running_loop()


def test_async_to_sync_calls_in_a_single_thread_context_share_one_thread() -> None:
    wrapper = async_to_sync(loop_thread)
    with AsyncSingleThreadContext():
        first, first_loop = wrapper()
        second, second_loop = async_to_sync(loop_thread)()
        assert first is second
        assert first is not threading.current_thread()
        assert first.is_alive()
    assert not first.is_alive()
    assert first_loop.is_closed()
    assert second_loop.is_closed()


def test_outermost_single_thread_context_wins() -> None:
    wrapper = async_to_sync(loop_thread)
    with AsyncSingleThreadContext():
        outer, _ = wrapper()
        with AsyncSingleThreadContext():
            inner, _ = wrapper()
        after_inner, _ = wrapper()
        assert after_inner.is_alive()
    assert outer is inner is after_inner
    assert not outer.is_alive()


def test_single_thread_context_without_calls_exits_cleanly() -> None:
    with AsyncSingleThreadContext():
        pass
    thread, loop = async_to_sync(loop_thread)()
    assert thread is not threading.current_thread()
    assert loop.is_closed()
    assert AsyncToSync.async_single_thread_context.get(None) is None


def test_single_thread_context_still_returns_sync_work_to_the_caller() -> None:
    async def middle() -> threading.Thread:
        return await here()

    with AsyncSingleThreadContext():
        assert async_to_sync(middle)() is threading.current_thread()


def test_single_thread_contexts_in_different_threads_are_independent(
    in_new_thread: Callable[..., Any],
) -> None:
    def body() -> threading.Thread:
        with AsyncSingleThreadContext():
            return async_to_sync(loop_thread)()[0]

    with AsyncSingleThreadContext():
        mine, _ = async_to_sync(loop_thread)()
        # Started outside this block: on 3.14+ a thread may begin in a copy of
        # its starter's context (thread_inherit_context), and be in the block.
        theirs = in_new_thread(lambda: contextvars.Context().run(body))
        assert theirs is not mine
        assert not theirs.is_alive()


def test_an_executor_installed_for_a_single_thread_context_runs_its_loop() -> None:
    installed = ThreadPoolExecutor(max_workers=1, thread_name_prefix="installed")
    with AsyncSingleThreadContext() as context:
        AsyncToSync.context_to_thread_executor[context] = installed
        first, _ = async_to_sync(loop_thread)()
        second, _ = async_to_sync(loop_thread)()
    assert first is second
    assert first.name.startswith("installed")
    # Exiting shut the executor down and joined its thread.
    assert not first.is_alive()
    with pytest.raises(RuntimeError):
        installed.submit(int)


@pytest.mark.asgire_only
def test_a_nested_call_on_a_single_thread_contexts_loop_hands_the_loop_back() -> None:
    # Upstream runs the context's calls one after another on its one thread,
    # so there the nested call would wait for the outer one forever.
    async def innermost() -> threading.Thread:
        return await spawn_in_empty_context(here())

    def middle() -> threading.Thread:
        return async_to_sync(innermost, force_new_loop=True)()

    async def outer() -> tuple[threading.Thread, threading.Thread]:
        nested = await sync_to_async(middle)()
        # A task without the caller's context finds the caller's thread
        # through the loop, which the nested call has handed back.
        after = await spawn_in_empty_context(here())
        return nested, after

    with AsyncSingleThreadContext():
        nested, after = async_to_sync(outer)()
    assert nested is after is threading.current_thread()
