"""Behaviour of ``asgiref.sync.sync_to_async`` and ``SyncToAsync``."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import importlib.util
import inspect
import sys
import textwrap
import threading
import traceback
import types
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest

from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.sync import (
    SyncToAsync,
    async_to_sync,
    iscoroutinefunction,
    markcoroutinefunction,
    sync_to_async,
)

# Whether asgiref is asgire (not upstream, as in scripts/test-upstream).
ASGIRE = importlib.util.find_spec("asgire") is not None

REJECTED = r"^sync_to_async can only be applied to sync functions\.$"
EXECUTOR_WITH_THREAD_SENSITIVE = (
    r"^executor must not be set when thread_sensitive is True$"
)


def add(a: int, b: int = 10) -> int:
    """Add two numbers."""
    return a + b


async def async_add(a: int, b: int = 10) -> int:
    return a + b


class AsyncCallable:
    async def __call__(self) -> None:
        pass


class SyncCallable:
    def __call__(self, value: int) -> int:
        return value * 2


def thread_name() -> str:
    return threading.current_thread().name


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-pool")
    try:
        yield executor
    finally:
        executor.shutdown()


# Public surface


def test_sync_to_async_signature() -> None:
    parameters = inspect.signature(sync_to_async).parameters
    assert [(p.name, p.kind, p.default) for p in parameters.values()] == [
        ("func", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
        ("thread_sensitive", inspect.Parameter.KEYWORD_ONLY, True),
        ("executor", inspect.Parameter.KEYWORD_ONLY, None),
        ("context", inspect.Parameter.KEYWORD_ONLY, None),
    ]


def test_sync_to_async_class_signature() -> None:
    parameters = inspect.signature(SyncToAsync).parameters
    assert [(p.name, p.kind, p.default) for p in parameters.values()] == [
        ("func", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("thread_sensitive", inspect.Parameter.POSITIONAL_OR_KEYWORD, True),
        ("executor", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
        ("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
    ]


def test_bare_use_returns_a_sync_to_async_instance() -> None:
    wrapper = sync_to_async(add)
    assert isinstance(wrapper, SyncToAsync)
    assert wrapper.func is add


@pytest.mark.parametrize(
    "factory",
    [
        sync_to_async(),
        sync_to_async(thread_sensitive=True),
        sync_to_async(thread_sensitive=False),
        sync_to_async(context=contextvars.copy_context()),
    ],
)
def test_decorator_factory_returns_a_sync_to_async_instance(factory: Any) -> None:
    wrapper = factory(add)
    assert isinstance(wrapper, SyncToAsync)
    assert wrapper.func is add


async def test_class_can_be_used_directly() -> None:
    assert await SyncToAsync(add)(1, b=2) == 3
    assert await SyncToAsync(add, False)(1) == 11


async def test_passes_arguments_and_returns_the_result() -> None:
    assert await sync_to_async(add)(1, 2) == 3
    assert await sync_to_async(add)(1) == 11
    assert await sync_to_async(add)(a=5, b=5) == 10
    assert await sync_to_async(add, thread_sensitive=False)(1, b=1) == 2


async def test_decorated_function_is_awaitable() -> None:
    @sync_to_async
    def bare(value: int) -> int:
        return value + 1

    @sync_to_async(thread_sensitive=False)
    def configured(value: int) -> int:
        return value + 2

    assert await bare(1) == 2
    assert await configured(1) == 3


async def test_wraps_sync_callable_objects() -> None:
    assert await sync_to_async(SyncCallable())(21) == 42


async def test_calling_the_wrapper_returns_a_coroutine() -> None:
    pending = sync_to_async(add)(1)
    assert inspect.iscoroutine(pending)
    assert await pending == 11


def test_wrapper_carries_the_wrapped_function_metadata() -> None:
    wrapper: Any = sync_to_async(add)
    assert wrapper.__name__ == "add"
    assert wrapper.__qualname__ == "add"
    assert wrapper.__doc__ == "Add two numbers."
    assert wrapper.__module__ == add.__module__
    assert wrapper.__wrapped__ is add
    assert wrapper.func is add


@pytest.mark.parametrize(
    "func",
    [add, functools.partial(add, 1), SyncCallable()],
    ids=["function", "partial", "callable object"],
)
def test_wrapper_gets_what_functools_update_wrapper_copies(func: Any) -> None:
    class Plain:
        def __call__(self) -> None: ...

    expected = vars(functools.update_wrapper(Plain(), func))
    copied = vars(sync_to_async(func))
    assert {name: copied.get(name) for name in expected} == expected


async def test_function_attributes_are_copied_without_shadowing_the_wrapper() -> None:
    def tagged() -> threading.Thread:
        return threading.current_thread()

    # Attributes that decorators such as Django's csrf_exempt put on views,
    # and some that share a name with the wrapper's own.
    tagged.__dict__.update(
        csrf_exempt=True,
        context="not a context",
        func="not the function",
        __wrapped__=add,
    )
    wrapper: Any = sync_to_async(tagged, thread_sensitive=False)
    assert wrapper.csrf_exempt is True
    assert wrapper.func is tagged
    assert wrapper.__wrapped__ is tagged
    assert wrapper.context is None
    assert await wrapper() is not threading.current_thread()


@pytest.mark.asgire_only
async def test_keyword_named_self_reaches_the_function() -> None:
    def echo(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    # Upstream's __call__(self, *args, **kwargs) takes this keyword itself.
    assert await sync_to_async(echo)(self=1) == {"self": 1}


def test_wrapper_is_recognised_as_a_coroutine_function() -> None:
    assert iscoroutinefunction(sync_to_async(add))
    assert iscoroutinefunction(sync_to_async(add, thread_sensitive=False))


def test_only_instances_are_coroutine_functions() -> None:
    assert iscoroutinefunction(sync_to_async(add))
    assert not iscoroutinefunction(SyncToAsync)


def test_a_pass_through_decorator_keeps_the_wrapper_a_coroutine_function() -> None:
    # functools.wraps copies the wrapper's own attributes: its settings and
    # the coroutine function marker.
    wrapper = sync_to_async(add)

    @functools.wraps(wrapper)
    def logged(*args: Any, **kwargs: Any) -> Any:
        return wrapper(*args, **kwargs)

    assert iscoroutinefunction(logged)
    copied: Any = logged
    assert (copied.func, copied.context) == (add, None)


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is 3.12+"
)
def test_wrapper_is_recognised_by_inspect() -> None:
    assert inspect.iscoroutinefunction(sync_to_async(add))


def test_iscoroutinefunction_and_markcoroutinefunction() -> None:
    assert iscoroutinefunction(async_add)
    assert not iscoroutinefunction(add)

    def plain() -> None:
        pass

    assert markcoroutinefunction(plain) is plain
    assert iscoroutinefunction(plain)


def test_iscoroutinefunction_helpers_are_the_stdlib_ones() -> None:
    if sys.version_info < (3, 12):
        pytest.skip("inspect.markcoroutinefunction is 3.12+")
    assert iscoroutinefunction is inspect.iscoroutinefunction
    assert markcoroutinefunction is inspect.markcoroutinefunction


def test_wrapping_a_plain_function_sets_no_self() -> None:
    assert not hasattr(sync_to_async(add), "__self__")


# Rejected input


@pytest.mark.parametrize(
    "value",
    [None, 1, "add", object()],
    ids=["none", "int", "str", "object"],
)
def test_rejects_non_callables(value: Any) -> None:
    with pytest.raises(TypeError, match=REJECTED):
        SyncToAsync(value)


@pytest.mark.parametrize("value", [1, "add", object()], ids=["int", "str", "object"])
def test_rejects_non_callables_through_the_function(value: Any) -> None:
    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(value)


def test_rejects_coroutine_functions() -> None:
    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(async_add)


def test_rejects_coroutine_functions_in_the_decorator_factory() -> None:
    decorate = sync_to_async(thread_sensitive=False)
    with pytest.raises(TypeError, match=REJECTED):
        decorate(async_add)


def test_rejects_objects_whose_call_is_a_coroutine_function() -> None:
    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(AsyncCallable())


def test_rejects_bound_coroutine_methods() -> None:
    class Holder:
        async def method(self) -> None:
            pass

    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(Holder().method)


def test_rejects_bound_methods_marked_as_coroutine_functions() -> None:
    class Holder:
        @markcoroutinefunction
        def method(self) -> None:
            pass

    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(Holder().method)


async def _takes_anything(*args: Any) -> None:
    pass


def test_methods_bound_over_other_callables_are_judged_by_the_method() -> None:
    # Only a method's own __call__ and what inspect unwraps (functions and
    # partials) count, not the __call__ of an object it was bound over.
    for callable_object in (AsyncCallable(), SyncCallable()):
        method = types.MethodType(callable_object, "owner")
        wrapper: Any = sync_to_async(method)
        assert wrapper.__wrapped__ is method
    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(types.MethodType(functools.partial(_takes_anything), "owner"))


def test_rejects_partials_of_coroutine_functions() -> None:
    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(functools.partial(async_add, 1))


def test_rejects_functions_marked_as_coroutine_functions() -> None:
    def marked() -> None:
        pass

    markcoroutinefunction(marked)
    with pytest.raises(TypeError, match=REJECTED):
        sync_to_async(marked)


async def test_accepts_async_generator_functions() -> None:
    # Calling one awaits nothing: it is a sync function returning a generator.
    async def numbers() -> AsyncIterator[int]:
        yield 1
        yield 2

    generator = await sync_to_async(numbers)()
    assert [n async for n in generator] == [1, 2]


def test_rejects_an_executor_with_thread_sensitive_by_default(
    pool: ThreadPoolExecutor,
) -> None:
    with pytest.raises(TypeError, match=EXECUTOR_WITH_THREAD_SENSITIVE):
        sync_to_async(add, executor=pool)


def test_rejects_an_executor_with_explicit_thread_sensitive(
    pool: ThreadPoolExecutor,
) -> None:
    with pytest.raises(TypeError, match=EXECUTOR_WITH_THREAD_SENSITIVE):
        sync_to_async(add, thread_sensitive=True, executor=pool)
    with pytest.raises(TypeError, match=EXECUTOR_WITH_THREAD_SENSITIVE):
        SyncToAsync(add, True, pool)


@pytest.mark.asgire_only
@pytest.mark.parametrize("value", [object(), "pool"], ids=["object", "str"])
def test_rejects_an_executor_without_submit(value: Any) -> None:
    # Upstream accepts it and fails on the first call instead.
    with pytest.raises(
        TypeError, match=r"^executor must be a concurrent\.futures\.Executor, not "
    ):
        sync_to_async(add, thread_sensitive=False, executor=value)


@pytest.mark.asgire_only
def test_rejects_a_context_that_is_not_a_context() -> None:
    with pytest.raises(
        TypeError, match=r"^context must be a contextvars\.Context or None, not "
    ):
        sync_to_async(add, context={})  # ty: ignore[invalid-argument-type]


def test_decorator_factory_rejects_an_executor_when_applied(
    pool: ThreadPoolExecutor,
) -> None:
    decorate = sync_to_async(executor=pool)
    with pytest.raises(TypeError, match=EXECUTOR_WITH_THREAD_SENSITIVE):
        decorate(add)


# Methods


class Counter:
    def __init__(self) -> None:
        self.count = 0

    @sync_to_async
    def increment(self, by: int = 1) -> tuple[Counter, int, str]:
        """Increase the count."""
        self.count += by
        return self, self.count, thread_name()

    @sync_to_async(thread_sensitive=False)
    def increment_anywhere(self, by: int = 1) -> int:
        self.count += by
        return self.count

    def plain(self, by: int) -> tuple[Counter, int]:
        return self, by


async def test_decorated_method_binds_to_the_instance() -> None:
    counter = Counter()
    instance, count, _ = await counter.increment()
    assert instance is counter
    assert count == 1
    assert (await counter.increment(by=5))[1] == 6
    assert await counter.increment_anywhere(4) == 10
    assert counter.count == 10


async def test_bound_decorated_method_carries_metadata() -> None:
    bound: Any = Counter().increment
    assert bound.__name__ == "increment"
    assert bound.__doc__ == "Increase the count."
    assert bound.__wrapped__ is vars(Counter)["increment"].func
    assert inspect.iscoroutinefunction(bound)
    assert iscoroutinefunction(bound)
    pending = bound()
    assert inspect.iscoroutine(pending)
    await pending


async def test_each_instance_binds_separately() -> None:
    first, second = Counter(), Counter()
    await first.increment(3)
    await second.increment(4)
    assert (first.count, second.count) == (3, 4)


def test_wrapper_over_a_bound_method_carries_what_update_wrapper_copies() -> None:
    class Holder:
        def method(self) -> None:
            """A method with attributes of its own."""

    vars(Holder)["method"].tag = "tagged"
    vars(Holder)["method"].__wrapped__ = len  # replaced, as functools does
    bound = Holder().method
    namespace: Any = types.SimpleNamespace()
    expected = functools.update_wrapper(namespace, bound)
    wrapper: Any = sync_to_async(bound)
    assert {name: vars(wrapper)[name] for name in vars(expected)} == vars(expected)
    assert wrapper.__wrapped__ is bound
    assert wrapper.tag == "tagged"


async def test_wrapping_a_bound_method_exposes_self() -> None:
    counter = Counter()
    wrapper: Any = sync_to_async(counter.plain)
    assert wrapper.__self__ is counter
    assert wrapper.func == counter.plain
    assert await wrapper(7) == (counter, 7)


async def test_subclass_can_wrap_the_call_in_thread_handler() -> None:
    events: list[tuple[str, Any]] = []

    class Tracing(SyncToAsync[Any, Any]):
        def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
            events.append(("before", loop))
            try:
                return ("wrapped", super().thread_handler(loop, *args, **kwargs))
            finally:
                events.append(("after", threading.current_thread()))

    def work(value: int) -> tuple[int, threading.Thread]:
        events.append(("work", value))
        return value, threading.current_thread()

    loop = asyncio.get_running_loop()
    for thread_sensitive in (True, False):
        events.clear()
        label, (value, worker) = await Tracing(work, thread_sensitive)(7)
        assert (label, value) == ("wrapped", 7)
        assert worker is not threading.current_thread()
        assert events == [("before", loop), ("work", 7), ("after", worker)]


# Where the function runs


async def test_runs_outside_the_event_loop_thread() -> None:
    loop_thread = threading.get_ident()
    assert await sync_to_async(threading.get_ident)() != loop_thread
    assert (
        await sync_to_async(threading.get_ident, thread_sensitive=False)()
        != loop_thread
    )


async def test_thread_sensitive_calls_run_on_the_single_thread_executor() -> None:
    first = await sync_to_async(threading.current_thread)()
    second = await sync_to_async(threading.current_thread)()
    assert first is second
    pool: Any = SyncToAsync.single_thread_executor
    assert first in pool._threads


async def test_non_sensitive_calls_use_the_given_executor(
    pool: ThreadPoolExecutor,
) -> None:
    name = await sync_to_async(thread_name, thread_sensitive=False, executor=pool)()
    assert name.startswith("test-pool")


async def test_given_executor_may_be_any_executor() -> None:
    class Recording(Executor):
        def __init__(self) -> None:
            self.inner = ThreadPoolExecutor(max_workers=1)
            self.submitted = 0

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.submitted += 1
            return self.inner.submit(fn, *args, **kwargs)

    executor = Recording()
    try:
        wrapper = SyncToAsync(add, thread_sensitive=False, executor=executor)
        assert await wrapper(1, 1) == 2
        assert executor.submitted == 1
    finally:
        executor.inner.shutdown()


async def test_a_shut_down_executor_refuses_the_call(pool: ThreadPoolExecutor) -> None:
    pool.shutdown()
    ran: list[str] = []
    wrapper = sync_to_async(ran.append, thread_sensitive=False, executor=pool)
    with pytest.raises(
        RuntimeError, match="cannot schedule new futures after shutdown"
    ):
        await wrapper("ran")
    assert ran == []


class SubclassedPool(ThreadPoolExecutor):
    """A pool that is not exactly the stdlib class, reached through submit()."""


POOL_CLASSES = pytest.mark.parametrize(
    "pool_class", [ThreadPoolExecutor, SubclassedPool], ids=["stdlib", "subclass"]
)


@POOL_CLASSES
@pytest.mark.parametrize("dropped_by", ["executor", "caller"])
async def test_a_queued_call_that_is_cancelled_never_runs(
    pool_class: type[ThreadPoolExecutor], dropped_by: str
) -> None:
    loop = asyncio.get_running_loop()
    executor = pool_class(max_workers=1)
    started = asyncio.Event()
    release = threading.Event()
    ran: list[str] = []

    def occupy() -> None:
        loop.call_soon_threadsafe(started.set)
        assert release.wait(10)

    try:
        busy = asyncio.ensure_future(
            sync_to_async(occupy, thread_sensitive=False, executor=executor)()
        )
        await started.wait()
        queued = asyncio.ensure_future(
            sync_to_async(ran.append, thread_sensitive=False, executor=executor)("ran")
        )
        await asyncio.sleep(0)  # the queued call reaches the executor
        if dropped_by == "executor":
            executor.shutdown(wait=False, cancel_futures=True)
        else:
            queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
    finally:
        release.set()
        executor.shutdown()  # runs whatever is still queued first
    await busy
    assert ran == []


def fail_to_start() -> None:
    raise RuntimeError("the worker could not start")


@POOL_CLASSES
async def test_an_executor_whose_worker_cannot_start_raises_broken_thread_pool(
    pool_class: type[ThreadPoolExecutor],
) -> None:
    executor = pool_class(max_workers=1, initializer=fail_to_start)
    ran: list[str] = []
    wrapper = sync_to_async(ran.append, thread_sensitive=False, executor=executor)
    try:
        with pytest.raises(BrokenThreadPool):
            await wrapper("ran")
    finally:
        executor.shutdown()
    assert ran == []


@pytest.mark.asgire_only
@POOL_CLASSES
async def test_a_call_cancelled_before_its_executor_breaks_stays_cancelled(
    pool_class: type[ThreadPoolExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    # Upstream cancels the queued work item, and the pool then fails to
    # report the breakage to it, raising InvalidStateError in its worker.
    gate = threading.Event()

    def start_late_then_fail() -> None:
        assert gate.wait(10)
        fail_to_start()

    executor = pool_class(max_workers=1, initializer=start_late_then_fail)
    ran: list[str] = []
    wrapper = sync_to_async(ran.append, thread_sensitive=False, executor=executor)
    try:
        task = asyncio.ensure_future(wrapper("ran"))
        await asyncio.sleep(0)  # queued; the worker is still starting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        gate.set()
        executor.shutdown()  # the worker has failed and reported it by now
    assert ran == []
    # Neither the worker nor a future's done-callback failed on the way.
    assert [r for r in caplog.records if "callback" in r.getMessage()] == []


async def test_non_sensitive_calls_default_to_the_loop_default_executor() -> None:
    loop = asyncio.get_running_loop()
    default = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loop-default")
    loop.set_default_executor(default)
    try:
        name = await sync_to_async(thread_name, thread_sensitive=False)()
        assert name.startswith("loop-default")
        # Thread-sensitive calls never go to the default executor.
        name = await sync_to_async(thread_name)()
        assert not name.startswith("loop-default")
    finally:
        default.shutdown()


async def test_non_sensitive_calls_can_run_concurrently() -> None:
    barrier = threading.Barrier(2, timeout=10)

    def meet() -> int:
        return barrier.wait()

    wrapper = sync_to_async(meet, thread_sensitive=False)
    assert sorted(await asyncio.gather(wrapper(), wrapper())) == [0, 1]


async def test_a_pool_grows_when_its_threads_are_busy() -> None:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="growing")
    loop.set_default_executor(pool)
    wrapper = sync_to_async(threading.current_thread, thread_sensitive=False)
    try:
        # Calls one at a time need few threads (how few depends on how soon
        # a finished worker reports itself idle) ...
        for _ in range(20):
            await wrapper()
        # ... and four calls that can only finish together need four.
        barrier = threading.Barrier(4, timeout=10)

        def meet() -> threading.Thread:
            barrier.wait()
            return threading.current_thread()

        meeting = sync_to_async(meet, thread_sensitive=False)
        together = await asyncio.gather(*(meeting() for _ in range(4)))
        assert len(set(together)) == 4
        assert len(pool._threads) == 4
    finally:
        pool.shutdown()


async def test_thread_sensitive_calls_from_concurrent_tasks_share_one_thread() -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()

    def first() -> threading.Thread:
        loop.call_soon_threadsafe(started.set)
        assert release.wait(timeout=10)
        return threading.current_thread()

    def second() -> threading.Thread:
        return threading.current_thread()

    first_task = asyncio.ensure_future(sync_to_async(first)())
    await started.wait()
    second_task = asyncio.ensure_future(sync_to_async(second)())
    await asyncio.sleep(0.01)
    # The second call is queued behind the first on the same single thread.
    assert not second_task.done()
    release.set()
    assert await first_task is await second_task


# What instrumentation sees
#
# APM agents and test tools hook the points upstream hands each call through:
# loop.run_in_executor(), the executor's submit(), and thread_handler, whose
# frame some of them look for on the worker thread's stack.


def is_thread_handler_job(fn: Any) -> bool:
    """Whether ``fn`` is what upstream submits: ``thread_handler`` bound to
    the call's arguments."""
    return (
        isinstance(fn, functools.partial)
        and isinstance(getattr(fn.func, "__self__", None), SyncToAsync)
        and getattr(fn.func, "__func__", None) is SyncToAsync.thread_handler
    )


def stack_has_thread_handler() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is SyncToAsync.thread_handler.__code__:
            return True
        frame = frame.f_back
    return False


async def test_the_worker_runs_the_function_under_thread_handler(
    pool: ThreadPoolExecutor,
) -> None:
    assert await sync_to_async(stack_has_thread_handler)()
    assert await sync_to_async(stack_has_thread_handler, thread_sensitive=False)()
    assert await sync_to_async(
        stack_has_thread_handler, thread_sensitive=False, executor=pool
    )()


def test_work_sent_back_to_an_async_to_sync_caller_runs_under_thread_handler() -> None:
    async def inner() -> bool:
        return await sync_to_async(stack_has_thread_handler)()

    assert async_to_sync(inner)()


HOOK_PLACES = pytest.mark.parametrize("hooked_on", ["class", "loop"])


def hook_loop_method(
    monkeypatch: pytest.MonkeyPatch,
    loop: asyncio.AbstractEventLoop,
    name: str,
    hooked_on: str,
    hook: Callable[..., Any],
) -> None:
    """Install ``hook`` (which takes the loop first) as the method ``name``
    of asyncio's loop class, or of ``loop`` alone."""
    if hooked_on == "class":
        monkeypatch.setattr(asyncio.BaseEventLoop, name, hook)
    else:
        monkeypatch.setattr(loop, name, functools.partial(hook, loop))


@HOOK_PLACES
@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_a_hooked_run_in_executor_sees_each_call(
    monkeypatch: pytest.MonkeyPatch, hooked_on: str, thread_sensitive: bool
) -> None:
    seen: list[tuple[Executor | None, Any]] = []
    original = asyncio.BaseEventLoop.run_in_executor

    def recording(self: Any, executor: Executor | None, fn: Any, *args: Any) -> Any:
        seen.append((executor, fn))
        return original(self, executor, fn, *args)

    loop = asyncio.get_running_loop()
    wrapper = sync_to_async(add, thread_sensitive=thread_sensitive)
    # A first call before the hook goes in: the hook must count even once
    # the loop's method is known to be the original.
    assert await wrapper(0, 0) == 0
    hook_loop_method(monkeypatch, loop, "run_in_executor", hooked_on, recording)
    assert await wrapper(1, 2) == 3
    assert await wrapper(3, b=4) == 7
    assert len(seen) == 2
    for executor, fn in seen:
        assert is_thread_handler_job(fn)
        if thread_sensitive:
            assert executor is SyncToAsync.single_thread_executor
        else:
            assert executor is None


@HOOK_PLACES
@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_a_hooked_call_soon_threadsafe_sees_each_outcome_come_back(
    monkeypatch: pytest.MonkeyPatch, hooked_on: str, thread_sensitive: bool
) -> None:
    loop = asyncio.get_running_loop()
    wrapper = sync_to_async(add, thread_sensitive=thread_sensitive)
    # A first call before the hook goes in: the hook must count even once
    # the loop has been crossed.
    assert await wrapper(0, 0) == 0
    from_threads: list[str] = []
    original = asyncio.BaseEventLoop.call_soon_threadsafe

    def recording(self: Any, callback: Any, *args: Any, **kwargs: Any) -> Any:
        from_threads.append(threading.current_thread().name)
        return original(self, callback, *args, **kwargs)

    hook_loop_method(monkeypatch, loop, "call_soon_threadsafe", hooked_on, recording)
    assert await wrapper(1, 2) == 3
    assert await wrapper(3, b=4) == 7
    loop_thread = threading.current_thread().name
    # Each outcome came through the hook. asgire's first call on a new
    # default executor goes through run_in_executor() but reports by itself,
    # so that executor's future may post its own state once more, late.
    # Python 3.15, and 3.14 in its later point releases (seen on 3.14.10),
    # copies the state of an executor future that finished before
    # run_in_executor() chained it directly, without the hook: upstream, which
    # leaves the posting to asyncio, may then show fewer. asgire posts each
    # outcome itself.
    if ASGIRE or sys.version_info < (3, 14):
        assert len(from_threads) >= 2
    assert loop_thread not in from_threads


def test_hooks_installed_before_asgiref_is_imported_see_each_call(
    python_output: Callable[[str], list[str]],
) -> None:
    # APM agents patch at start-up, often before Django imports asgiref.
    script = textwrap.dedent(
        """
        import asyncio, functools
        from concurrent.futures import ThreadPoolExecutor

        seen = []
        def spy(name, original):
            @functools.wraps(original)
            def wrapper(*args, **kwargs):
                seen.append(name)
                return original(*args, **kwargs)
            return wrapper
        asyncio.BaseEventLoop.run_in_executor = spy(
            "run_in_executor", asyncio.BaseEventLoop.run_in_executor
        )
        ThreadPoolExecutor.submit = spy("submit", ThreadPoolExecutor.submit)

        from asgiref.sync import sync_to_async

        async def main():
            assert await sync_to_async(abs)(-1) == 1
            assert await sync_to_async(abs, thread_sensitive=False)(-2) == 2
        asyncio.run(main())
        print(seen)
        """
    )
    assert python_output(script) == [
        "['run_in_executor',",
        "'submit',",
        "'run_in_executor',",
        "'submit']",
    ]


async def test_an_instrumented_pool_instance_submit_sees_each_call(
    monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    submitted: list[Any] = []
    original = pool.submit

    def recording_submit(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        submitted.append(fn)
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(pool, "submit", recording_submit)
    wrapper = sync_to_async(add, thread_sensitive=False, executor=pool)
    assert await wrapper(1, 2) == 3
    assert len(submitted) == 1
    assert is_thread_handler_job(submitted[0])


def test_on_an_extension_event_loop_calls_run_and_its_hooks_see_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        assert await sync_to_async(stack_has_thread_handler)()
        assert await sync_to_async(stack_has_thread_handler, thread_sensitive=False)()

    uvloop.run(main())
    seen: list[Any] = []
    original = uvloop.Loop.run_in_executor

    def recording(self: Any, executor: Any, fn: Any, *args: Any) -> Any:
        seen.append(fn)
        return original(self, executor, fn, *args)

    monkeypatch.setattr(uvloop.Loop, "run_in_executor", recording)
    uvloop.run(main())
    assert len(seen) == 2
    assert all(is_thread_handler_job(fn) for fn in seen)


async def test_an_instrumented_thread_pool_submit_sees_each_call(
    monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    # APM agents wrap ThreadPoolExecutor.submit to follow work across threads.
    submitted: list[tuple[Executor, Any]] = []
    original = ThreadPoolExecutor.submit

    def recording_submit(
        self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any
    ) -> Any:
        submitted.append((self, fn))
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", recording_submit)
    assert await sync_to_async(add, thread_sensitive=False, executor=pool)(1, 2) == 3
    assert await sync_to_async(add)(3, 4) == 7
    assert [executor for executor, _ in submitted] == [
        pool,
        SyncToAsync.single_thread_executor,
    ]
    assert all(is_thread_handler_job(fn) for _, fn in submitted)


def test_an_instrumented_current_thread_executor_submit_sees_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    submitted: list[Any] = []
    original = CurrentThreadExecutor.submit

    def recording_submit(
        self: CurrentThreadExecutor, fn: Any, /, *args: Any, **kwargs: Any
    ) -> Any:
        submitted.append(fn)
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(CurrentThreadExecutor, "submit", recording_submit)

    async def inner() -> threading.Thread:
        return await sync_to_async(threading.current_thread)()

    assert async_to_sync(inner)() is threading.current_thread()
    assert len(submitted) == 1
    assert is_thread_handler_job(submitted[0])


def test_a_keyword_added_by_a_patched_call_can_be_taken_back_in_thread_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The New Relic agent patches both methods on SyncToAsync itself: __call__
    # adds a keyword carrying its trace, and thread_handler pops it out of the
    # partial that binds the call's arguments, before the function runs.
    original_call = SyncToAsync.__call__
    original_handler = SyncToAsync.thread_handler
    taken: list[object] = []

    async def patched_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["_agent_trace"] = object()
        return await original_call(self, *args, **kwargs)

    def patched_handler(
        self: Any, loop: Any, exc_info: Any, task_context: Any, func: Any, *args: Any
    ) -> Any:
        child = args[0]
        assert isinstance(child, functools.partial)
        taken.append(child.keywords.pop("_agent_trace", None))
        return original_handler(self, loop, exc_info, task_context, func, *args)

    monkeypatch.setattr(SyncToAsync, "__call__", patched_call)
    monkeypatch.setattr(SyncToAsync, "thread_handler", patched_handler)

    def no_extra_keywords(value: int) -> threading.Thread:
        return threading.current_thread()

    async def calls() -> list[threading.Thread]:
        return [
            await sync_to_async(no_extra_keywords)(1),
            await sync_to_async(no_extra_keywords, thread_sensitive=False)(2),
        ]

    caller = threading.current_thread()
    sensitive, non_sensitive = async_to_sync(calls)()
    assert sensitive is caller  # the thread-sensitive call came back here
    assert non_sensitive is not caller
    assert len(taken) == 2
    assert all(trace is not None for trace in taken)


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_keywords_named_like_thread_handler_parameters_reach_the_function(
    thread_sensitive: bool,
) -> None:
    def echo(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    keywords = {"loop": 1, "exc_info": 2, "task_context": 3, "func": 4, "args": 5}
    wrapper = sync_to_async(echo, thread_sensitive=thread_sensitive)
    assert await wrapper(**keywords) == keywords


# Results and errors


@pytest.mark.asgire_only
@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_stop_iteration_from_sync_code_fails_the_call(
    thread_sensitive: bool,
) -> None:
    # Upstream cannot put StopIteration into its asyncio future and the
    # caller waits forever; here it surfaces as a coroutine raising it does.
    def stop() -> None:
        raise StopIteration("done")

    wrapper = sync_to_async(stop, thread_sensitive=thread_sensitive)
    with pytest.raises(RuntimeError, match="StopIteration") as caught:
        await wrapper()
    assert isinstance(caught.value.__cause__, StopIteration)


async def test_exceptions_propagate_with_the_sync_traceback() -> None:
    def explode() -> None:
        raise LookupError("from sync")

    for wrapper in (
        sync_to_async(explode),
        sync_to_async(explode, thread_sensitive=False),
    ):
        with pytest.raises(LookupError, match="from sync") as caught:
            await wrapper()
        frames = [
            frame.name for frame in traceback.extract_tb(caught.value.__traceback__)
        ]
        assert frames[-1] == "explode"
        assert "test_exceptions_propagate_with_the_sync_traceback" in frames


async def test_the_same_exception_object_reaches_the_caller() -> None:
    error = KeyError("same")

    def explode() -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        await sync_to_async(explode)()
    assert caught.value is error


async def test_base_exceptions_propagate() -> None:
    class Stop(BaseException):
        pass

    def explode() -> None:
        raise Stop

    with pytest.raises(Stop):
        await sync_to_async(explode)()
    # The single thread survives and keeps serving.
    assert await sync_to_async(add)(1) == 11


def test_wrapper_does_not_keep_its_arguments_alive(
    eventually: Callable[..., bool],
) -> None:
    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)

    def consume(value: Payload) -> None:
        pass

    asyncio.run(sync_to_async(consume)(payload))
    del payload
    # The worker thread may still be returning from the call.
    assert eventually(lambda: ref() is None)


def test_a_loop_closed_before_a_calls_outcome_is_collected_is_still_freed() -> None:
    release = threading.Event()
    loop = asyncio.new_event_loop()
    # The call's task is destroyed pending, which the loop reports.
    loop.set_exception_handler(lambda loop, context: None)
    with ThreadPoolExecutor(max_workers=1) as pool:
        wait = sync_to_async(release.wait, thread_sensitive=False, executor=pool)
        call = loop.create_task(wait(10))
        loop.run_until_complete(asyncio.sleep(0.05))  # the call reaches the worker
        release.set()
    # The worker has handed the outcome to the loop, which never ran again.
    loop.close()
    loop_ref = weakref.ref(loop)
    del loop, call
    gc.collect()
    assert loop_ref() is None


def test_each_new_loop_in_a_thread_is_the_one_its_calls_report() -> None:
    def calling_loop() -> object:
        return SyncToAsync.threadlocal.main_event_loop

    async def loop_and_caller() -> tuple[object, object]:
        caller = await sync_to_async(calling_loop, thread_sensitive=False)()
        return asyncio.get_running_loop(), caller

    # Each finished loop is kept alive while the next one runs, so a
    # remembered earlier loop is still there to be mistaken for the new one.
    finished = []
    for _ in range(3):
        loop, caller = asyncio.run(loop_and_caller())
        assert caller is loop
        finished.append(loop)
    seen = [weakref.ref(loop) for loop in finished]
    del finished, loop, caller
    gc.collect()
    # Finished loops are not kept alive by having made a call.
    assert [ref() for ref in seen] == [None, None, None]


async def test_its_coroutine_can_be_driven_by_any_runner_of_asyncio_futures() -> None:
    # What a task does with what the coroutine yields, done by hand, as a
    # runner other than asyncio.Task would: no context, done() and result().
    loop = asyncio.get_running_loop()
    coroutine = sync_to_async(lambda: 42)()
    awaited = coroutine.send(None)
    assert asyncio.isfuture(awaited)
    assert awaited.get_loop() is loop
    assert not awaited.done()
    awaited._asyncio_future_blocking = False
    woken: asyncio.Future[None] = loop.create_future()
    awaited.add_done_callback(lambda _: woken.set_result(None))
    await asyncio.wait_for(woken, timeout=10)
    assert awaited.done()
    assert not awaited.cancelled()
    awaited.result()
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)
    assert finished.value.value == 42


async def test_a_runner_may_register_for_the_outcome_after_it_came_in() -> None:
    loop = asyncio.get_running_loop()
    coroutine = sync_to_async(lambda: "late")()
    awaited = coroutine.send(None)
    awaited._asyncio_future_blocking = False
    for _ in range(1000):  # about 10 s at most
        if awaited.done():
            break
        await asyncio.sleep(0.01)
    assert awaited.done()
    woken: asyncio.Future[None] = loop.create_future()
    awaited.add_done_callback(lambda _: woken.set_result(None))
    await asyncio.wait_for(woken, timeout=10)
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)
    assert finished.value.value == "late"
