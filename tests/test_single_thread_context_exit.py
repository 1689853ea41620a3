"""Leaving an ``AsyncSingleThreadContext``: the calls other threads still run
in it finish first, a call made afterwards runs as outside any block, and the
exit is ordered against the loop's start."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from asgiref.sync import (
    AsyncSingleThreadContext,
    AsyncToSync,
    async_to_sync,
    sync_to_async,
)


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def in_thread(
    context: contextvars.Context, call: Callable[[], Any]
) -> tuple[threading.Thread, Future[Any]]:
    """Run ``call`` in ``context`` on a new thread; its outcome in the future."""
    outcome: Future[Any] = Future()

    def target() -> None:
        try:
            outcome.set_result(context.run(call))
        except BaseException as exc:
            outcome.set_exception(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_leaving_a_block_waits_for_another_threads_call_still_running_in_it() -> None:
    events: list[str] = []
    started = threading.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.2)
        events.append("call finished")
        return "result"

    with AsyncSingleThreadContext():
        # Another thread in the block (as on 3.14+ with thread_inherit_context).
        thread, outcome = in_thread(contextvars.copy_context(), async_to_sync(slow))
        assert started.wait(10)
    events.append("block left")
    assert outcome.result(timeout=10) == "result"  # not cancelled
    assert events == ["call finished", "block left"]
    thread.join(10)


def test_a_call_made_after_its_block_exited_runs_as_outside_any_block() -> None:
    with AsyncSingleThreadContext():
        inside = async_to_sync(running_loop)()
        kept = contextvars.copy_context()  # names the block
    after = kept.run(async_to_sync(running_loop))
    assert after is not inside
    assert after.is_closed()  # a loop of its own, closed with the call


def test_a_block_whose_executor_was_shut_down_raises_its_error() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    executor.shutdown()
    with AsyncSingleThreadContext() as block:
        AsyncToSync.context_to_thread_executor[block] = executor
        with pytest.raises(RuntimeError, match="after shutdown"):
            async_to_sync(running_loop)()


@pytest.mark.timeout(20)
def test_a_block_whose_loop_cannot_be_made_raises_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse() -> asyncio.AbstractEventLoop:
        raise OSError("no event loop today")

    monkeypatch.setattr(asyncio.events, "new_event_loop", refuse)
    with AsyncSingleThreadContext(), pytest.raises(OSError, match="no event loop"):
        async_to_sync(running_loop)()


@pytest.mark.asgire_only
def test_a_blocks_exit_waits_for_a_first_call_that_is_starting_its_loop() -> None:
    # Upstream's exit shuts the block's executor down under the starting
    # call, which then fails.
    starting = threading.Event()

    class SlowToStart(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            starting.set()
            time.sleep(0.2)  # the block's exit comes meanwhile
            return super().submit(fn, *args, **kwargs)

    with AsyncSingleThreadContext() as block:
        AsyncToSync.context_to_thread_executor[block] = SlowToStart(max_workers=1)
        thread, outcome = in_thread(
            contextvars.copy_context(), async_to_sync(running_loop)
        )
        assert starting.wait(10)
    loop = outcome.result(timeout=10)
    assert loop.is_closed()  # the call ran in the block's loop, closed on exit
    thread.join(10)


# Interpreter exit, run in-process: tests/test_exit.py runs the real thing.


@pytest.fixture
def fresh_exit_state(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Loop threads of the test's own, and the exit state put back
    afterwards."""
    from asgiref._bridge import at_exit, loop_threads, shared_loop

    cache = loop_threads.LoopThreads()
    monkeypatch.setattr(loop_threads, "loop_thread_cache", cache)
    monkeypatch.setattr(shared_loop, "_exiting", False)
    return SimpleNamespace(finish_at_exit=at_exit.finish, loop_threads=cache)


@pytest.mark.asgire_only
def test_exit_closes_an_open_blocks_loop_and_refuses_later_calls(
    fresh_exit_state: Any,
) -> None:
    with AsyncSingleThreadContext():
        loop = async_to_sync(running_loop)()
        fresh_exit_state.finish_at_exit()
        assert loop.is_closed()
        with pytest.raises(RuntimeError, match="after interpreter shutdown"):
            async_to_sync(running_loop)()
    with AsyncSingleThreadContext(), pytest.raises(RuntimeError, match="shutdown"):
        async_to_sync(running_loop)()


@pytest.mark.asgire_only
def test_exit_waits_for_a_call_running_on_a_loop_thread(fresh_exit_state: Any) -> None:
    events: list[str] = []
    started = threading.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(0.2)
        events.append("call finished")

    thread, outcome = in_thread(contextvars.Context(), async_to_sync(slow))
    assert started.wait(10)
    fresh_exit_state.loop_threads.close()
    events.append("exit went on")
    assert events == ["call finished", "exit went on"]
    outcome.result(timeout=10)
    thread.join(10)


class Ready:
    """An awaitable that is not a coroutine."""

    def __await__(self) -> Generator[Any, None, str]:
        return "ready"
        yield


async def coroutine_function() -> str:
    return "ready"


def make_ready() -> Awaitable[str]:
    return Ready()


@pytest.mark.asgire_only
@pytest.mark.parametrize("function", [coroutine_function, make_ready])
def test_a_call_refused_at_exit_leaves_no_coroutine_unawaited(
    fresh_exit_state: Any, function: Callable[[], Awaitable[str]]
) -> None:
    fresh_exit_state.loop_threads.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-async-marked"
        wrapper = async_to_sync(function)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="after interpreter shutdown"):
            wrapper()
        gc.collect()
    assert [w for w in caught if "never awaited" in str(w.message)] == []


class Interrupted(BaseException):
    """Stands in for a KeyboardInterrupt at a chosen point."""


@pytest.mark.asgire_only
def test_a_job_withdrawn_by_an_interrupted_caller_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgiref._bridge import loop_threads

    handed: list[Callable[[], Callable[[], object]]] = []

    class InterruptedOnHandOver:
        def run(self, job: Callable[[], Callable[[], object]]) -> None:
            handed.append(job)
            raise Interrupted

    ran: list[str] = []

    async def work() -> None:
        ran.append("work")

    monkeypatch.setattr(loop_threads, "loop_thread_cache", InterruptedOnHandOver())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Interrupted):
            async_to_sync(work)()
        # The loop thread comes to it late: the job does nothing.
        handed[0]()()
        gc.collect()
    assert ran == []
    assert [w for w in caught if "never awaited" in str(w.message)] == []


@pytest.mark.asgire_only
@pytest.mark.parametrize("thread_took_it", [False, True], ids=["withdrawn", "taken"])
def test_a_loop_thread_interrupted_while_starting_runs_its_job_at_most_once(
    monkeypatch: pytest.MonkeyPatch, thread_took_it: bool
) -> None:
    from asgiref._bridge import loop_threads

    cache = loop_threads.LoopThreads()
    cache.idle_timeout = 0.05  # the thread ends soon after its job
    started: list[threading.Thread] = []
    ran = threading.Event()

    def interrupted_start(thread: threading.Thread) -> None:
        started.append(thread)
        if thread_took_it:
            thread.start()
            assert ran.wait(10)
        raise Interrupted

    def job() -> Callable[[], object]:
        ran.set()
        return lambda: None

    monkeypatch.setattr(loop_threads, "start_thread", interrupted_start)
    with pytest.raises(Interrupted):
        cache.run(job)
    if not thread_took_it:
        started[0].start()  # it starts after all, and finds the job withdrawn
    started[0].join(10)
    assert not started[0].is_alive()
    assert cache._busy == 0
    assert ran.is_set() is thread_took_it
    cache.close()  # nothing to wait for


@pytest.mark.asgire_only
@pytest.mark.parametrize("reported_first", [False, True], ids=["later", "already"])
def test_a_caller_that_stopped_waiting_is_told_of_the_report_once_it_comes(
    reported_first: bool,
) -> None:
    from asgiref._bridge.waiter import Outcome

    told: list[str] = []
    outcome: Any = Outcome(lambda: told.append("waiting caller"))
    if reported_first:
        outcome.set_result(1)
    outcome.on_report(lambda: told.append("instead"))
    if not reported_first:
        outcome.set_result(1)
    assert told[-1] == "instead"
    assert told.count("instead") == 1


@pytest.mark.asgire_only
def test_a_call_is_counted_out_of_its_blocks_loop_once() -> None:
    from asgiref._bridge.shared_loop import SharedLoop

    shared = SharedLoop(threading.Lock(), object())
    shared.calls = 1
    entered = [None]
    # The report and the caller that stopped waiting may both come.
    shared.leave(entered)
    shared.leave(entered)
    assert shared.calls == 0


@pytest.mark.asgire_only
async def test_a_call_back_to_a_loop_that_cannot_take_it_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgiref._bridge import outer_loop

    post = outer_loop.call_soon_threadsafe

    def closing(loop: Any, callback: Any, *args: Any) -> None:
        if args and args[0] is outer_loop.start_task:
            raise RuntimeError("Event loop is closed")  # it closed just now
        post(loop, callback, *args)

    async def nothing() -> None:
        pass

    def call_back() -> str:
        with pytest.raises(RuntimeError, match="closed"):
            async_to_sync(nothing)()
        return "failed at once"

    monkeypatch.setattr(outer_loop, "call_soon_threadsafe", closing)
    assert await sync_to_async(call_back)() == "failed at once"
