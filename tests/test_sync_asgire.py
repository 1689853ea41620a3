"""Where asgire's sync core deliberately goes beyond upstream asgiref 3.13.0,
and hooks that both must honour."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import platform
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from asgiref.sync import (
    AsyncSingleThreadContext,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

# asgire's own modules, used only by asgire_only tests (upstream lacks them).
with contextlib.suppress(ImportError):
    from asgiref import _compat
    from asgiref._bridge import (
        loop_inbox,
        loop_threads,
        outer_loop,
        pool,
        waiter,
    )


async def loop_and_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    return asyncio.get_running_loop(), threading.current_thread()


@pytest.mark.asgire_only
def test_async_to_sync_reuses_an_idle_loop_thread_but_never_a_loop() -> None:
    wrapper = async_to_sync(loop_and_thread)
    first_loop, first_thread = wrapper()
    second_loop, second_thread = wrapper()
    assert first_thread is second_thread
    assert first_loop is not second_loop
    assert first_loop.is_closed()
    assert second_loop.is_closed()


@pytest.mark.asgire_only
def test_plain_thread_locals_on_a_reused_loop_thread_outlive_the_call() -> None:
    # As on any pooled thread. Local(thread_critical=True) data does not
    # (test_thread_critical_values_a_call_sets_are_gone_in_the_next_call).
    kept = threading.local()

    async def count() -> int:
        kept.calls = getattr(kept, "calls", 0) + 1
        return kept.calls

    assert [async_to_sync(count)() for _ in range(3)] == [1, 2, 3]


@pytest.mark.asgire_only
def test_loop_threads_are_named_and_later_thread_tracers_miss_them() -> None:
    # threading.settrace() reaches threads started after it; an idle loop
    # thread started before goes on without the tracer (upstream starts a
    # thread per call, so every call would be traced).
    async def where() -> tuple[threading.Thread, object]:
        return threading.current_thread(), sys.gettrace()

    thread, _ = async_to_sync(where)()
    assert re.fullmatch(r"asgire-loop-\d+", thread.name)

    def tracer(frame: object, event: str, arg: object) -> None:
        return None

    previous = threading.gettrace()
    threading.settrace(tracer)
    try:
        again, trace = async_to_sync(where)()
    finally:
        threading.settrace(previous)
    assert again is thread
    assert trace is not tracer


@pytest.mark.asgire_only
async def test_a_task_resumes_in_the_callback_that_brings_its_outcome() -> None:
    # Not in a callback of its own on the loop's next pass, as after an
    # asyncio Future: a crossing takes one loop pass fewer, so the task runs
    # ahead of work queued meanwhile.
    async def call() -> object:
        await sync_to_async(int, thread_sensitive=False)()
        resumer = sys._getframe().f_back
        return None if resumer is None else resumer.f_code

    assert await asyncio.ensure_future(call()) is waiter.Waiter.wake.__code__


@pytest.mark.asgire_only
@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
async def test_async_to_sync_back_to_a_running_loop_starts_its_task_eagerly() -> None:
    # The coroutine's first step runs in the callback that creates its task,
    # not on the loop's next pass.
    async def first_step() -> list[str]:
        return [frame.name for frame in traceback.extract_stack()]

    names = await sync_to_async(async_to_sync(first_step))()
    assert outer_loop.start_task.__name__ in names


@pytest.mark.asgire_only
def test_single_thread_context_keeps_one_loop_open_until_it_exits() -> None:
    wrapper = async_to_sync(loop_and_thread)
    with AsyncSingleThreadContext():
        first_loop, _ = wrapper()
        second_loop, _ = wrapper()
        assert first_loop is second_loop
        assert not first_loop.is_closed()
    assert first_loop.is_closed()


def _worker_done() -> None:
    """Wait until the thread-sensitive worker has returned from its last call:
    its frame holds that call's loop until then, a moment after the caller
    resumed."""
    SyncToAsync.single_thread_executor.submit(lambda: None).result(timeout=10)
    gc.collect()


def assert_leaves_no_inbox_open(
    action: Callable[[], object], times: int, eventually: Callable[..., bool]
) -> None:
    """Run ``action`` once to warm up, then ``times`` more: neither the
    inboxes nor the process's descriptors may grow."""
    action()
    _worker_done()
    inboxes = len(loop_inbox.inboxes)
    descriptors = len(os.listdir("/proc/self/fd"))
    for _ in range(times):
        action()
    # Not _worker_done() here: a worker that kept its last loop until its
    # next call would keep that loop's inbox open, and must fail.
    assert eventually(lambda: len(loop_inbox.inboxes) <= inboxes)
    # Fewer is fine: an idle loop thread may end and close its own.
    assert eventually(lambda: len(os.listdir("/proc/self/fd")) <= descriptors)


@pytest.mark.asgire_only
@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="loop inboxes use eventfd")
def test_single_thread_context_loop_has_an_inbox_until_it_closes(
    eventually: Callable[..., bool],
) -> None:
    async def running_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def run_block() -> None:
        with AsyncSingleThreadContext():
            loop = async_to_sync(running_loop)()
            assert id(loop) in loop_inbox.inboxes
            assert async_to_sync(running_loop)() is loop

    assert_leaves_no_inbox_open(run_block, times=5, eventually=eventually)


@pytest.mark.asgire_only
def test_single_thread_context_cancels_leftover_tasks_and_closes_generators() -> None:
    events: list[str] = []

    async def ticker() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("task cancelled")
            raise

    async def numbers() -> Any:
        try:
            yield 1
            yield 2
        finally:
            events.append("generator closed")

    async def start_background_work() -> None:
        asyncio.get_running_loop().create_task(ticker())
        generator = numbers()
        await generator.__anext__()
        holder.append(generator)

    holder: list[Any] = []
    with AsyncSingleThreadContext():
        async_to_sync(start_background_work)()
        assert events == []  # still running between calls
    assert sorted(events) == ["generator closed", "task cancelled"]


@pytest.mark.asgire_only
def test_single_thread_context_collected_on_its_own_loop_thread_closes_the_loop() -> (
    None
):
    loops: list[asyncio.AbstractEventLoop] = []
    dropped: list[asyncio.Event] = []

    async def collect_when_dropped(event: asyncio.Event) -> None:
        await event.wait()
        # This task's context still refers to the block's context, so the
        # collection runs after it, in an empty context of its own.
        asyncio.get_running_loop().call_soon(gc.collect, context=contextvars.Context())

    async def start() -> None:
        loop = asyncio.get_running_loop()
        loops.append(loop)
        dropped.append(asyncio.Event())
        # No reference kept: it would keep the block's context alive.
        loop.create_task(collect_when_dropped(dropped[0]))  # noqa: RUF006

    def enter_and_abandon() -> None:
        AsyncSingleThreadContext().__enter__()  # never exited
        async_to_sync(start)()

    # Collections from any other thread would take the context away from the
    # loop's thread; only the one above may run.
    gc.disable()
    try:
        contextvars.Context().run(enter_and_abandon)
        loops[0].call_soon_threadsafe(dropped[0].set)
        deadline = time.monotonic() + 10
        while not loops[0].is_closed() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gc.enable()
    # Stopping the loop from its own thread must not wait for itself.
    assert loops[0].is_closed()


@pytest.mark.asgire_only
def test_idle_loop_thread_handed_a_job_as_it_times_out_runs_the_job() -> None:
    cache = loop_threads.LoopThreads()
    cache.idle_timeout = 0  # each wait for the next job times out at once
    ran: list[threading.Thread] = []

    def job() -> Callable[[], None]:
        ran.append(threading.current_thread())
        return lambda: None

    class HandOverOnRecheck:
        """The cache's lock; when the idle thread comes back for it after
        timing out, a caller takes that thread off the idle list first."""

        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._taken_by_worker = 0

        def __enter__(self) -> None:
            if threading.current_thread().name.startswith("asgire-loop"):
                self._taken_by_worker += 1
                # 1: going idle after the first job; 2: the recheck.
                if self._taken_by_worker == 2:
                    cache.run(job)
            self._lock.acquire()

        def __exit__(self, *_: object) -> None:
            self._lock.release()

    cache._lock = HandOverOnRecheck()  # ty: ignore[invalid-assignment]
    cache.run(job)
    deadline = time.monotonic() + 10
    while len(ran) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(ran) == 2
    assert ran[0] is ran[1]  # the handed-over job ran on the same thread
    ran[0].join(timeout=10)
    assert not ran[0].is_alive()


@pytest.mark.asgire_only
@pytest.mark.skipif(
    sys.platform == "win32",
    reason="Windows' default loop is the proactor loop, which keeps no selector",
)
def test_a_loop_thread_keeps_its_selector_and_self_pipe_until_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = loop_threads.LoopThreads()
    cache.idle_timeout = 1.0  # long enough for the second call on a slow machine
    monkeypatch.setattr(loop_threads, "loop_thread_cache", cache)
    wrapper = async_to_sync(loop_and_thread)
    first_loop, thread = wrapper()
    second_loop, same_thread = wrapper()
    assert same_thread is thread
    assert first_loop is not second_loop
    assert isinstance(first_loop, loop_threads.LoopThreadEventLoop)
    assert isinstance(second_loop, loop_threads.LoopThreadEventLoop)
    (parts,) = cache._all_parts
    assert first_loop._parts is parts
    assert second_loop._parts is parts
    thread.join(timeout=10)  # idles out
    assert not thread.is_alive()
    assert cache._all_parts == set()
    assert parts.selector.get_map() is None  # closed
    assert [sock.fileno() for sock in parts.self_pipe] == [-1, -1]


@pytest.mark.asgire_only
@pytest.mark.parametrize("then", ["call", "exit"])
def test_an_interrupt_from_a_task_between_calls_goes_to_the_blocks_next_step(
    then: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task a call left running raises KeyboardInterrupt after that call
    returned: the block's next call raises it (or its exit does, when no call
    comes), and the call after that runs on a new loop."""
    interrupt = KeyboardInterrupt()
    returned = threading.Event()
    raising = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def interrupt_soon() -> None:
        await asyncio.to_thread(returned.wait, 5)
        raising.set()
        raise interrupt

    async def leave_an_interrupting_task() -> None:
        loops.append(asyncio.get_running_loop())
        leftover = asyncio.ensure_future(interrupt_soon())
        leftover.add_done_callback(lambda done: done.exception())

    async def running_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def start_the_block() -> None:
        async_to_sync(leave_an_interrupting_task)()
        returned.set()
        assert raising.wait(timeout=5)

    if then == "call":
        with AsyncSingleThreadContext():
            start_the_block()
            with pytest.raises(KeyboardInterrupt) as raised:
                async_to_sync(running_loop)()
            loop = async_to_sync(running_loop)()
            assert loop is not loops[0]
            assert async_to_sync(running_loop)() is loop
    else:
        with pytest.raises(KeyboardInterrupt) as raised, AsyncSingleThreadContext():
            start_the_block()
    assert raised.value is interrupt
    assert loops[0].is_closed()
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


@pytest.mark.asgire_only
@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="loop inboxes use eventfd")
def test_an_interrupt_cutting_a_pass_short_leaves_the_inbox_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interrupt that escapes a pass before the inbox's reader ran leaves
    that reader queued; the clean-up's pass queues it again, and the second
    run finds nothing to read. That is no error."""
    posted: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def interrupt() -> None:
        raise KeyboardInterrupt

    async def escape_with_a_post_pending() -> None:
        loop = asyncio.get_running_loop()
        assert id(loop) in loop_inbox.inboxes
        # The task's first step is queued ahead of the reader's run.
        tasks.append(asyncio.ensure_future(interrupt()))
        loop_inbox.call_soon_threadsafe(loop, posted.append, "ran")
        await asyncio.sleep(60)

    with AsyncSingleThreadContext(), pytest.raises(KeyboardInterrupt):
        async_to_sync(escape_with_a_post_pending)()
    assert posted == ["ran"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


@pytest.mark.asgire_only
def test_loop_client_survives_between_calls_in_a_single_thread_context() -> None:
    """The pattern the context exists for: a client bound to its loop."""

    class LoopBoundClient:
        def __init__(self) -> None:
            self.loop = asyncio.get_running_loop()
            self.queue: asyncio.Queue[int] = asyncio.Queue()

        async def send(self, value: int) -> int:
            assert asyncio.get_running_loop() is self.loop
            await self.queue.put(value)
            return self.queue.qsize()

    clients: list[LoopBoundClient] = []

    async def send(value: int) -> int:
        if not clients:
            clients.append(LoopBoundClient())
        return await clients[0].send(value)

    with AsyncSingleThreadContext():
        assert [async_to_sync(send)(n) for n in range(3)] == [1, 2, 3]


def test_overridden_thread_handler_wraps_each_call() -> None:
    """Channels' DatabaseSyncToAsync overrides thread_handler to clean up
    around every call; the override must run on the worker thread."""
    seen: list[tuple[str, str]] = []

    class CleaningSyncToAsync(SyncToAsync[[int], int]):
        def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(("before", threading.current_thread().name))
            try:
                return super().thread_handler(loop, *args, **kwargs)
            finally:
                seen.append(("after", threading.current_thread().name))

    def double(value: int) -> int:
        seen.append(("call", threading.current_thread().name))
        return value * 2

    async def main() -> int:
        return await CleaningSyncToAsync(double)(21)

    assert asyncio.run(main()) == 42
    assert [step for step, _ in seen] == ["before", "call", "after"]
    assert len({name for _, name in seen}) == 1
    assert seen[0][1] != threading.current_thread().name


def test_overridden_thread_handler_sees_the_caller_exception() -> None:
    captured: list[Any] = []

    class Recording(SyncToAsync[[], None]):
        def thread_handler(self, loop: Any, exc_info: Any, *args: Any) -> Any:
            captured.append(exc_info[1])
            return super().thread_handler(loop, exc_info, *args)

    async def main() -> None:
        try:
            raise KeyError("handled")
        except KeyError:
            await Recording(lambda: None)()

    asyncio.run(main())
    assert isinstance(captured[0], KeyError)


@pytest.mark.asgire_only
def test_a_report_that_came_in_time_is_kept_when_the_wait_gives_up() -> None:
    # The waiting thread gives up once the loop has closed; a report that
    # arrived just before then is still the call's outcome.
    outcome: Any = waiter.Outcome(None)
    outcome.set_result("reported")
    outcome.fail_unreported(RuntimeError("closed"))
    assert outcome.result() == "reported"
    unreported: Any = waiter.Outcome(None)
    unreported.fail_unreported(RuntimeError("closed"))
    with pytest.raises(RuntimeError, match="closed"):
        unreported.result()


# -- fork() -----------------------------------------------------------------------


@pytest.mark.asgire_only
async def test_forked_child_gets_fresh_threads_but_keeps_the_executors_it_was_given(
    monkeypatch: pytest.MonkeyPatch, in_forked_child: Callable[..., str]
) -> None:
    current = sync_to_async(threading.current_thread)
    # Replaced before it ever started its thread, so it works in the child.
    replacement = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replacement")
    monkeypatch.setattr(SyncToAsync, "single_thread_executor", replacement)
    supplied = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supplied")
    try:
        async with ThreadSensitiveContext():
            parent_thread = await current()  # the context's thread now exists
            in_context = contextvars.copy_context()
            async with ThreadSensitiveContext(executor=supplied) as given:

                def child() -> None:
                    # The context's thread did not survive the fork: its
                    # calls get a new one.
                    thread = in_context.run(asyncio.run, current())
                    assert thread is not parent_thread
                    # The replacement serves calls outside any context.
                    top = contextvars.Context().run(lambda: asyncio.run(current()))
                    assert top.name.startswith("replacement")
                    # What the caller supplied is left as it was.
                    assert SyncToAsync.single_thread_executor is replacement
                    assert SyncToAsync.context_to_thread_executor[given] is supplied

                forked = sync_to_async(in_forked_child, thread_sensitive=False)
                assert await forked(child) == ""
    finally:
        supplied.shutdown()
        replacement.shutdown()


@pytest.mark.asgire_only
def test_forked_child_closes_what_the_parents_loop_threads_kept(
    in_forked_child: Callable[..., str],
) -> None:
    async_to_sync(loop_and_thread)()  # leaves an idle loop thread
    inherited = set(loop_threads.loop_thread_cache._all_parts)
    assert inherited

    def child() -> None:
        assert loop_threads.loop_thread_cache._all_parts == set()
        for parts in inherited:
            assert parts.selector.get_map() is None
            assert [sock.fileno() for sock in parts.self_pipe] == [-1, -1]
        loop, _ = async_to_sync(loop_and_thread)()
        assert loop.is_closed()

    assert in_forked_child(child) == ""


@pytest.mark.asgire_only
def test_a_loop_thread_forking_keeps_its_own_selector_and_pipe_in_the_child(
    in_forked_child: Callable[..., str],
) -> None:
    async def fork_from_the_loop() -> str:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, loop_threads.LoopThreadEventLoop)

        def child() -> None:
            assert loop._parts in loop_threads.loop_thread_cache._all_parts
            # Still open: sending raises on a closed socket (asyncio's own
            # self-pipe write would swallow that).
            loop._parts.self_pipe[1].send(b"\0")

        return in_forked_child(child)

    assert async_to_sync(fork_from_the_loop)() == ""


@pytest.mark.asgire_only
def test_forked_child_inside_a_single_thread_context_gets_its_own_loop(
    in_forked_child: Callable[..., str],
) -> None:
    wrapper = async_to_sync(loop_and_thread)
    with AsyncSingleThreadContext():
        parent_loop, parent_thread = wrapper()

        def child() -> None:
            first_loop, first_thread = wrapper()
            second_loop, second_thread = wrapper()
            assert first_loop is not parent_loop
            assert first_thread is not parent_thread
            # Still one loop and thread for the block, now the child's own.
            assert (second_loop, second_thread) == (first_loop, first_thread)

        assert in_forked_child(child) == ""


@pytest.mark.asgire_only
def test_threads_sharing_a_single_thread_context_may_start_its_loop_together() -> None:
    barrier = threading.Barrier(2, timeout=10)
    loops: list[asyncio.AbstractEventLoop] = []

    async def which_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def first_call(context: contextvars.Context) -> None:
        barrier.wait()
        loops.append(context.run(async_to_sync(which_loop)))

    with AsyncSingleThreadContext():
        threads = [
            threading.Thread(target=first_call, args=(contextvars.copy_context(),))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads)
        assert len(loops) == 2
        assert loops[0] is loops[1]


@pytest.mark.asgire_only
def test_calls_on_a_shared_loop_may_finish_out_of_order() -> None:
    # Thread A's call starts first and finishes first, while thread B's call
    # is still waiting on the same loop: tasks that lost their context must
    # keep reaching B's thread, and none may reach A's finished one later.
    here = sync_to_async(threading.current_thread)
    b_started = threading.Event()
    a_done = threading.Event()

    def in_empty_context(coro: Any) -> asyncio.Future[Any]:
        return contextvars.Context().run(asyncio.ensure_future, coro)

    async def first() -> None:
        second_thread.start()
        while not b_started.is_set():  # noqa: ASYNC110  # a thread sets it
            await asyncio.sleep(0.005)

    async def second() -> threading.Thread:
        b_started.set()
        while not a_done.is_set():  # noqa: ASYNC110  # a thread sets it
            await asyncio.sleep(0.005)
        return await in_empty_context(here())

    results: dict[str, threading.Thread] = {}

    with AsyncSingleThreadContext():
        copied = contextvars.copy_context()

        def call_second() -> None:
            results["ran on"] = copied.run(async_to_sync(second))
            results["caller"] = threading.current_thread()

        second_thread = threading.Thread(target=call_second)
        async_to_sync(first)()
        a_done.set()
        second_thread.join(10)
        assert results["ran on"] is results["caller"]

        async def later() -> threading.Thread:
            return await in_empty_context(here())

        # With no other call waiting, the loop points at this call's thread.
        assert async_to_sync(later)() is threading.current_thread()


@pytest.mark.asgire_only
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
async def test_async_to_sync_whose_task_is_cancelled_before_it_starts_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Upstream waits forever here: its caller only wakes up when the
    # coroutine reports, and a task cancelled before its first step never does.
    loop = asyncio.get_running_loop()
    # Python 3.12+ would start the task eagerly, leaving no moment to cancel
    # it before its first step; with a task factory it is started as usual.
    loop.set_task_factory(
        lambda loop, coro, **kwargs: asyncio.Task(coro, loop=loop, **kwargs)
    )
    queued = threading.Event()
    schedule = loop.call_soon_threadsafe

    def watched(callback: Any, *args: Any, **kwargs: Any) -> Any:
        handle = schedule(callback, *args, **kwargs)
        queued.set()
        return handle

    async def never_started() -> None:
        raise AssertionError("the coroutine ran")

    def sync_part() -> str:
        with pytest.raises(asyncio.CancelledError):
            async_to_sync(never_started)()
        return "woken"

    monkeypatch.setattr(loop, "call_soon_threadsafe", watched)
    caller = asyncio.ensure_future(sync_to_async(sync_part, thread_sensitive=False)())
    await asyncio.sleep(0)  # the call is handed to a worker thread
    known = asyncio.all_tasks(loop)
    # Hold the loop until the worker has asked it to start the task, then
    # cancel that task in the same loop iteration it is created in.
    assert queued.wait(10)
    loop.call_soon(lambda: [task.cancel() for task in asyncio.all_tasks(loop) - known])
    assert await caller == "woken"


@pytest.fixture
def selector_loop() -> Any:
    loop = asyncio.SelectorEventLoop()
    yield loop
    loop.close()


def inbox_of(loop: asyncio.AbstractEventLoop) -> Any:
    loop_inbox.open_inbox(loop)
    return loop_inbox.inboxes[id(loop)]()


needs_eventfd = pytest.mark.skipif(
    not hasattr(os, "eventfd"), reason="loop inboxes use eventfd (Linux)"
)


@pytest.mark.asgire_only
@needs_eventfd
def test_an_inbox_runs_the_callbacks_after_one_that_raises(
    selector_loop: asyncio.AbstractEventLoop,
) -> None:
    reported: list[dict[str, Any]] = []
    selector_loop.set_exception_handler(lambda loop, context: reported.append(context))
    inbox = inbox_of(selector_loop)
    ran: list[int] = []
    failure = ValueError("from a callback")

    def fail() -> None:
        raise failure

    inbox.post(selector_loop, fail, ())
    inbox.post(selector_loop, ran.append, (1,))
    selector_loop.run_until_complete(asyncio.sleep(0.05))
    assert ran == [1]
    assert [context["exception"] for context in reported] == [failure]
    assert "fail" in reported[0]["message"]


@pytest.mark.asgire_only
@needs_eventfd
def test_an_inbox_left_with_callbacks_by_an_interrupt_runs_them_next_time(
    selector_loop: asyncio.AbstractEventLoop,
) -> None:
    inbox = inbox_of(selector_loop)
    ran: list[int] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    inbox.post(selector_loop, interrupt, ())
    inbox.post(selector_loop, ran.append, (1,))
    with pytest.raises(KeyboardInterrupt):
        selector_loop.run_until_complete(asyncio.sleep(10))
    assert ran == []
    # Nothing else posts: only the inbox signalling itself again wakes it.
    selector_loop.run_until_complete(asyncio.sleep(0.05))
    assert ran == [1]


@pytest.mark.asgire_only
@needs_eventfd
def test_an_inbox_refuses_callbacks_once_its_loop_is_closed() -> None:
    loop = asyncio.SelectorEventLoop()
    inbox = inbox_of(loop)
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        inbox.post(loop, print, ())


@pytest.mark.asgire_only
@needs_eventfd
def test_a_loop_that_takes_no_readers_is_still_crossed_without_an_inbox() -> None:
    class NoReaders(asyncio.SelectorEventLoop):
        def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
            raise NotImplementedError

    loop = NoReaders()
    try:
        descriptors = len(os.listdir("/proc/self/fd"))
        assert loop.run_until_complete(sync_to_async(abs)(-1)) == 1
        assert (
            loop.run_until_complete(sync_to_async(abs, thread_sensitive=False)(-2)) == 2
        )
        assert id(loop) not in loop_inbox.inboxes
        # Fewer is fine: an idle loop thread may end and close its own.
        assert len(os.listdir("/proc/self/fd")) <= descriptors
    finally:
        loop.close()


@pytest.mark.asgire_only
@needs_eventfd
def test_a_freed_loop_releases_its_inbox(eventually: Callable[..., bool]) -> None:
    def crossed_loop() -> None:
        async def cross() -> None:
            await sync_to_async(abs)(-1)

        asyncio.run(cross())

    assert_leaves_no_inbox_open(crossed_loop, times=20, eventually=eventually)


@pytest.mark.asgire_only
@pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="CPython's stdlib pool"
)
async def test_calls_go_straight_onto_the_stdlib_pool_on_this_python() -> None:
    # The direct hand-off depends on the shape of concurrent.futures.thread;
    # a CPython release that changes it must show here, not silently make
    # every crossing take the slower submit() path.
    assert _compat.POOL_HAND_OFF
    call = sync_to_async(lambda: None, thread_sensitive=False)
    await call()  # the first one makes the loop's default executor
    await call()
    loop: Any = asyncio.get_running_loop()
    default = loop._default_executor
    # Only the direct hand-off swaps in the lighter idle count.
    assert type(default._idle_semaphore) is pool.IdleCount


class _Item:
    def run(self, ctx: object = None) -> None:
        pass


def _worker(executor: Any, queue: Any) -> None:
    queue.get().run()
    executor._idle_semaphore.release()


def _worker_without_run(executor: Any, queue: Any) -> None:
    fn, args = queue.get()
    fn(*args)
    executor._idle_semaphore.release()


class _ItemWantingAKeyword:
    def run(self, *, ctx: object) -> None:
        pass


@pytest.mark.asgire_only
@pytest.mark.parametrize(
    ("module", "fits"),
    [
        (SimpleNamespace(_WorkItem=_Item, _worker=_worker), True),
        (SimpleNamespace(_WorkItem=_Item, _worker=_worker_without_run), False),
        (SimpleNamespace(_WorkItem=_ItemWantingAKeyword, _worker=_worker), False),
        (SimpleNamespace(_worker=_worker), False),
        (SimpleNamespace(_WorkItem=_Item), False),
    ],
    ids=["fits", "worker-runs-tuples", "keyword-only-run", "no-item", "no-worker"],
)
def test_the_pool_probe_refuses_workers_of_another_shape(
    module: SimpleNamespace, fits: bool
) -> None:
    assert _compat.workers_call_run(module) is fits
