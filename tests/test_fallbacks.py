"""The portable paths of ``asgiref.sync``, run here whatever the platform.

On Linux a crossing uses mechanisms that other platforms or Pythons lack: an
eventfd inbox per event loop, the direct hand-off of calls to a stdlib pool's
internals, and fresh loops built on a loop thread's kept selector (only when
the default policy makes selector loops: Windows' makes proactor loops, and
only when the selector loop makes its self-pipe as expected). Each is
switched off here in turn, where the module that reads it looks (see
docs/code-map.md), as macOS, Windows or another Python has it, and the same
representative crossings run through what is left, so that the paths those
platforms take are exercised on every run.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import thread as cf_thread
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("asgire")  # upstream runs lack the modules switched here

from asgiref import _compat  # after the skip
from asgiref._bridge import (
    fresh_loop,
    loop_inbox,
    loop_threads,
    pool,
    sync_call,
    threads,
)
from asgiref.sync import (
    AsyncSingleThreadContext,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

pytestmark = pytest.mark.asgire_only


class StandInLoop(asyncio.SelectorEventLoop):
    """What a default policy makes that is not the stock selector loop, as
    Windows' policy makes ``ProactorEventLoop``s."""


@dataclass(frozen=True)
class Paths:
    """What a crossing is expected to go through."""

    inbox: bool  # the loop's eventfd inbox brings outcomes back
    hand_off: bool  # calls are queued on a stdlib pool without submit()
    kept_loop: bool  # async_to_sync's fresh loops use a kept selector
    stand_in: bool  # the default policy makes StandInLoops


def _no_eventfd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_inbox, "HAS_EVENTFD", False)


def _no_hand_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "POOL_HAND_OFF", False)
    monkeypatch.setattr(threads, "POOL_HAND_OFF", False)


def _other_loop_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    if _compat.current_policy is None:
        pytest.skip("this Python has no event loop policies")
    policy = _compat.current_policy()
    monkeypatch.setattr(policy, "_loop_factory", StandInLoop, raising=False)


def _no_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a Python without event loop policies: loops come from
    # asyncio.events.new_event_loop() as they are.
    monkeypatch.setattr(_compat, "current_policy", None)


def _no_kept_self_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    # As where the selector loop makes its self-pipe otherwise.
    monkeypatch.setattr(fresh_loop, "KEPT_SELF_PIPE", False)


# Each mode: what it switches off, and the platform or Python it stands for.
MODES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], ...]] = {
    "nothing off": (),
    "no eventfd (macOS)": (_no_eventfd,),
    "proactor-like default loop, no eventfd (Windows)": (
        _no_eventfd,
        _other_loop_factory,
    ),
    "no pool hand-off (other pool internals)": (_no_hand_off,),
    "no event loop policies": (_no_policies,),
    "no kept self-pipe (another selector loop)": (_no_kept_self_pipe,),
    "all off": (_no_eventfd, _no_hand_off, _other_loop_factory),
}


@pytest.fixture(params=list(MODES))
def paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Paths:
    switches = MODES[request.param]
    for switch_off in switches:
        switch_off(monkeypatch)
    stand_in = _other_loop_factory in switches
    return Paths(
        inbox=loop_inbox.HAS_EVENTFD,
        hand_off=pool.POOL_HAND_OFF,
        # The stock policy makes selector loops except on Windows.
        kept_loop=sys.platform != "win32"
        and not stand_in
        and _no_policies not in switches
        and _no_kept_self_pipe not in switches,
        stand_in=stand_in,
    )


def _through_submit() -> bool:
    """Whether the running sync function was handed to its pool by
    ``submit()``: the pool then runs it from one of its ``_WorkItem``s."""
    frame = sys._getframe(1)
    while frame is not None:
        if type(frame.f_locals.get("self")) is cf_thread._WorkItem:
            return True
        frame = frame.f_back
    return False


def _inbox_open(loop: asyncio.AbstractEventLoop) -> bool:
    return id(loop) in loop_inbox.inboxes


async def test_sync_to_async_calls(paths: Paths) -> None:
    loop = asyncio.get_running_loop()
    own_thread = threading.current_thread()

    def double(value: int) -> tuple[int, threading.Thread, bool]:
        return value * 2, threading.current_thread(), _through_submit()

    # The loop's default pool exists after its first call (made through
    # run_in_executor either way).
    await sync_to_async(double, thread_sensitive=False)(0)

    sensitive = [await sync_to_async(double)(n) for n in range(3)]
    assert [value for value, _, _ in sensitive] == [0, 2, 4]
    (thread,) = {thread for _, thread, _ in sensitive}
    assert thread is not own_thread

    gathered = await asyncio.gather(
        *(sync_to_async(double, thread_sensitive=False)(n) for n in range(20))
    )
    assert [value for value, _, _ in gathered] == [n * 2 for n in range(20)]
    assert own_thread not in {thread for _, thread, _ in gathered}

    with ThreadPoolExecutor(max_workers=2) as pool:
        given = await sync_to_async(double, thread_sensitive=False, executor=pool)(5)
    assert given[0] == 10

    calls = [*sensitive, *gathered, given]
    assert {submitted for _, _, submitted in calls} == {not paths.hand_off}
    assert _inbox_open(loop) == paths.inbox


async def test_sync_code_calls_back_into_its_event_loop(paths: Paths) -> None:
    loop = asyncio.get_running_loop()

    async def where() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        await asyncio.sleep(0)
        return asyncio.get_running_loop(), threading.current_thread()

    def sync_part() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        return async_to_sync(where)()

    for thread_sensitive in (True, False):
        crossed = sync_to_async(sync_part, thread_sensitive=thread_sensitive)
        assert await crossed() == (loop, threading.current_thread())
    assert _inbox_open(loop) == paths.inbox


def test_async_to_sync_from_a_sync_thread(paths: Paths) -> None:
    caller = threading.current_thread()

    async def inner(
        value: int,
    ) -> tuple[int, asyncio.AbstractEventLoop, threading.Thread, threading.Thread]:
        back_on = await sync_to_async(threading.current_thread)()
        elsewhere = await sync_to_async(
            threading.current_thread, thread_sensitive=False
        )()
        return value + 1, asyncio.get_running_loop(), back_on, elsewhere

    first = async_to_sync(inner)(1)
    second = async_to_sync(inner)(2)
    assert (first[0], second[0]) == (2, 3)
    for _, loop, back_on, elsewhere in (first, second):
        assert loop.is_closed()
        assert back_on is caller  # thread-sensitive: the calling thread
        assert elsewhere is not caller
        assert isinstance(loop, loop_threads.LoopThreadEventLoop) == paths.kept_loop
        assert isinstance(loop, StandInLoop) == paths.stand_in
    assert first[1] is not second[1]  # a fresh loop for every call


def test_async_to_sync_errors_and_context_come_back(paths: Paths) -> None:
    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen")

    async def fail() -> None:
        raise LookupError("from the loop")

    async def set_it() -> None:
        seen.set("set in the loop")

    with pytest.raises(LookupError, match="from the loop"):
        async_to_sync(fail)()
    async_to_sync(set_it)()
    assert seen.get() == "set in the loop"


async def test_sync_to_async_errors_and_context_come_back(paths: Paths) -> None:
    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen")

    def fail() -> None:
        raise LookupError("from the thread")

    def set_it() -> None:
        seen.set("set in the thread")

    for thread_sensitive in (True, False):
        with pytest.raises(LookupError, match="from the thread"):
            await sync_to_async(fail, thread_sensitive=thread_sensitive)()
        seen.set("")
        await sync_to_async(set_it, thread_sensitive=thread_sensitive)()
        assert seen.get() == "set in the thread"


def test_single_thread_context_keeps_one_loop(paths: Paths) -> None:
    async def where() -> tuple[asyncio.AbstractEventLoop, threading.Thread, bool]:
        loop = asyncio.get_running_loop()
        worker = await sync_to_async(threading.current_thread)()
        return loop, worker, _inbox_open(loop)

    with AsyncSingleThreadContext():
        first_loop, first_worker, inbox = async_to_sync(where)()
        second_loop, second_worker, _ = async_to_sync(where)()
        assert (second_loop, second_worker) == (first_loop, first_worker)
        assert first_worker is threading.current_thread()
        assert not first_loop.is_closed()
        assert inbox == paths.inbox
        assert isinstance(first_loop, StandInLoop) == paths.stand_in
    assert first_loop.is_closed()


async def test_thread_sensitive_context_has_its_own_thread(paths: Paths) -> None:
    current = sync_to_async(threading.current_thread)
    outside = await current()
    async with ThreadSensitiveContext():
        first = await current()
        assert await current() is first
    assert first is not outside
    assert await current() is outside


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_a_cancelled_call_finishes_and_the_next_one_runs(
    paths: Paths, thread_sensitive: bool
) -> None:
    loop = asyncio.get_running_loop()
    running, finished = asyncio.Event(), asyncio.Event()
    release = threading.Event()

    def held() -> None:
        loop.call_soon_threadsafe(running.set)
        release.wait(timeout=10)
        loop.call_soon_threadsafe(finished.set)

    task = asyncio.ensure_future(
        sync_to_async(held, thread_sensitive=thread_sensitive)()
    )
    await asyncio.wait_for(running.wait(), 10)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The abandoned call still finishes; its outcome is dropped.
    await asyncio.wait_for(finished.wait(), 10)
    assert await sync_to_async(abs, thread_sensitive=thread_sensitive)(-1) == 1


async def test_a_call_its_pool_drops_unrun_is_cancelled(paths: Paths) -> None:
    loop = asyncio.get_running_loop()
    running = asyncio.Event()
    release = threading.Event()

    def held() -> str:
        loop.call_soon_threadsafe(running.set)
        release.wait(timeout=10)
        return "held"

    pool = ThreadPoolExecutor(max_workers=1)
    first = asyncio.ensure_future(
        sync_to_async(held, thread_sensitive=False, executor=pool)()
    )
    await asyncio.wait_for(running.wait(), 10)
    queued = asyncio.ensure_future(
        sync_to_async(abs, thread_sensitive=False, executor=pool)(-1)
    )
    await asyncio.sleep(0)  # queued on the pool, behind the held call
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await first == "held"
    pool.shutdown()


async def test_a_loop_whose_default_executor_is_unknown_gets_calls_by_submit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As for a loop class that keeps its default executor elsewhere.
    monkeypatch.setattr(sync_call, "LOOP_DEFAULT_EXECUTOR", False)
    crossed = sync_to_async(_through_submit, thread_sensitive=False)
    assert await crossed()
    assert await crossed()  # the default pool existing makes no difference


async def test_an_unknown_default_executor_is_handed_work_in_the_callers_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unknown may be a pool the user set, whose submit() reads the context.
    monkeypatch.setattr(sync_call, "LOOP_DEFAULT_EXECUTOR", False)
    route: contextvars.ContextVar[str] = contextvars.ContextVar("route")
    seen: list[str | None] = []

    class Recording(ThreadPoolExecutor):
        def submit(  # type: ignore[override]
            self, fn: Callable[..., object], /, *args: object, **kwargs: object
        ) -> Any:
            seen.append(route.get(None))
            return super().submit(fn, *args, **kwargs)

    pool = Recording(max_workers=1)
    asyncio.get_running_loop().set_default_executor(pool)
    route.set("request")
    assert await sync_to_async(abs, thread_sensitive=False)(-1) == 1
    assert seen == ["request"]
    pool.shutdown()
