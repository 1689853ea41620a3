"""Behaviour of ``asgiref.local.Local``."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import pickle
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from asgiref.local import Local, _DefaultLocal, _ThreadCriticalLocal
from asgiref.sync import (
    AsyncSingleThreadContext,
    AsyncToSync,
    async_to_sync,
    sync_to_async,
)

MISSING = "<missing>"


def read(local: Local, name: str = "value") -> Any:
    return getattr(local, name, MISSING)


# Construction


def test_default_local_is_a_default_local_instance() -> None:
    local = Local()
    assert type(local) is _DefaultLocal
    assert isinstance(local, Local)


@pytest.mark.parametrize(
    "make", [lambda: Local(True), lambda: Local(thread_critical=True)]
)
def test_thread_critical_local_is_a_thread_critical_local_instance(
    make: Callable[[], Local],
) -> None:
    local = make()
    assert type(local) is _ThreadCriticalLocal
    assert isinstance(local, Local)


def test_thread_critical_false_gives_a_default_local() -> None:
    assert type(Local(thread_critical=False)) is _DefaultLocal


def test_subclassing_local_fails_on_instantiation() -> None:
    class Custom(Local):  # ty: ignore[subclass-of-final-class]
        pass

    with pytest.raises(
        TypeError, match=r"^asgiref\.local\.Local cannot be subclassed$"
    ):
        Custom()  # ty: ignore[invalid-argument-type]


def test_each_instance_has_its_own_namespace() -> None:
    first, second = Local(), Local()
    first.value = 1
    assert read(second) == MISSING


# Attribute protocol


@pytest.mark.parametrize("thread_critical", [False, True])
def test_set_get_and_delete_attributes(thread_critical: bool) -> None:
    local = Local(thread_critical)
    local.value = 1
    local.other = "x"
    assert (local.value, local.other) == (1, "x")
    local.value = 2
    assert local.value == 2
    del local.value
    assert read(local) == MISSING
    assert local.other == "x"
    assert hasattr(local, "other")
    assert not hasattr(local, "value")


@pytest.mark.parametrize("thread_critical", [False, True])
def test_reading_a_missing_attribute_raises_attribute_error(
    thread_critical: bool,
) -> None:
    local = Local(thread_critical)
    with pytest.raises(AttributeError, match=r"object has no attribute 'nothing'$"):
        local.nothing  # noqa: B018


@pytest.mark.parametrize("thread_critical", [False, True])
def test_deleting_a_missing_attribute_raises_attribute_error(
    thread_critical: bool,
) -> None:
    local = Local(thread_critical)
    message = r"object has no attribute 'nothing'$"
    if thread_critical and sys.version_info < (3, 11):
        # Sync threads use a threading.local, whose 3.10 message is the bare name.
        message = r"^nothing$"
    with pytest.raises(AttributeError, match=message):
        del local.nothing


@pytest.mark.parametrize("thread_critical", [False, True])
def test_deleting_in_a_thread_that_set_nothing_raises_and_leaves_others_alone(
    thread_critical: bool, in_new_thread: Callable[..., Any]
) -> None:
    local = Local(thread_critical)
    local.value = "main"

    def delete_elsewhere() -> Any:
        with pytest.raises(AttributeError):
            del local.value
        return read(local)

    assert in_new_thread(delete_elsewhere) == MISSING
    assert local.value == "main"


@pytest.mark.parametrize("thread_critical", [False, True])
async def test_deleting_in_async_code_removes_only_that_attribute_of_that_task(
    thread_critical: bool,
) -> None:
    local = Local(thread_critical)
    local.value = 1
    local.other = 2
    del local.value
    assert (read(local), local.other) == (MISSING, 2)

    async def child() -> Any:
        del local.other
        return read(local, "other")

    assert await asyncio.create_task(child()) == MISSING
    assert local.other == 2


@pytest.mark.parametrize("thread_critical", [False, True])
async def test_missing_attribute_in_async_code_raises_attribute_error(
    thread_critical: bool,
) -> None:
    local = Local(thread_critical)
    with pytest.raises(AttributeError, match=r"object has no attribute 'nothing'$"):
        local.nothing  # noqa: B018
    with pytest.raises(AttributeError, match=r"object has no attribute 'nothing'$"):
        del local.nothing


def test_setting_data_attribute_is_refused() -> None:
    local = Local()
    with pytest.raises(
        AttributeError, match=r"^Cannot set attribute '_data' on Local$"
    ):
        local._data = {}


@pytest.mark.parametrize("thread_critical", [False, True])
async def test_setting_data_attribute_in_async_code_is_refused(
    thread_critical: bool,
) -> None:
    local = Local(thread_critical)
    with pytest.raises(
        AttributeError, match=r"^Cannot set attribute '_data' on Local$"
    ):
        local._data = {}


def test_a_thread_critical_local_in_sync_code_takes_the_data_attribute() -> None:
    # There it is a plain per-thread namespace, where the name is not taken.
    local = Local(thread_critical=True)
    local._data = "value"
    assert local._data == "value"
    del local._data
    assert read(local, "_data") == MISSING


@pytest.mark.parametrize("thread_critical", [False, True])
def test_locals_can_be_weakly_referenced(thread_critical: bool) -> None:
    local = Local(thread_critical)
    assert weakref.ref(local)() is local
    by_local: weakref.WeakKeyDictionary[Local, str] = weakref.WeakKeyDictionary()
    by_local[local] = "entry"
    assert by_local[local] == "entry"
    assert local in weakref.WeakSet([local])


@pytest.mark.parametrize("thread_critical", [False, True])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_locals_cannot_be_pickled(thread_critical: bool, protocol: int) -> None:
    # Their data belongs to threads and tasks of this process.
    local = Local(thread_critical)
    local.value = "kept"
    with pytest.raises(TypeError):
        pickle.dumps(local, protocol)


@pytest.mark.parametrize("thread_critical", [False, True])
@pytest.mark.parametrize("copy_function", [copy.copy, copy.deepcopy])
def test_locals_cannot_be_copied(
    thread_critical: bool, copy_function: Callable[[Any], Any]
) -> None:
    with pytest.raises(TypeError):
        copy_function(Local(thread_critical))


@pytest.mark.asgire_only
@pytest.mark.parametrize("thread_critical", [False, True])
def test_upstreams_internal_names_are_ordinary_attribute_names(
    thread_critical: bool,
) -> None:
    # Upstream answers these with its own storage objects, methods and class
    # attributes whatever was stored; asgire has no such attributes, so they
    # are free (_data stays reserved).
    local = Local(thread_critical)
    assert read(local, "_data") == MISSING
    for name in ("_storage", "_lock", "_get_storage"):
        assert read(local, name) == MISSING
        setattr(local, name, "value")
        assert getattr(local, name) == "value"
    # Nor do names the class defines hide what was stored under them.
    local.__doc__ = "value"
    assert local.__doc__ == "value"


# Sync threads: thread-local, shared along asgiref's own hops


@pytest.mark.parametrize("thread_critical", [False, True])
def test_values_are_local_to_each_sync_thread(
    thread_critical: bool, in_new_thread: Callable[..., Any]
) -> None:
    local = Local(thread_critical)
    local.value = "main"

    def elsewhere() -> tuple[Any, Any]:
        seen = read(local)
        local.value = "other"
        return seen, local.value

    assert in_new_thread(elsewhere) == (MISSING, "other")
    assert local.value == "main"


def test_values_set_in_sync_code_are_visible_through_async_to_sync() -> None:
    local = Local()
    local.value = "outer"

    async def inner() -> Any:
        return read(local)

    assert async_to_sync(inner)() == "outer"


def test_values_set_through_async_to_sync_are_visible_to_the_sync_caller() -> None:
    local = Local()
    local.value = "before"

    async def inner() -> None:
        local.value = "from async"
        local.added = True

    async_to_sync(inner)()
    assert local.value == "from async"
    assert local.added is True


def test_values_deleted_through_async_to_sync_are_gone_for_the_sync_caller() -> None:
    local = Local()
    local.value = "before"

    async def inner() -> None:
        del local.value

    async_to_sync(inner)()
    assert read(local) == MISSING


def test_values_travel_sync_to_async_to_sync_and_back() -> None:
    local = Local()
    local.value = 1

    def innermost() -> None:
        local.value += 10

    async def middle() -> None:
        local.value += 100
        await sync_to_async(innermost)()
        await sync_to_async(innermost, thread_sensitive=False)()

    async_to_sync(middle)()
    assert local.value == 121


@pytest.mark.parametrize("executors", ["default", "thread-critical"])
def test_threads_sharing_a_single_thread_context_each_share_their_own_values(
    monkeypatch: pytest.MonkeyPatch, executors: str
) -> None:
    # The block's loop thread was started by the first thread to call into it;
    # a second thread given the block's context must still see its own values
    # in the coroutines it calls, and get back what they set. AsyncToSync
    # keeps its own state in a Local, which a tool may replace.
    if executors == "thread-critical":
        monkeypatch.setattr(AsyncToSync, "executors", Local(thread_critical=True))
    local = Local()

    async def bump() -> Any:
        seen = read(local)
        local.value = f"{seen}, then the loop"
        await sync_to_async(innermost)()
        return seen

    def innermost() -> None:
        local.value += ", then back"

    seen: dict[str, Any] = {}

    def second_thread() -> None:
        local.value = "second"
        seen["second"] = async_to_sync(bump)()
        seen["second after"] = local.value

    async def peek() -> Any:
        return read(local)

    def third_thread() -> None:
        seen["third"] = async_to_sync(peek)()

    with AsyncSingleThreadContext():
        before_any_value = contextvars.copy_context()
        local.value = "first"
        seen["first"] = async_to_sync(bump)()
        third = threading.Thread(target=before_any_value.run, args=(third_thread,))
        third.start()
        third.join(10)
        worker = threading.Thread(
            target=contextvars.copy_context().run, args=(second_thread,)
        )
        worker.start()
        worker.join(10)
        seen["first after"] = local.value
    assert seen == {
        "first": "first",
        "second": "second",
        "second after": "second, then the loop, then back",
        "first after": "first, then the loop, then back",
        "third": MISSING,
    }


def test_values_set_in_an_unrelated_sync_thread_do_not_reach_async_to_sync(
    in_new_thread: Callable[..., Any],
) -> None:
    local = Local()

    def elsewhere() -> None:
        local.value = "other thread"

    in_new_thread(elsewhere)

    async def inner() -> Any:
        return read(local)

    assert async_to_sync(inner)() == MISSING


def test_thread_critical_values_do_not_follow_async_to_sync() -> None:
    local = Local(thread_critical=True)
    local.value = "outer"

    async def inner() -> Any:
        local.inner = "set in loop thread"
        return read(local)

    assert async_to_sync(inner)() == MISSING
    assert read(local, "inner") == MISSING


def test_thread_critical_values_a_call_sets_are_gone_in_the_next_call(
    in_new_thread: Callable[..., Any],
) -> None:
    # Each call's coroutine runs in a fresh loop, where data a previous call's
    # coroutine kept per thread is not found (Django keeps its database
    # connections in such a Local).
    local = Local(thread_critical=True)

    async def count() -> int:
        local.calls = getattr(local, "calls", 0) + 1
        return local.calls

    def three_calls() -> list[int]:
        return [async_to_sync(count)() for _ in range(3)]

    assert three_calls() == [1, 1, 1]
    assert in_new_thread(three_calls) == [1, 1, 1]


def test_thread_critical_values_reach_a_nested_call_on_the_same_loop() -> None:
    local = Local(thread_critical=True)

    async def innermost() -> Any:
        return read(local)

    def middle() -> Any:
        return async_to_sync(innermost)()

    async def outer() -> Any:
        local.value = "outer"
        return await sync_to_async(middle)()

    assert async_to_sync(outer)() == "outer"


def test_thread_critical_values_are_seen_by_sync_code_back_on_the_same_thread() -> None:
    local = Local(thread_critical=True)
    local.value = "outer"

    def innermost() -> Any:
        # Thread-sensitive work returns to this very thread, so the
        # per-thread value is the one set above.
        seen = read(local)
        local.value = "innermost"
        return seen

    async def middle() -> Any:
        return await sync_to_async(innermost)()

    assert async_to_sync(middle)() == "outer"
    assert local.value == "innermost"


# Async code: behaves like a context variable


async def test_values_set_in_async_code_are_visible_to_sync_to_async() -> None:
    local = Local()
    local.value = "async"
    assert await sync_to_async(read)(local) == "async"
    assert await sync_to_async(read, thread_sensitive=False)(local) == "async"


@pytest.mark.parametrize("thread_sensitive", [True, False])
def test_first_value_a_new_threads_loop_sets_is_visible_to_sync_to_async(
    thread_sensitive: bool, in_new_thread: Callable[..., Any]
) -> None:
    # A new thread's context holds no Local data yet, so this value is all the
    # call has to carry, with nothing inherited from earlier tests.
    local = Local()

    async def main() -> Any:
        local.value = "async"
        return await sync_to_async(read, thread_sensitive=thread_sensitive)(local)

    assert in_new_thread(lambda: asyncio.run(main())) == "async"


async def test_values_set_in_sync_to_async_are_visible_to_the_async_caller() -> None:
    local = Local()
    local.value = "before"

    def inner() -> None:
        local.value = "from sync"
        local.added = 1

    await sync_to_async(inner)()
    assert (local.value, local.added) == ("from sync", 1)

    def remove() -> None:
        del local.added

    await sync_to_async(remove, thread_sensitive=False)()
    assert read(local, "added") == MISSING


async def test_tasks_inherit_values_set_before_they_were_created() -> None:
    local = Local()
    local.value = "parent"

    async def child() -> Any:
        return read(local)

    assert await asyncio.create_task(child()) == "parent"


async def test_changes_in_a_task_stay_in_that_task() -> None:
    local = Local()
    local.value = "parent"
    first_set = asyncio.Event()
    second_checked = asyncio.Event()

    async def first() -> Any:
        local.value = "first"
        first_set.set()
        await second_checked.wait()
        return local.value

    async def second() -> Any:
        await first_set.wait()
        seen = read(local)
        second_checked.set()
        return seen

    results = await asyncio.gather(first(), second())
    assert results == ["first", "parent"]
    assert local.value == "parent"


async def test_values_set_in_a_task_are_not_visible_to_a_new_sibling() -> None:
    local = Local()

    async def setter() -> None:
        local.value = "task"

    async def reader() -> Any:
        return read(local)

    await asyncio.create_task(setter())
    assert await asyncio.create_task(reader()) == MISSING
    assert read(local) == MISSING


async def test_thread_critical_values_behave_like_context_variables_in_async_code() -> (
    None
):
    local = Local(thread_critical=True)
    local.value = "parent"

    async def child() -> Any:
        seen = read(local)
        local.value = "child"
        return seen

    assert await asyncio.create_task(child()) == "parent"
    assert local.value == "parent"


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_thread_critical_values_do_not_follow_sync_to_async(
    thread_sensitive: bool,
) -> None:
    local = Local(thread_critical=True)
    local.value = "async"

    def inner() -> Any:
        seen = read(local)
        local.value = "sync"
        return seen

    assert await sync_to_async(inner, thread_sensitive=thread_sensitive)() == MISSING
    assert local.value == "async"


# Isolation from unrelated threads and thread safety


def test_values_do_not_leak_into_a_thread_running_a_copied_context(
    in_new_thread: Callable[..., Any],
) -> None:
    local = Local()
    local.value = "main"
    context = contextvars.copy_context()

    def leaked() -> tuple[Any, Any]:
        seen = read(local)
        local.value = "thread"
        return seen, local.value

    assert in_new_thread(lambda: context.run(leaked)) == (MISSING, "thread")
    assert local.value == "main"


# A thread that inherited another thread's values does not see them, but once
# it hands its context to a crossing, the far side sees them, and so does the
# thread itself afterwards.


def test_async_to_sync_from_a_thread_running_a_copied_context_carries_its_values() -> (
    None
):
    # What asyncio.to_thread() and anyio's worker threads do with the
    # context of the task that started them.
    local = Local()

    async def inner() -> Any:
        return read(local)

    def worker() -> tuple[Any, Any, Any]:
        before = read(local)
        return before, async_to_sync(inner)(), read(local)

    async def main() -> tuple[Any, Any, Any]:
        local.value = "from the loop"
        return await asyncio.to_thread(worker)

    assert asyncio.run(main()) == (MISSING, "from the loop", "from the loop")


def test_sync_to_async_with_a_context_another_thread_filled_carries_its_values(
    in_new_thread: Callable[..., Any],
) -> None:
    local = Local()
    local.value = "written here"
    context = contextvars.copy_context()

    async def main() -> Any:
        return await sync_to_async(read, context=context)(local)

    assert in_new_thread(lambda: asyncio.run(main())) == "written here"


def test_sync_to_async_from_a_loop_running_a_copied_context_carries_its_values(
    in_new_thread: Callable[..., Any],
) -> None:
    local = Local()
    local.value = "written here"
    context = contextvars.copy_context()

    async def main() -> tuple[Any, Any, Any]:
        before = read(local)
        return before, await sync_to_async(read)(local), read(local)

    assert in_new_thread(lambda: context.run(asyncio.run, main())) == (
        MISSING,
        "written here",
        "written here",
    )


@pytest.mark.skipif(sys.version_info < (3, 14), reason="Thread(context=) is 3.14+")
def test_values_do_not_leak_into_a_thread_given_the_spawning_context(
    in_new_thread: Callable[..., Any],
) -> None:
    local = Local()
    local.value = "main"

    def start(target: Callable[[], None]) -> threading.Thread:
        # Passed by keyword mapping: the type stubs predate the 3.14 parameter.
        options: dict[str, Any] = {"context": contextvars.copy_context()}
        return threading.Thread(target=target, **options)

    assert in_new_thread(lambda: read(local), start=start) == MISSING
    assert local.value == "main"


@pytest.mark.parametrize("thread_critical", [False, True])
def test_concurrent_threads_each_see_their_own_values(thread_critical: bool) -> None:
    local = Local(thread_critical)
    workers = 8
    barrier = threading.Barrier(workers, timeout=10)
    errors: list[str] = []

    def hammer(number: int) -> None:
        barrier.wait()
        for step in range(500):
            setattr(local, f"key{step % 5}", (number, step))
            local.shared = number
            if local.shared != number or getattr(local, f"key{step % 5}") != (
                number,
                step,
            ):
                errors.append(f"worker {number} saw a foreign value at step {step}")
            del local.shared

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert read(local, "shared") == MISSING
