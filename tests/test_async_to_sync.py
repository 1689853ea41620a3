"""Behaviour of ``asgiref.sync.async_to_sync`` and ``AsyncToSync``."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import inspect
import sys
import threading
import traceback
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, ClassVar, TypeVar

import pytest

from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.local import Local
from asgiref.sync import (
    AsyncSingleThreadContext,
    AsyncToSync,
    async_to_sync,
    markcoroutinefunction,
    sync_to_async,
)

T = TypeVar("T")
NOT_ASYNC_WARNING = r"^async_to_sync was passed a non-async-marked callable$"
IN_LOOP_ERROR = (
    r"^You cannot use AsyncToSync in the same thread as an async event loop - "
    r"just await the async function directly\.$"
)


async def add(a: int, b: int = 10) -> int:
    """Add two numbers, asynchronously."""
    await asyncio.sleep(0)
    return a + b


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def loop_and_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    return asyncio.get_running_loop(), threading.current_thread()


# Built at import time, with no event loop anywhere: the loop it runs on
# must be chosen when it is called.
module_level_wrapper = async_to_sync(running_loop)


# Public surface


def test_async_to_sync_signature() -> None:
    parameters = inspect.signature(async_to_sync).parameters
    assert [(p.name, p.kind, p.default) for p in parameters.values()] == [
        ("awaitable", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
        ("force_new_loop", inspect.Parameter.KEYWORD_ONLY, False),
    ]


def test_async_to_sync_class_signature() -> None:
    parameters = inspect.signature(AsyncToSync).parameters
    assert [(p.name, p.kind, p.default) for p in parameters.values()] == [
        ("awaitable", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("force_new_loop", inspect.Parameter.POSITIONAL_OR_KEYWORD, False),
    ]


def test_bare_use_returns_an_async_to_sync_instance() -> None:
    wrapper = async_to_sync(add)
    assert isinstance(wrapper, AsyncToSync)
    assert wrapper(1, 2) == 3


@pytest.mark.parametrize(
    "options", [{}, {"force_new_loop": False}, {"force_new_loop": True}]
)
def test_decorator_factory_returns_an_async_to_sync_instance(
    options: dict[str, Any],
) -> None:
    wrapper = async_to_sync(**options)(add)
    assert isinstance(wrapper, AsyncToSync)
    assert wrapper(1) == 11


def test_class_can_be_used_directly() -> None:
    assert AsyncToSync(add)(2, b=3) == 5
    assert AsyncToSync(add, True)(2) == 12


def test_passes_arguments_and_returns_the_result() -> None:
    assert async_to_sync(add)(1, 2) == 3
    assert async_to_sync(add)(1) == 11
    assert async_to_sync(add)(a=4, b=4) == 8

    sentinel = object()

    async def identity(value: object) -> object:
        return value

    assert async_to_sync(identity)(sentinel) is sentinel


def test_decorated_coroutine_function_becomes_sync() -> None:
    @async_to_sync
    async def bare(value: int) -> int:
        return value + 1

    @async_to_sync(force_new_loop=True)
    async def configured(value: int) -> int:
        return value + 2

    assert bare(1) == 2
    assert configured(1) == 3


def test_wrapper_is_not_a_coroutine_function() -> None:
    assert not inspect.iscoroutinefunction(async_to_sync(add))


def test_wraps_objects_with_an_async_call_without_warning() -> None:
    class Service:
        async def __call__(self, value: int) -> int:
            return value * 3

    assert async_to_sync(Service())(3) == 9


def test_wraps_partials_of_coroutine_functions_without_warning() -> None:
    assert async_to_sync(functools.partial(add, 5))(5) == 10


def test_wraps_functions_marked_as_coroutine_functions_without_warning() -> None:
    def marked(value: int) -> Awaitable[int]:
        return add(value, 1)

    markcoroutinefunction(marked)
    assert async_to_sync(marked)(1) == 2


def test_warns_for_callables_not_marked_async_but_still_runs_them() -> None:
    def returns_awaitable(value: int) -> Awaitable[int]:
        return add(value, 2)

    with pytest.warns(UserWarning, match=NOT_ASYNC_WARNING):
        wrapper = async_to_sync(returns_awaitable)
    assert wrapper(1) == 3


def test_warns_for_non_callables_and_calling_them_raises_type_error() -> None:
    with pytest.warns(UserWarning, match=NOT_ASYNC_WARNING):
        wrapper = async_to_sync(42)  # ty: ignore[invalid-argument-type]
    with pytest.raises(TypeError):
        wrapper()


def test_decorator_factory_warns_when_applied() -> None:
    decorate = async_to_sync(force_new_loop=True)

    def not_async() -> Awaitable[None]:
        return asyncio.sleep(0)

    with pytest.warns(UserWarning, match=NOT_ASYNC_WARNING):
        decorate(not_async)


def test_warning_from_the_class_points_at_the_caller() -> None:
    def not_async() -> None:
        pass

    with pytest.warns(UserWarning, match=NOT_ASYNC_WARNING) as caught:
        AsyncToSync(not_async)  # ty: ignore[invalid-argument-type]
    assert caught[0].filename == __file__


def test_no_warning_for_coroutine_functions() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async_to_sync(add)
        async_to_sync(force_new_loop=True)(add)


async def test_calling_inside_a_running_loop_is_refused_before_calling_the_function() -> (
    None
):
    calls: list[str] = []

    def spy() -> Awaitable[None]:
        calls.append("called")
        return asyncio.sleep(0)

    markcoroutinefunction(spy)
    for wrapper in (async_to_sync(spy), async_to_sync(spy, force_new_loop=True)):
        with pytest.raises(RuntimeError, match=IN_LOOP_ERROR):
            wrapper()
    assert calls == []


def test_runs_in_a_thread_that_has_a_loop_set_but_not_running(
    in_new_thread: Callable[..., Any],
) -> None:
    def body() -> int:
        idle = asyncio.new_event_loop()
        asyncio.set_event_loop(idle)
        try:
            return async_to_sync(add)(1)
        finally:
            asyncio.set_event_loop(None)
            idle.close()

    assert in_new_thread(body) == 11


# Methods


class Service:
    def __init__(self, name: str) -> None:
        self.name = name

    @async_to_sync
    async def describe(self, suffix: str = "") -> tuple[Service, str]:
        """Describe the service."""
        await asyncio.sleep(0)
        return self, self.name + suffix

    async def plain(self, value: int) -> tuple[Service, int]:
        return self, value


def test_decorated_method_binds_to_the_instance() -> None:
    service = Service("svc")
    assert service.describe() == (service, "svc")
    assert service.describe("!") == (service, "svc!")
    assert service.describe(suffix="?") == (service, "svc?")


def test_bound_decorated_method_carries_metadata() -> None:
    bound: Any = Service("svc").describe
    assert bound.__name__ == "describe"
    assert bound.__doc__ == "Describe the service."
    assert inspect.iscoroutinefunction(bound.__wrapped__)
    assert not inspect.iscoroutinefunction(bound)


def test_wrapping_a_bound_coroutine_method_exposes_self() -> None:
    service = Service("svc")
    wrapper: Any = async_to_sync(service.plain)
    assert wrapper.__self__ is service
    assert wrapper(5) == (service, 5)


def test_wrapping_a_plain_function_sets_no_self() -> None:
    assert not hasattr(async_to_sync(add), "__self__")


# Which loop and thread run the coroutine


def test_from_a_plain_thread_runs_in_a_new_loop_on_another_thread() -> None:
    loop, thread = async_to_sync(loop_and_thread)()
    assert thread is not threading.current_thread()
    assert loop.is_closed()


def test_each_call_from_a_plain_thread_gets_a_fresh_loop() -> None:
    wrapper = async_to_sync(loop_and_thread)
    first_loop, first_thread = wrapper()
    second_loop, second_thread = wrapper()
    assert first_loop is not second_loop
    # Which thread runs the loop is not part of the contract: asgire reuses
    # idle loop threads, upstream starts a new one per call.
    assert threading.current_thread() not in (first_thread, second_thread)
    assert first_loop.is_closed()
    assert second_loop.is_closed()


def test_works_from_any_plain_thread(in_new_thread: Callable[..., Any]) -> None:
    loop, thread = in_new_thread(async_to_sync(loop_and_thread))
    assert loop.is_closed()
    assert thread is not threading.current_thread()


def test_tasks_left_running_are_cancelled_when_the_call_returns() -> None:
    events: list[str] = []
    leftover: list[asyncio.Task[None]] = []

    async def lingering() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def body() -> str:
        leftover.append(asyncio.ensure_future(lingering()))
        await asyncio.sleep(0)
        return "done"

    assert async_to_sync(body)() == "done"
    assert events == ["cancelled"]
    assert leftover[0].cancelled()


async def numbers_recording_close(events: list[str]) -> AsyncIterator[int]:
    """Yields 1 and 2; appends "finalized" to ``events`` once closed."""
    try:
        yield 1
        yield 2
    finally:
        events.append("finalized")


def test_async_generators_left_open_are_finalized() -> None:
    events: list[str] = []
    kept: list[AsyncIterator[int]] = []

    async def body() -> int:
        generator = numbers_recording_close(events)
        kept.append(generator)  # keep it alive so only loop shutdown closes it
        return await generator.__anext__()

    assert async_to_sync(body)() == 1
    assert events == ["finalized"]


@pytest.mark.parametrize("single_thread", [False, True])
def test_a_leftover_failing_on_cancellation_is_reported_like_asyncio_run(
    single_thread: bool,
) -> None:
    # At the call's end, or (a shared loop) at the context's.
    reported: list[dict[str, Any]] = []
    leftover: list[asyncio.Task[None]] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("failed while being cancelled") from None

    async def body() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context))
        leftover.append(loop.create_task(stubborn()))
        await asyncio.sleep(0)

    with AsyncSingleThreadContext() if single_thread else contextlib.nullcontext():
        async_to_sync(body)()
    (report,) = reported
    assert report["message"] == "unhandled exception during asyncio.run() shutdown"
    assert report["exception"] is leftover[0].exception()
    assert report["task"] is leftover[0]


def test_an_async_generator_dropped_on_the_last_step_is_finalized() -> None:
    # Dropping it queues its aclose() as a task, from a callback that only
    # runs once the coroutine has returned.
    events: list[str] = []

    async def body() -> int:
        return await numbers_recording_close(events).__anext__()

    assert async_to_sync(body)() == 1
    assert events == ["finalized"]


def test_an_async_generator_a_cancelled_leftover_drops_is_finalized() -> None:
    # The generator closes in a task of its own, started only after the
    # leftover has been cancelled, and its clean-up awaits: like asyncio.run,
    # the call gives it the loop turns that needs before the loop closes.
    events: list[str] = []

    async def slow_to_close() -> AsyncIterator[int]:
        try:
            yield 1
        finally:
            for _ in range(3):
                await asyncio.sleep(0)
            events.append("finalized")

    async def lingering() -> None:
        async for _ in slow_to_close():
            await asyncio.sleep(60)  # cancelled here, dropping the generator

    leftover: list[asyncio.Task[None]] = []

    async def body() -> None:
        leftover.append(asyncio.ensure_future(lingering()))
        await asyncio.sleep(0)

    async_to_sync(body)()
    assert events == ["finalized"]


class Escape:
    """A coroutine body that leaves a task, an async generator and its own
    ``finally`` pending when something ends its loop early (``interrupt``),
    recording each clean-up in ``events``."""

    def __init__(self, interrupt: Callable[[], Awaitable[None]]) -> None:
        self.interrupt = interrupt
        self.events: set[str] = set()
        self.generators: list[AsyncIterator[int]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def _lingering(self) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.events.add("task cancelled")
            raise

    async def body(self) -> None:
        self.loop = asyncio.get_running_loop()
        generator = numbers_recording_close([])
        self.generators.append(generator)  # only loop shutdown closes it
        await generator.__anext__()
        self.tasks.append(asyncio.ensure_future(self._lingering()))
        await asyncio.sleep(0)
        try:
            await self.interrupt()
            await asyncio.sleep(60)
        finally:
            self.events.add("body finally")

    def generator_closed(self) -> bool:
        frame = getattr(self.generators[0], "ag_frame", None)
        return frame is None


async def raise_in_a_sibling(exception: BaseException) -> None:
    async def raiser() -> None:
        raise exception

    task = asyncio.ensure_future(raiser())
    # Retrieved, so that asyncio does not log it when the task goes.
    task.add_done_callback(lambda done: done.exception())


async def stop_the_loop() -> None:
    asyncio.get_running_loop().stop()


@pytest.mark.parametrize(
    ("interrupt", "raised"),
    [
        pytest.param(
            lambda: raise_in_a_sibling(KeyboardInterrupt()),
            KeyboardInterrupt,
            id="KeyboardInterrupt",
        ),
        pytest.param(
            lambda: raise_in_a_sibling(SystemExit(3)), SystemExit, id="SystemExit"
        ),
        pytest.param(stop_the_loop, RuntimeError, id="stopped"),
    ],
)
def test_a_loop_ended_early_is_still_cleaned_up_like_asyncio_run(
    interrupt: Callable[[], Awaitable[None]], raised: type[BaseException]
) -> None:
    escape = Escape(interrupt)
    with pytest.raises(raised):
        async_to_sync(escape.body)()
    # Pending tasks were cancelled and awaited (the body's own included),
    # async generators shut down, and the loop closed.
    assert escape.events == {"task cancelled", "body finally"}
    assert escape.tasks[0].cancelled()
    assert escape.generator_closed()
    assert escape.loop is not None
    assert escape.loop.is_closed()
    assert escape.loop not in AsyncToSync.loop_thread_executors


@pytest.mark.parametrize(
    "exception",
    [KeyboardInterrupt(), SystemExit(3)],
    ids=["KeyboardInterrupt", "SystemExit"],
)
def test_an_interrupt_escaping_a_call_in_a_single_thread_context_fails_that_call(
    exception: BaseException,
) -> None:
    escape = Escape(lambda: raise_in_a_sibling(exception))

    async def loop_is_running() -> bool:
        return asyncio.get_running_loop().is_running()

    with AsyncSingleThreadContext():
        with pytest.raises(type(exception)) as raised:
            async_to_sync(escape.body)()
        assert raised.value is exception
        # What the call left was cleaned up as asyncio.run cleans up.
        assert escape.events == {"task cancelled", "body finally"}
        assert escape.tasks[0].cancelled()
        assert escape.generator_closed()
        assert escape.loop is not None
        assert escape.loop.is_closed()
        # Later calls in the block still run.
        assert async_to_sync(loop_is_running)()
        assert async_to_sync(loop_is_running)()
    # The block exits without raising anything, and calls after it run.
    assert async_to_sync(loop_is_running)()


def test_a_call_made_while_an_interrupt_ends_a_blocks_loop_runs_after_it() -> None:
    """Another thread sharing the block calls while the clean-up after an
    interrupt is still running: that call waits for it, then runs."""
    interrupt = SystemExit(4)
    cleaning_up = threading.Event()
    release = threading.Event()

    async def slow_to_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cleaning_up.set()
            await asyncio.to_thread(release.wait, 10)
            raise

    interrupted_loops: list[asyncio.AbstractEventLoop] = []
    leftovers: list[asyncio.Task[None]] = []

    async def interrupted() -> None:
        interrupted_loops.append(asyncio.get_running_loop())
        leftovers.append(asyncio.ensure_future(slow_to_cancel()))
        await asyncio.sleep(0)
        await raise_in_a_sibling(interrupt)
        await asyncio.sleep(60)

    async def running_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    later: Future[asyncio.AbstractEventLoop] = Future()

    def call_during_the_clean_up(context: contextvars.Context) -> None:
        assert cleaning_up.wait(timeout=10)
        # Most likely before the clean-up ends; the outcome is the same after.
        threading.Timer(0.3, release.set).start()
        later.set_result(context.run(async_to_sync(running_loop)))

    with AsyncSingleThreadContext():
        other = threading.Thread(
            target=call_during_the_clean_up, args=(contextvars.copy_context(),)
        )
        other.start()
        with pytest.raises(SystemExit) as raised:
            async_to_sync(interrupted)()
        assert raised.value is interrupt
        other.join(timeout=10)
        assert later.result(timeout=0) is not interrupted_loops[0]
        assert interrupted_loops[0].is_closed()


@pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="asyncio.run asks for a bounded wait from 3.12; the loop bounds it from 3.13",
)
@pytest.mark.filterwarnings("ignore:The executor did not finish")
def test_a_stuck_default_executor_job_delays_the_return_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio.constants

    monkeypatch.setattr(asyncio.constants, "THREAD_JOIN_TIMEOUT", 0.1)
    release = threading.Event()
    job_finished = threading.Event()

    def stuck() -> None:
        release.wait(timeout=10)
        job_finished.set()

    async def body() -> None:
        asyncio.get_running_loop().run_in_executor(None, stuck)

    try:
        async_to_sync(body)()
        assert not job_finished.is_set()
    finally:
        release.set()
    assert job_finished.wait(timeout=10)


def test_a_task_the_last_step_schedules_is_cancelled_before_it_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    created: list[asyncio.Task[None]] = []

    async def late() -> None:
        events.append("started")

    async def body() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: created.append(loop.create_task(late())))

    async_to_sync(body)()
    assert events == []
    assert created[0].cancelled()
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_a_finished_calls_loop_is_not_kept_alive() -> None:
    loop = weakref.ref(async_to_sync(running_loop)())
    gc.collect()
    assert loop() is None


def test_readers_a_call_left_registered_never_fire_in_a_later_call() -> None:
    import socket

    fired: list[str] = []
    reader, writer = socket.socketpair()

    async def register_and_leave() -> None:
        asyncio.get_running_loop().add_reader(reader, fired.append, "stale")

    async def wait_a_little() -> None:
        await asyncio.sleep(0.05)

    try:
        async_to_sync(register_and_leave)()
        writer.send(b"x")  # the reader's socket is readable from now on
        async_to_sync(wait_a_little)()
    finally:
        reader.close()
        writer.close()
    assert fired == []


@contextlib.contextmanager
def event_loop_policy(
    policy: asyncio.AbstractEventLoopPolicy,
) -> Generator[None, None, None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies, 3.14+
        previous = asyncio.get_event_loop_policy()  # ty: ignore[deprecated]
        asyncio.set_event_loop_policy(policy)  # ty: ignore[deprecated]
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(previous)  # ty: ignore[deprecated]


class RecordingLoop(asyncio.SelectorEventLoop):
    made: ClassVar[list[asyncio.AbstractEventLoop]] = []

    def __init__(self) -> None:
        super().__init__()
        self.made.append(self)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # policies, 3.14+
    _DefaultPolicy: Any = asyncio.DefaultEventLoopPolicy


def test_each_call_gets_its_loop_from_the_event_loop_policy() -> None:
    class Policy(_DefaultPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return RecordingLoop()

    RecordingLoop.made.clear()
    with event_loop_policy(Policy()):
        first = async_to_sync(running_loop)()
        second = async_to_sync(running_loop)()
    assert RecordingLoop.made == [first, second]
    assert first.is_closed()
    assert second.is_closed()


def test_a_policy_with_its_own_loop_factory_is_honoured() -> None:
    # How uvloop's policy picks its loop.
    class Policy(_DefaultPolicy):
        _loop_factory = RecordingLoop

    RecordingLoop.made.clear()
    with event_loop_policy(Policy()):
        loop = async_to_sync(running_loop)()
    assert RecordingLoop.made == [loop]
    assert loop.is_closed()


@pytest.mark.parametrize("single_thread", [False, True])
def test_a_patched_new_event_loop_is_honoured(
    monkeypatch: pytest.MonkeyPatch, single_thread: bool
) -> None:
    RecordingLoop.made.clear()
    monkeypatch.setattr(asyncio.events, "new_event_loop", RecordingLoop)
    with AsyncSingleThreadContext() if single_thread else contextlib.nullcontext():
        loop = async_to_sync(running_loop)()
    assert RecordingLoop.made == [loop]
    assert loop.is_closed()


def test_a_patched_asyncio_run_runs_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # Upstream starts each call's loop with asyncio.run, looked up per call.
    ran: list[threading.Thread] = []
    stock_run = asyncio.run

    def recording_run(main: Any, **kwargs: Any) -> Any:
        ran.append(threading.current_thread())
        return stock_run(main, **kwargs)

    monkeypatch.setattr(asyncio, "run", recording_run)
    first = async_to_sync(running_loop)()
    second = async_to_sync(running_loop)()
    assert first is not second
    assert first.is_closed()
    assert second.is_closed()
    assert len(ran) == 2
    assert threading.current_thread() not in ran


async def test_inside_sync_to_async_runs_on_the_outer_loop() -> None:
    outer = asyncio.get_running_loop()
    wrapper = async_to_sync(running_loop)
    assert await sync_to_async(wrapper)() is outer
    assert await sync_to_async(wrapper, thread_sensitive=False)() is outer


async def test_inside_sync_to_async_the_coroutine_runs_as_another_task() -> None:
    this_task = asyncio.current_task()

    async def which_task() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    other = await sync_to_async(async_to_sync(which_task))()
    assert other is not None
    assert other is not this_task


class MarkedTask(asyncio.Task):  # type: ignore[type-arg]
    """The tasks of test_the_outer_loops_task_factory_makes_the_task."""


async def test_the_outer_loops_task_factory_makes_the_task() -> None:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(
        lambda loop, coro, **kwargs: MarkedTask(coro, loop=loop, **kwargs)
    )

    async def which_task() -> asyncio.Task[Any] | None:
        await asyncio.sleep(0)
        return asyncio.current_task()

    try:
        task = await sync_to_async(async_to_sync(which_task))()
    finally:
        loop.set_task_factory(None)
    assert type(task) is MarkedTask


@pytest.mark.asgire_only  # upstream leaves the sync caller waiting for good
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
@pytest.mark.parametrize("single_thread", [False, True], ids=["outer", "shared"])
def test_a_task_factory_that_raises_fails_the_call(single_thread: bool) -> None:
    armed = threading.Event()

    def factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if armed.is_set():
            raise ValueError("no task today")
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def set_factory() -> None:
        asyncio.get_running_loop().set_task_factory(factory)

    def call_with_the_factory_armed() -> BaseException | None:
        armed.set()
        try:
            async_to_sync(running_loop)()
        except BaseException as exc:  # what the caller got
            return exc
        finally:
            armed.clear()
        return None

    async def outer() -> BaseException | None:
        await set_factory()
        return await sync_to_async(call_with_the_factory_armed)()

    if single_thread:
        with AsyncSingleThreadContext():
            async_to_sync(set_factory)()
            raised = call_with_the_factory_armed()
    else:
        raised = asyncio.run(outer())
    assert isinstance(raised, ValueError)
    assert str(raised) == "no task today"
    # The error's traceback holds the unrun coroutine: free it here, where
    # its "never awaited" warning is expected.
    del raised
    gc.collect()


async def test_a_coroutine_that_never_suspends_reports_back_to_the_outer_loop() -> None:
    caller_thread = threading.current_thread()

    async def at_once(value: int) -> tuple[int, threading.Thread, bool]:
        task = asyncio.current_task()
        return value, threading.current_thread(), task is not None

    def sync_part() -> list[tuple[int, threading.Thread, bool]]:
        return [async_to_sync(at_once)(value) for value in range(3)]

    results = await sync_to_async(sync_part)()
    assert results == [(value, caller_thread, True) for value in range(3)]


async def test_loop_is_chosen_at_call_time_not_construction(
    in_new_thread: Callable[..., Any],
) -> None:
    outer = asyncio.get_running_loop()
    # Constructed with no loop, called inside sync_to_async: the outer loop.
    assert await sync_to_async(module_level_wrapper)() is outer

    # Constructed inside sync_to_async, later called from a plain thread: a
    # new loop, not the one that was around at construction.
    built_inside = await sync_to_async(lambda: async_to_sync(running_loop))()

    def from_plain_thread() -> asyncio.AbstractEventLoop:
        return in_new_thread(built_inside)

    elsewhere = await sync_to_async(from_plain_thread, thread_sensitive=False)()
    assert elsewhere is not outer
    assert elsewhere.is_closed()


async def test_threads_started_from_sync_to_async_do_not_reuse_the_outer_loop(
    in_new_thread: Callable[..., Any],
) -> None:
    outer = asyncio.get_running_loop()

    def spawn() -> asyncio.AbstractEventLoop:
        return in_new_thread(async_to_sync(running_loop))

    assert await sync_to_async(spawn)() is not outer


class Outliver:
    """A sync function, run by ``sync_to_async`` on its own pool, that goes on
    after its caller gave up and then calls ``async_to_sync(loop_and_thread)``
    once ``release()`` is called; ``outcome`` gets what that returns."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outliver")
        self._released = threading.Event()
        self.calling = threading.Event()
        self.outcome: Future[tuple[asyncio.AbstractEventLoop, threading.Thread]] = (
            Future()
        )

    def _body(self) -> None:
        try:
            assert self._released.wait(timeout=10)
            self.calling.set()
            self.outcome.set_result(async_to_sync(loop_and_thread)())
        except BaseException as exc:
            self.outcome.set_exception(exc)

    async def start_and_give_up(self) -> asyncio.AbstractEventLoop:
        """Start the call, then stop waiting for it (as a timeout would)."""
        call = sync_to_async(self._body, thread_sensitive=False, executor=self.pool)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(call(), timeout=0.05)
        return asyncio.get_running_loop()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.pool.shutdown()


def test_sync_code_that_outlived_its_closed_loop_runs_the_coroutine_anew() -> None:
    outliver = Outliver()
    try:
        closed = asyncio.run(outliver.start_and_give_up())
        outliver.release()
        loop, thread = outliver.outcome.result(timeout=10)
    finally:
        outliver.close()
    assert loop is not closed
    assert loop.is_closed()  # a loop of its own, closed when the call returned
    assert thread is not threading.current_thread()


def test_sync_code_whose_loop_is_idle_waits_for_it_to_run_again() -> None:
    async def collect(outcome: Future[T]) -> T:
        return await asyncio.wait_for(asyncio.wrap_future(outcome), timeout=10)

    outliver = Outliver()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(outliver.start_and_give_up())
        outliver.release()
        assert outliver.calling.wait(timeout=10)
        # Nothing runs the coroutine until the loop does.
        with pytest.raises(FutureTimeoutError):
            outliver.outcome.exception(timeout=0.3)
        ran_on = loop.run_until_complete(collect(outliver.outcome))
    finally:
        outliver.close()
        loop.close()
    assert ran_on == (loop, threading.current_thread())


async def test_a_slow_coroutine_on_the_outer_loop_is_waited_for() -> None:
    async def slow() -> str:
        await asyncio.sleep(0.6)  # longer than any internal polling interval
        return "done"

    assert await sync_to_async(async_to_sync(slow))() == "done"


@pytest.mark.asgire_only
@pytest.mark.parametrize("thread_sensitive", [False, True])
def test_a_loop_closing_under_a_waiting_call_frees_the_sync_thread(
    thread_sensitive: bool,
) -> None:
    # Upstream's sync thread waits forever for a coroutine its loop dropped
    # at close; a thread-sensitive one then blocks every later such call.
    outcome: Future[Any] = Future()
    loop = asyncio.new_event_loop()

    async def never_finishes(entered: asyncio.Event) -> None:
        entered.set()
        await asyncio.Event().wait()

    def waits_on_the_loop(entered: asyncio.Event) -> None:
        try:
            outcome.set_result(async_to_sync(never_finishes)(entered))
        except BaseException as exc:
            outcome.set_exception(exc)

    async def main() -> None:
        entered = asyncio.Event()
        # Left running on purpose: the loop closes under both calls.
        leftover.append(
            asyncio.ensure_future(
                sync_to_async(waits_on_the_loop, thread_sensitive=thread_sensitive)(
                    entered
                )
            )
        )
        await entered.wait()

    leftover: list[asyncio.Future[None]] = []
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed before the coroutine finished"):
        outcome.result(timeout=10)
    # The thread is free again: the next thread-sensitive call runs.
    assert asyncio.run(sync_to_async(threading.get_ident)())


async def test_force_new_loop_ignores_the_outer_loop() -> None:
    outer = asyncio.get_running_loop()
    outer_thread = threading.current_thread()

    def call() -> tuple[asyncio.AbstractEventLoop, threading.Thread, threading.Thread]:
        loop, thread = async_to_sync(loop_and_thread, force_new_loop=True)()
        return loop, thread, threading.current_thread()

    loop, thread, caller = await sync_to_async(call)()
    assert loop is not outer
    assert loop.is_closed()
    assert thread is not outer_thread
    assert thread is not caller


def test_nested_async_to_sync_reuses_the_loop_of_the_enclosing_one() -> None:
    async def outer() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        inner = await sync_to_async(async_to_sync(running_loop))()
        return asyncio.get_running_loop(), inner

    outer_loop, inner_loop = async_to_sync(outer)()
    assert inner_loop is outer_loop


def test_a_task_a_nested_call_leaves_behind_still_reaches_the_sync_thread() -> None:
    # The nested call returns, and its sync thread's executor quits, before
    # the task it started makes its thread-sensitive call: that call goes to
    # the closest sync thread still waiting, the outermost caller.
    ran_in: list[threading.Thread] = []

    def record_thread() -> None:
        ran_in.append(threading.current_thread())

    async def outer() -> None:
        left_behind: list[asyncio.Task[None]] = []

        async def start_and_leave() -> None:
            task = asyncio.create_task(sync_to_async(record_thread)())
            left_behind.append(task)

        await sync_to_async(async_to_sync(start_and_leave))()
        await left_behind[0]

    async_to_sync(outer)()
    assert ran_in == [threading.current_thread()]


def test_async_single_thread_context_is_ignored_when_an_outer_loop_exists() -> None:
    async def outer() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        def middle() -> asyncio.AbstractEventLoop:
            with AsyncSingleThreadContext():
                return async_to_sync(running_loop)()

        return asyncio.get_running_loop(), await sync_to_async(middle)()

    outer_loop, inner_loop = async_to_sync(outer)()
    assert inner_loop is outer_loop


async def test_forked_child_does_not_reuse_the_parents_loop(
    in_forked_child: Callable[..., str],
) -> None:
    def child() -> None:
        # This worker thread's state names the parent's loop, which is not
        # running in the child: the call must make a loop of its own.
        assert async_to_sync(add)(1) == 11

    assert await sync_to_async(in_forked_child)(child) == ""


# Class attributes


def test_class_attributes_have_the_documented_types() -> None:
    assert isinstance(AsyncToSync.executors, Local)
    assert isinstance(AsyncToSync.loop_thread_executors, dict)
    assert isinstance(AsyncToSync.async_single_thread_context, contextvars.ContextVar)
    assert isinstance(AsyncToSync.context_to_thread_executor, weakref.WeakKeyDictionary)


def test_current_executor_is_set_only_while_waiting() -> None:
    def current() -> Any:
        return getattr(AsyncToSync.executors, "current", None)

    async def inside() -> Any:
        return current()

    assert current() is None
    seen = async_to_sync(inside)()
    assert isinstance(seen, CurrentThreadExecutor)
    assert current() is None


def test_each_sync_frame_gets_its_own_current_executor() -> None:
    def current() -> Any:
        return getattr(AsyncToSync.executors, "current", None)

    async def innermost() -> Any:
        return current()

    def middle() -> tuple[Any, Any, Any]:
        before = current()
        nested = async_to_sync(innermost)()
        return before, nested, current()

    async def outer() -> tuple[Any, tuple[Any, Any, Any]]:
        return current(), await sync_to_async(middle)()

    outer_executor, (before, nested, after) = async_to_sync(outer)()
    assert isinstance(outer_executor, CurrentThreadExecutor)
    assert before is outer_executor
    assert isinstance(nested, CurrentThreadExecutor)
    assert nested is not outer_executor
    assert after is outer_executor


def test_loop_thread_executors_maps_the_new_loop_while_it_runs() -> None:
    async def inside() -> tuple[bool, Any, Any, asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        return (
            loop in AsyncToSync.loop_thread_executors,
            AsyncToSync.loop_thread_executors.get(loop),
            AsyncToSync.executors.current,
            loop,
        )

    registered, mapped, current, loop = async_to_sync(inside)()
    assert registered
    assert isinstance(mapped, CurrentThreadExecutor)
    assert mapped is current
    assert loop not in AsyncToSync.loop_thread_executors


async def test_outer_loop_is_not_registered_in_loop_thread_executors() -> None:
    async def inside() -> bool:
        return asyncio.get_running_loop() in AsyncToSync.loop_thread_executors

    assert not await sync_to_async(async_to_sync(inside))()


# Results and errors


def test_exceptions_propagate_with_the_async_traceback() -> None:
    async def explode() -> None:
        await asyncio.sleep(0)
        raise LookupError("from async")

    with pytest.raises(LookupError, match="from async") as caught:
        async_to_sync(explode)()
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "explode"
    assert frames[0] == "test_exceptions_propagate_with_the_async_traceback"


async def test_exceptions_propagate_from_the_outer_loop_too() -> None:
    error = KeyError("same")

    async def explode() -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        await sync_to_async(async_to_sync(explode))()
    assert caught.value is error


def test_bad_arguments_raise_type_error_in_the_caller() -> None:
    wrapper = async_to_sync(add)
    with pytest.raises(TypeError):
        wrapper(1, 2, 3)  # ty: ignore[too-many-positional-arguments]
    with pytest.raises(TypeError):
        wrapper(1, c=3)  # ty: ignore[unknown-argument]


def test_an_event_loop_that_cannot_be_made_fails_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse() -> asyncio.AbstractEventLoop:
        raise RuntimeError("no event loop for you")

    # asyncio.run() asks asyncio.events; the package re-exports the function.
    monkeypatch.setattr(asyncio.events, "new_event_loop", refuse)
    monkeypatch.setattr(asyncio, "new_event_loop", refuse)
    with pytest.raises(RuntimeError, match=r"^no event loop for you$"):
        async_to_sync(add)(1)


def test_base_exceptions_propagate() -> None:
    class Stop(BaseException):
        pass

    async def explode() -> None:
        raise Stop

    with pytest.raises(Stop):
        async_to_sync(explode)()


def test_repeated_calls_do_not_accumulate_threads(thread_watch: Any) -> None:
    wrapper = async_to_sync(add)
    for _ in range(20):
        assert wrapper(1) == 11
    # Each call's loop thread ends once its executor is collected (upstream)
    # or waits idle for the next call (asgire): one may be left, never more.
    thread_watch.assert_at_most_started(1)


def test_concurrent_callers_each_get_their_own_result() -> None:
    barrier = threading.Barrier(4, timeout=10)

    async def echo(value: int) -> int:
        await asyncio.sleep(0)
        return value

    def call(value: int) -> int:
        barrier.wait()
        return async_to_sync(echo)(value)

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda v=v: results.append(call(v))) for v in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(results) == [0, 1, 2, 3]


@pytest.mark.asgire_only
def test_keyword_named_self_reaches_the_coroutine() -> None:
    async def echo(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    # Upstream's __call__(self, *args, **kwargs) takes this keyword itself.
    assert async_to_sync(echo)(self=1) == {"self": 1}
