"""Cancelling a task that is waiting for sync code run by ``sync_to_async``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

BOTH_MODES = pytest.mark.parametrize(
    "thread_sensitive", [True, False], ids=["sensitive", "non-sensitive"]
)


@dataclass
class Scenario:
    """A sync function that calls back into async code, instrumented.

    ``inner`` is the coroutine the sync function runs through
    ``async_to_sync``; ``after_inner`` decides what the sync function does
    with the outcome. The sync function then holds until ``proceed`` is set,
    so the test can check the cancelled task is still waiting for it.
    """

    loop: asyncio.AbstractEventLoop
    inner_swallows: bool = False
    after_inner: Callable[[Any, BaseException | None], Any] = lambda result, error: (
        result
    )
    events: list[str] = field(default_factory=list)
    inner_started: asyncio.Event = field(default_factory=asyncio.Event)
    sync_holding: asyncio.Event = field(default_factory=asyncio.Event)
    proceed: threading.Event = field(default_factory=threading.Event)
    sync_saw: BaseException | None = None

    async def inner(self) -> str:
        self.inner_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.events.append("inner cancelled")
            if self.inner_swallows:
                return "inner absorbed the cancellation"
            raise
        return "inner finished normally"

    def sync_function(self) -> Any:
        result: Any = None
        error: BaseException | None = None
        try:
            result = async_to_sync(self.inner)()
        except BaseException as exc:
            error = exc
        self.sync_saw = error
        self.loop.call_soon_threadsafe(self.sync_holding.set)
        assert self.proceed.wait(timeout=10)
        self.events.append("sync function returned")
        return self.after_inner(result, error)


@dataclass
class HeldFunction:
    """A sync function that tells the loop it has started, then holds until
    ``release`` is set, and tells the loop when it has finished."""

    loop: asyncio.AbstractEventLoop
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: threading.Event = field(default_factory=threading.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self) -> str:
        self.loop.call_soon_threadsafe(self.started.set)
        try:
            assert self.release.wait(timeout=10)
            return "finished"
        finally:
            self.loop.call_soon_threadsafe(self.finished.set)


async def start_held_call(
    thread_sensitive: bool = True,
) -> tuple[HeldFunction, asyncio.Future[str]]:
    """Call a ``HeldFunction`` through ``sync_to_async`` in a task; return
    both once the function has started."""
    held = HeldFunction(asyncio.get_running_loop())
    task = asyncio.ensure_future(
        sync_to_async(held, thread_sensitive=thread_sensitive)()
    )
    await held.started.wait()
    return held, task


async def cancel_while_inner_runs(
    scenario: Scenario,
    thread_sensitive: bool = True,
    *,
    call: Callable[[], Awaitable[Any]] | None = None,
) -> asyncio.Future[Any]:
    """Start the scenario (through ``call``, if given), cancel it once the
    inner coroutine runs, and check the task keeps waiting for the sync
    function before letting it finish."""
    if call is None:
        call = sync_to_async(scenario.sync_function, thread_sensitive=thread_sensitive)
    task = asyncio.ensure_future(call())
    await scenario.inner_started.wait()
    task.cancel()
    try:
        await asyncio.wait_for(scenario.sync_holding.wait(), timeout=10)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done(), "the task stopped waiting for the sync function"
    finally:
        scenario.proceed.set()
    await asyncio.wait([task], timeout=10)
    assert task.done()
    return task


async def cancel_without_waiting(
    task: asyncio.Future[Any], release: threading.Event, message: str | None = None
) -> None:
    """Cancel ``task`` (with ``message``) and check it ends cancelled while its
    sync function is still held; then let the sync function go on."""
    assert task.cancel(message)
    try:
        await asyncio.wait([task], timeout=10)
        assert task.cancelled()
    finally:
        release.set()


def reraise(result: Any, error: BaseException | None) -> Any:
    if error is not None:
        raise error
    return result


@BOTH_MODES
async def test_cancellation_reaches_the_inner_coroutine_and_the_task_is_cancelled(
    thread_sensitive: bool,
) -> None:
    scenario = Scenario(asyncio.get_running_loop(), after_inner=reraise)
    task = await cancel_while_inner_runs(scenario, thread_sensitive)
    assert task.cancelled()
    assert isinstance(scenario.sync_saw, asyncio.CancelledError)
    assert scenario.events == ["inner cancelled", "sync function returned"]


async def test_sync_function_that_absorbs_the_cancellation_decides_the_result() -> None:
    def absorb(result: Any, error: BaseException | None) -> str:
        assert isinstance(error, asyncio.CancelledError)
        return "sync absorbed it"

    scenario = Scenario(asyncio.get_running_loop(), after_inner=absorb)
    task = await cancel_while_inner_runs(scenario)
    assert not task.cancelled()
    assert task.result() == "sync absorbed it"
    assert scenario.events == ["inner cancelled", "sync function returned"]


@BOTH_MODES
async def test_inner_coroutine_that_absorbs_the_cancellation_lets_the_task_finish(
    thread_sensitive: bool,
) -> None:
    scenario = Scenario(
        asyncio.get_running_loop(),
        inner_swallows=True,
        after_inner=lambda result, error: f"sync got: {result}",
    )
    task = await cancel_while_inner_runs(scenario, thread_sensitive)
    assert scenario.sync_saw is None
    assert not task.cancelled()
    assert task.result() == "sync got: inner absorbed the cancellation"
    assert scenario.events == ["inner cancelled", "sync function returned"]


async def test_error_raised_after_an_absorbed_cancellation_reaches_the_task() -> None:
    def fail(result: Any, error: BaseException | None) -> None:
        raise LookupError(result)

    scenario = Scenario(
        asyncio.get_running_loop(), inner_swallows=True, after_inner=fail
    )
    task = await cancel_while_inner_runs(scenario)
    assert not task.cancelled()
    error = task.exception()
    assert isinstance(error, LookupError)
    assert error.args == ("inner absorbed the cancellation",)


async def test_cancellation_inside_a_thread_sensitive_context() -> None:
    scenario = Scenario(asyncio.get_running_loop(), after_inner=reraise)

    async def in_context() -> Any:
        async with ThreadSensitiveContext():
            return await sync_to_async(scenario.sync_function)()

    task = await cancel_while_inner_runs(scenario, call=in_context)
    assert task.cancelled()
    assert scenario.events == ["inner cancelled", "sync function returned"]


@BOTH_MODES
async def test_without_async_callbacks_the_task_is_cancelled_at_once(
    thread_sensitive: bool,
) -> None:
    held, task = await start_held_call(thread_sensitive)
    # The task does not wait for the sync function, which keeps running.
    await cancel_without_waiting(task, held.release)
    await asyncio.wait_for(held.finished.wait(), timeout=10)


async def test_cancelled_thread_sensitive_call_leaves_the_single_thread_usable() -> (
    None
):
    held, task = await start_held_call()
    await cancel_without_waiting(task, held.release)
    # The abandoned call finishes in the background and the single thread
    # goes on serving new calls.
    assert await sync_to_async(lambda: "usable")() == "usable"


async def test_cancelling_before_the_sync_function_starts() -> None:
    occupy, occupier = await start_held_call()
    ran: list[str] = []
    queued = asyncio.ensure_future(sync_to_async(ran.append)("queued ran"))
    await asyncio.sleep(0)
    await cancel_without_waiting(queued, occupy.release)
    await occupier
    # The cancelled call was still queued, so it never starts.
    assert await sync_to_async(lambda: list(ran))() == []


async def test_cancellation_through_nested_frames_waits_for_the_innermost_sync_code() -> (
    None
):
    loop = asyncio.get_running_loop()
    events: list[Any] = []
    innermost_started = asyncio.Event()
    release = threading.Event()

    def innermost() -> str:
        loop.call_soon_threadsafe(innermost_started.set)
        assert release.wait(timeout=10)
        events.append("innermost returned")
        return "innermost"

    async def middle() -> str:
        try:
            return await sync_to_async(innermost)()
        except asyncio.CancelledError:
            events.append("middle cancelled")
            raise

    def outer() -> str:
        try:
            return async_to_sync(middle)()
        except asyncio.CancelledError:
            events.append("outer saw the cancellation")
            raise

    task = asyncio.ensure_future(sync_to_async(outer)())
    await innermost_started.wait()
    task.cancel()
    try:
        for _ in range(10):
            await asyncio.sleep(0)
        # The innermost sync code runs on the outer function's thread, which
        # cannot return before it does; the task keeps waiting for both.
        assert not task.done()
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == [
        "middle cancelled",
        "innermost returned",
        "outer saw the cancellation",
    ]


async def test_cancelled_again_as_the_inner_coroutine_returns_stops_waiting() -> None:
    loop = asyncio.get_running_loop()
    inner_started = asyncio.Event()
    proceed = threading.Event()
    caller: list[asyncio.Task[Any]] = []
    events: list[str] = []

    async def inner() -> str:
        inner_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            # The caller is cancelled a second time just as this coroutine
            # returns after absorbing the first cancellation.
            loop.call_soon(caller[0].cancel)
            return "absorbed"
        return "finished"

    def sync_function() -> str:
        result = async_to_sync(inner)()
        events.append(result)
        assert proceed.wait(timeout=10)
        return result

    task = asyncio.ensure_future(sync_to_async(sync_function)())
    caller.append(task)
    await inner_started.wait()
    # The second cancellation ends the wait for the sync function.
    await cancel_without_waiting(task, proceed)
    # The abandoned sync function still finishes on the single thread.
    assert await sync_to_async(lambda: list(events))() == ["absorbed"]


@BOTH_MODES
async def test_cancelling_twice_in_one_step_cancels_the_task_once(
    thread_sensitive: bool,
) -> None:
    held, task = await start_held_call(thread_sensitive)
    assert task.cancel()
    # Again, before the task has seen the first.
    await cancel_without_waiting(task, held.release)


@pytest.mark.asgire_only
@BOTH_MODES
async def test_the_cancellation_message_reaches_the_awaiting_code(
    thread_sensitive: bool,
) -> None:
    # Upstream raises a CancelledError of its own there, without the message.
    held = HeldFunction(asyncio.get_running_loop())
    seen: list[tuple[Any, ...]] = []

    async def caller() -> None:
        try:
            await sync_to_async(held, thread_sensitive=thread_sensitive)()
        except asyncio.CancelledError as cancelled:
            seen.append(cancelled.args)
            raise

    task = asyncio.ensure_future(caller())
    await held.started.wait()
    await cancel_without_waiting(task, held.release, "shutting down")
    assert seen == [("shutting down",)]
