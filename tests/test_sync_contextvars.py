"""Context variables and the exception being handled, across both bridges."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import weakref
from typing import Any

import pytest

from asgiref.local import Local
from asgiref.sync import (
    AsyncSingleThreadContext,
    _restore_context,
    async_to_sync,
    sync_to_async,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
user: contextvars.ContextVar[str] = contextvars.ContextVar("user")

BOTH_MODES = pytest.mark.parametrize(
    "thread_sensitive", [True, False], ids=["sensitive", "non-sensitive"]
)


def read(var: contextvars.ContextVar[str]) -> str:
    return var.get("<unset>")


# sync_to_async


@BOTH_MODES
async def test_sync_code_sees_the_callers_context(thread_sensitive: bool) -> None:
    request_id.set("r1")
    assert (
        await sync_to_async(read, thread_sensitive=thread_sensitive)(request_id) == "r1"
    )


@BOTH_MODES
async def test_changes_made_in_sync_code_reach_the_caller(
    thread_sensitive: bool,
) -> None:
    request_id.set("before")

    def change() -> None:
        request_id.set("after")
        user.set("alice")

    await sync_to_async(change, thread_sensitive=thread_sensitive)()
    assert (read(request_id), read(user)) == ("after", "alice")


async def test_values_reset_in_sync_code_are_reset_for_the_caller() -> None:
    request_id.set("kept")

    def set_and_reset() -> None:
        token = request_id.set("temporary")
        request_id.reset(token)

    await sync_to_async(set_and_reset)()
    assert read(request_id) == "kept"


@BOTH_MODES
async def test_a_finished_call_keeps_none_of_its_callers_values_alive(
    thread_sensitive: bool,
) -> None:
    held: contextvars.ContextVar[object] = contextvars.ContextVar("held")

    class Value:
        pass

    async def caller() -> weakref.ref[Value]:
        value = Value()
        held.set(value)
        await sync_to_async(read, thread_sensitive=thread_sensitive)(request_id)
        return weakref.ref(value)

    # The first call on this loop, in a task whose context goes with it.
    task = asyncio.create_task(caller())
    value_ref = await task
    del task
    # The loop's handle that resumed this task still holds the finished one,
    # and the worker may not have let go of the call yet.
    for _ in range(200):
        await asyncio.sleep(0.005)
        gc.collect()
        if value_ref() is None:
            break
    assert value_ref() is None


async def test_changes_reach_only_the_awaiting_task() -> None:
    request_id.set("parent")
    changed = asyncio.Event()

    def change() -> None:
        request_id.set("changed")

    async def changer() -> str:
        await sync_to_async(change)()
        changed.set()
        return read(request_id)

    async def bystander() -> str:
        await changed.wait()
        return read(request_id)

    assert await asyncio.gather(changer(), bystander()) == ["changed", "parent"]
    assert read(request_id) == "parent"


@BOTH_MODES
async def test_changes_made_before_an_exception_still_reach_the_caller(
    thread_sensitive: bool,
) -> None:
    def change_then_fail() -> None:
        request_id.set("changed")
        raise LookupError

    with pytest.raises(LookupError):
        await sync_to_async(change_then_fail, thread_sensitive=thread_sensitive)()
    assert read(request_id) == "changed"


@BOTH_MODES
async def test_given_context_is_used_instead_of_the_callers(
    thread_sensitive: bool,
) -> None:
    request_id.set("caller")
    given = contextvars.Context()
    given.run(user.set, "from given")

    def inspect_and_change() -> tuple[str, str]:
        seen = read(request_id), read(user)
        request_id.set("changed in given")
        return seen

    wrapper = sync_to_async(
        inspect_and_change, thread_sensitive=thread_sensitive, context=given
    )
    assert await wrapper() == ("<unset>", "from given")
    # Changes land in the given context, not in the caller's.
    assert given[request_id] == "changed in given"
    assert read(request_id) == "caller"


async def test_given_context_accumulates_changes_across_calls() -> None:
    given = contextvars.Context()
    counter: contextvars.ContextVar[int] = contextvars.ContextVar("counter", default=0)

    def bump() -> int:
        counter.set(counter.get() + 1)
        return counter.get()

    wrapper = sync_to_async(bump, context=given)
    assert [await wrapper(), await wrapper(), await wrapper()] == [1, 2, 3]
    assert given[counter] == 3
    assert counter.get() == 0


async def test_thread_sensitive_calls_may_share_a_given_context_at_once() -> None:
    # The single thread runs them one after the other, so the context is never
    # entered twice at once: the second call must not enter it on the loop.
    given = contextvars.Context()
    first_running = threading.Event()
    release = threading.Event()

    def first() -> str:
        first_running.set()
        assert release.wait(10)
        return "first"

    def second() -> str:
        return "second"

    first_call = asyncio.ensure_future(sync_to_async(first, context=given)())
    await asyncio.to_thread(first_running.wait, 10)
    second_call = asyncio.ensure_future(sync_to_async(second, context=given)())
    await asyncio.sleep(0.01)  # the second call is made and queued
    release.set()
    assert [await first_call, await second_call] == ["first", "second"]


# async_to_sync


def test_async_code_sees_the_sync_callers_context() -> None:
    request_id.set("sync caller")

    async def inner() -> str:
        return read(request_id)

    assert async_to_sync(inner)() == "sync caller"


def test_changes_made_in_async_code_reach_the_sync_caller() -> None:
    request_id.set("before")

    async def change() -> None:
        await asyncio.sleep(0)
        request_id.set("after")
        user.set("bob")

    async_to_sync(change)()
    assert (read(request_id), read(user)) == ("after", "bob")


def test_changes_made_before_an_async_exception_still_reach_the_caller() -> None:
    async def change_then_fail() -> None:
        request_id.set("changed")
        raise LookupError

    with pytest.raises(LookupError):
        async_to_sync(change_then_fail)()
    assert read(request_id) == "changed"


def test_changes_made_in_tasks_spawned_by_the_coroutine_stay_there() -> None:
    request_id.set("caller")

    async def spawned() -> None:
        request_id.set("task")

    async def inner() -> None:
        await asyncio.ensure_future(spawned())

    async_to_sync(inner)()
    assert read(request_id) == "caller"


async def test_context_flows_both_ways_through_the_outer_loop() -> None:
    request_id.set("top")

    async def innermost() -> str:
        seen = read(request_id)
        request_id.set("innermost")
        return seen

    def middle() -> tuple[str, str]:
        seen = async_to_sync(innermost)()
        return seen, read(request_id)

    assert await sync_to_async(middle)() == ("top", "innermost")
    assert read(request_id) == "innermost"


@pytest.mark.parametrize(
    "single_thread",
    # Upstream starts a new loop for each call in the block, without the
    # factory the first call set.
    [False, pytest.param(True, marks=pytest.mark.asgire_only)],
    ids=["outer", "shared"],
)
def test_a_task_factory_on_the_loop_runs_in_the_sync_callers_context(
    single_thread: bool,
) -> None:
    # Tracing tools install task factories that read the current span from a
    # context variable when a task is created.
    seen: list[str] = []

    def factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        seen.append(read(request_id))
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def set_factory() -> None:
        asyncio.get_running_loop().set_task_factory(factory)

    async def inner() -> str:
        return read(request_id)

    def sync_code() -> str:
        request_id.set("from sync code")
        return async_to_sync(inner)()

    async def outer() -> str:
        await set_factory()
        return await sync_to_async(sync_code)()

    def run_in_shared_loop() -> str:
        with AsyncSingleThreadContext():
            async_to_sync(set_factory)()
            return sync_code()

    if single_thread:
        result = contextvars.Context().run(run_in_shared_loop)
    else:
        result = asyncio.run(outer())
    assert result == "from sync code"
    assert seen[0] == "from sync code"  # later ones: the loop shutting down


def test_context_flows_through_nested_frames() -> None:
    request_id.set("0")

    def bump_sync() -> None:
        request_id.set(read(request_id) + ",sync")

    async def level2() -> None:
        request_id.set(read(request_id) + ",async2")
        await sync_to_async(bump_sync)()

    def level1() -> None:
        request_id.set(read(request_id) + ",sync1")
        async_to_sync(level2)()

    async def level0() -> None:
        request_id.set(read(request_id) + ",async0")
        await sync_to_async(level1)()
        await sync_to_async(bump_sync, thread_sensitive=False)()

    async_to_sync(level0)()
    assert read(request_id) == "0,async0,sync1,async2,sync,sync"


def test_concurrent_sync_callers_keep_their_own_context() -> None:
    barrier = threading.Barrier(3, timeout=10)

    async def echo_later() -> str:
        await asyncio.sleep(0)
        return read(request_id)

    def caller(name: str) -> tuple[str, str]:
        request_id.set(name)
        barrier.wait()
        return async_to_sync(echo_later)(), read(request_id)

    results: dict[str, tuple[str, str]] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, caller(n)))
        for n in ("a", "b", "c")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == {n: (n, n) for n in ("a", "b", "c")}


class NoEquality:
    """A value whose equality must never be asked: it raises if it is."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("context values were compared with ==")

    __hash__ = object.__hash__


cached: contextvars.ContextVar[NoEquality] = contextvars.ContextVar("cached")


@BOTH_MODES
async def test_changed_values_are_told_apart_by_identity_not_equality(
    thread_sensitive: bool,
) -> None:
    cached.set(NoEquality())
    replacement = NoEquality()

    def rebuild() -> None:
        cached.set(replacement)

    await sync_to_async(rebuild, thread_sensitive=thread_sensitive)()
    assert cached.get() is replacement


def test_values_changed_in_async_code_are_told_apart_by_identity() -> None:
    token = cached.set(NoEquality())
    replacement = NoEquality()

    async def rebuild() -> None:
        cached.set(replacement)

    try:
        async_to_sync(rebuild)()
        assert cached.get() is replacement
    finally:
        # This sync test runs in the main thread's own context: leave no
        # value behind that a later comparison would trip over.
        cached.reset(token)


async def test_values_changed_on_the_outer_loop_are_told_apart_by_identity() -> None:
    cached.set(NoEquality())
    inner, outer = NoEquality(), NoEquality()

    async def rebuild_inner() -> None:
        cached.set(inner)

    def rebuild_both() -> NoEquality:
        async_to_sync(rebuild_inner)()
        seen = cached.get()
        cached.set(outer)
        return seen

    assert await sync_to_async(rebuild_both)() is inner
    assert cached.get() is outer


# The exception being handled


def current_exception() -> BaseException | None:
    return sys.exc_info()[1]


@BOTH_MODES
async def test_sync_code_sees_the_exception_the_caller_is_handling(
    thread_sensitive: bool,
) -> None:
    wrapper = sync_to_async(current_exception, thread_sensitive=thread_sensitive)
    error = ValueError("being handled")
    try:
        raise error
    except ValueError:
        seen = await wrapper()
    assert seen is error


@BOTH_MODES
async def test_sync_code_sees_no_exception_when_the_caller_handles_none(
    thread_sensitive: bool,
) -> None:
    wrapper = sync_to_async(current_exception, thread_sensitive=thread_sensitive)
    assert await wrapper() is None


def test_async_code_sees_the_exception_the_sync_caller_is_handling() -> None:
    async def inner() -> BaseException | None:
        return sys.exc_info()[1]

    error = ValueError("being handled")
    try:
        raise error
    except ValueError:
        seen = async_to_sync(inner)()
    assert seen is error


def test_async_code_sees_no_exception_when_the_caller_handles_none() -> None:
    async def inner() -> BaseException | None:
        return sys.exc_info()[1]

    assert async_to_sync(inner)() is None


async def test_exception_is_visible_through_the_outer_loop() -> None:
    async def inner() -> BaseException | None:
        return sys.exc_info()[1]

    def middle() -> bool:
        error = KeyError("in sync")
        try:
            raise error
        except KeyError:
            return async_to_sync(inner)() is error

    assert await sync_to_async(middle)()


async def test_handled_exception_is_not_leaked_into_later_calls() -> None:
    try:
        raise ValueError("earlier")
    except ValueError:
        await sync_to_async(current_exception)()
    assert await sync_to_async(current_exception)() is None


def test_result_values_are_passed_through_unchanged() -> None:
    marker: dict[str, Any] = {}

    async def give() -> dict[str, Any]:
        return marker

    assert async_to_sync(give)() is marker


# asgiref.sync._restore_context: private upstream, but imported by code outside
# asgiref that moves contexts between threads itself.


def test_restore_context_applies_the_values_and_local_data_to_this_thread(
    in_new_thread: Any,
) -> None:
    local = Local()
    local.value = "main"
    request_id.set("r-main")
    captured = contextvars.copy_context()

    def elsewhere() -> tuple[tuple[str, str], tuple[str, str]]:
        before = (getattr(local, "value", "<unset>"), read(request_id))
        _restore_context(captured)
        return before, (getattr(local, "value", "<unset>"), read(request_id))

    # A fresh context, whatever threads inherit on this interpreter.
    seen = in_new_thread(lambda: contextvars.Context().run(elsewhere))
    assert seen == (("<unset>", "<unset>"), ("main", "r-main"))
    assert local.value == "main"


def test_restore_context_keeps_local_data_from_another_thread_writable(
    in_new_thread: Any,
) -> None:
    local = Local()
    local.value = "main"
    captured = contextvars.copy_context()

    def elsewhere() -> tuple[str, str]:
        _restore_context(captured)
        local.other = "thread"
        return local.value, local.other

    assert in_new_thread(lambda: contextvars.Context().run(elsewhere)) == (
        "main",
        "thread",
    )
    assert (local.value, getattr(local, "other", "<unset>")) == ("main", "<unset>")


@pytest.mark.parametrize("with_local_data", [True, False])
def test_restore_context_in_the_same_thread_applies_changed_values(
    with_local_data: bool,
) -> None:
    local = Local()

    def body() -> tuple[str, str]:
        if with_local_data:
            local.value = "here"
        changed = contextvars.copy_context()
        changed.run(request_id.set, "changed")
        _restore_context(changed)
        return read(request_id), getattr(local, "value", "<unset>")

    expected_value = "here" if with_local_data else "<unset>"
    assert contextvars.Context().run(body) == ("changed", expected_value)
