"""The threads asgire starts begin in an empty context.

From Python 3.14 a new thread may begin in a copy of its starter's context
(``sys.flags.thread_inherit_context``, on by default in free-threaded
builds). The ``inheriting_threads`` fixture makes every thread started during
a test do that, on any Python, so that these tests check the same thing
everywhere. A thread started for a crossing must not carry the caller's
values (routing variables, Local data) into code that runs outside any call,
nor keep them alive. Upstream's threads do inherit then (its pool threads are
started by ``submit()`` in the caller's context): those tests are asgire-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
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
    from asgiref._bridge import loop_threads, pool, threads
    from asgiref._bridge.loop_threads import LoopThreads
    from asgiref._bridge.threads import one_thread_pool

probe: contextvars.ContextVar[object] = contextvars.ContextVar("probe")


@pytest.fixture
def inheriting_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every thread started from now on runs in a copy of its starter's
    context, as with ``-X thread_inherit_context=1`` on 3.14+."""
    start = threading.Thread.start

    def start_in_a_copy(self: threading.Thread) -> None:
        vars(self)["run"] = functools.partial(contextvars.copy_context().run, self.run)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", start_in_a_copy)


def test_the_fixture_makes_threads_inherit(inheriting_threads: None) -> None:
    seen: list[object] = []
    probe.set("starter")
    thread = threading.Thread(target=lambda: seen.append(probe.get(None)))
    thread.start()
    thread.join(10)
    assert seen == ["starter"]


class Probing(SyncToAsync[[], object]):
    """Records, on the worker, what the context there holds outside the call
    (thread_handler runs there; Channels' override closes connections)."""

    seen: list[tuple[object, object, object]]

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(
            (
                probe.get(None),
                SyncToAsync.thread_sensitive_context.get(None),
                SyncToAsync.deadlock_context.get(None),
            )
        )
        return super().thread_handler(loop, *args, **kwargs)


def probing(*, thread_sensitive: bool = True) -> Probing:
    wrapper = Probing(lambda: probe.get(None), thread_sensitive=thread_sensitive)
    wrapper.seen = []
    return wrapper


@pytest.fixture(params=["direct", "submit", "instrumented-submit", "no-pool-internals"])
def hand_off(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How a call reaches a stdlib pool: queued directly, through the pool's
    own submit(), through a submit() that a tool has wrapped, or through
    submit() on a Python whose pools lack the internals asgire relies on."""
    if request.param != "direct":
        monkeypatch.setattr(pool, "POOL_HAND_OFF", False)
    if request.param == "no-pool-internals":
        monkeypatch.setattr(threads, "POOL_HAND_OFF", False)
    if request.param == "instrumented-submit":
        submit = ThreadPoolExecutor.submit

        def wrapped(
            self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any
        ) -> Any:
            return submit(self, fn, *args, **kwargs)

        monkeypatch.setattr(ThreadPoolExecutor, "submit", wrapped)
    return request.param


@pytest.mark.asgire_only
async def test_a_thread_sensitive_contexts_thread_begins_empty(
    inheriting_threads: None, hand_off: str
) -> None:
    probe.set("caller")
    wrapper = probing()
    async with ThreadSensitiveContext():
        assert await wrapper() == "caller"  # handed over with the call
    assert wrapper.seen == [(None, None, None)]


@pytest.mark.asgire_only
async def test_the_process_wide_threads_replacement_begins_empty(
    inheriting_threads: None, hand_off: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after fork(), where the child gets a new one.
    monkeypatch.setattr(SyncToAsync, "single_thread_executor", one_thread_pool())
    probe.set("caller")
    wrapper = probing()
    assert await wrapper() == "caller"
    SyncToAsync.single_thread_executor.shutdown()
    assert wrapper.seen == [(None, None, None)]


@pytest.mark.asgire_only
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "submit"])
@pytest.mark.parametrize("default", ["made-by-the-loop", "given"])
def test_the_loops_default_executors_threads_begin_empty(
    inheriting_threads: None,
    monkeypatch: pytest.MonkeyPatch,
    direct: bool,
    default: str,
) -> None:
    if not direct:
        monkeypatch.setattr(pool, "POOL_HAND_OFF", False)
    wrapper = probing(thread_sensitive=False)

    async def main() -> object:
        if default == "given":
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max_workers=1)
            )
        probe.set("caller")
        return await wrapper()

    assert asyncio.run(main()) == "caller"
    assert wrapper.seen == [(None, None, None)]


class Value:
    pass


@pytest.fixture
def own_loop_threads(monkeypatch: pytest.MonkeyPatch) -> LoopThreads:
    """Loop threads of the test's own, so that a call starts a new one."""
    cache = LoopThreads()
    cache.idle_timeout = 5.0  # idle through the test
    monkeypatch.setattr(loop_threads, "loop_thread_cache", cache)
    return cache


def collected(ref: weakref.ref[Any], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return ref() is None


@pytest.mark.asgire_only
def test_a_loop_thread_keeps_nothing_of_the_call_that_started_it(
    inheriting_threads: None, own_loop_threads: LoopThreads
) -> None:
    async def nothing() -> None:
        pass

    def call() -> weakref.ref[Value]:
        value = Value()
        probe.set(value)
        async_to_sync(nothing)()
        return weakref.ref(value)

    value = contextvars.Context().run(call)
    assert own_loop_threads._started == 1
    assert own_loop_threads._idle  # the thread that ran the call waits for more
    assert collected(value)


@pytest.mark.asgire_only
def test_a_block_dropped_unexited_closes_its_loop_though_threads_inherit(
    inheriting_threads: None,
) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def note_loop() -> None:
        loops.append(asyncio.get_running_loop())

    def enter_and_forget() -> None:
        AsyncSingleThreadContext().__enter__()
        async_to_sync(note_loop)()

    contextvars.Context().run(enter_and_forget)
    deadline = time.monotonic() + 10
    while not loops[0].is_closed() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert loops[0].is_closed()


@pytest.mark.asgire_only
async def test_the_thread_retiring_an_unknown_executor_begins_empty(
    inheriting_threads: None,
) -> None:
    seen: list[object] = []

    class Recording(ThreadPoolExecutor):
        def shutdown(self, wait: bool = True, **kwargs: Any) -> None:
            seen.append(probe.get(None))
            super().shutdown(wait, **kwargs)

    probe.set("caller")
    async with ThreadSensitiveContext() as context:
        SyncToAsync.context_to_thread_executor[context] = Recording(max_workers=1)
    assert seen == [None]


async def test_a_default_executor_of_another_kind_is_handed_the_call() -> None:
    submitted: list[object] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    pool = Recording(max_workers=1)
    asyncio.get_running_loop().set_default_executor(pool)
    try:
        assert await sync_to_async(lambda: "ran", thread_sensitive=False)() == "ran"
    finally:
        pool.shutdown()
    assert len(submitted) == 1
