"""Bridges between sync and async code: ``sync_to_async`` and ``async_to_sync``.

This module holds what user code sees, in upstream's order: the helpers for
coroutine functions, the two context managers, ``AsyncToSync``,
``SyncToAsync`` and the two functions. What makes a crossing cheap lives in
``asgiref._bridge``, one mechanism per module, each opening with what it
guarantees and what it relies on (the README's "Code map" lists them).

What a crossing guarantees, as upstream's does:

- ``await sync_to_async(f)(...)`` runs ``f`` on a worker thread (chosen as
  ``SyncToAsync`` describes), in a copy of the caller's context, with the
  caller's exception being handled; the caller then sees the context
  variables ``f`` set, and gets its result or exception. Cancelling the
  caller abandons a call that has not started.
- ``async_to_sync(f)(...)`` runs ``f``'s coroutine on the event loop of the
  ``sync_to_async`` call the thread is running, else on the enclosing
  ``AsyncSingleThreadContext``'s loop, else on a new loop; meanwhile the
  calling thread runs the thread-sensitive sync code the coroutine sends
  back to it, so sync code keeps to one thread however deeply calls nest.
- ``Local`` data is shared between the caller and the code a crossing runs
  on its behalf, in either direction.

What it relies on: the mechanisms fall back to upstream's own paths
(``loop.run_in_executor``, ``executor.submit``, ``call_soon_threadsafe``,
``asyncio.run``) wherever a tool has replaced one of those, and wherever a
capability of the running Python is missing (``asgiref._compat``).

State: the class attributes, shared by every thread (each says what it
holds); ``single_thread_executor`` may be replaced at start-up. A forked
child resets what this module keeps (see the end); each mechanism resets
its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import wait as _wait_for
from types import FunctionType, MethodType

# Dict, List and Optional go unused here: upstream binds them, so ``import *``
# brings them (see __all__), as does InvalidStateError above.
from typing import (  # noqa: UP035
    TYPE_CHECKING,
    Any,
    ClassVar,
    Dict,
    Generic,
    List,
    Optional,
    ParamSpec,
    TypeVar,
    overload,
)

from . import _compat
from ._bridge import fork as _fork
from ._bridge import hooks as _hooks
from ._bridge import outer_loop as _outer_loop
from ._bridge import request_threads as _request_threads
from ._bridge.at_exit import finish as _finish_at_exit
from ._bridge.context import adopt_local_data as _adopt_local_data
from ._bridge.context import given_context_runner as _given_context_runner
from ._bridge.context import merge_context as _merge_context
from ._bridge.context import raise_then_call as _raise_then_call
from ._bridge.context import (
    restore_context_from_a_loop_thread as _restore_context_from_a_loop_thread,
)
from ._bridge.fresh_loop import run_on_loop_thread as _run_on_loop_thread
from ._bridge.outer_loop import caller_loop as _caller_loop
from ._bridge.outer_loop import registered as _registered
from ._bridge.outer_loop import run_on_running_loop as _run_on_running_loop
from ._bridge.pool import ContextPool as _ContextPool
from ._bridge.pool import retire as _retire
from ._bridge.shared_loop import SharedLoop as _SharedLoop
from ._bridge.shared_loop import enter as _enter_shared_loop
from ._bridge.sync_call import SyncCall as _SyncCall
from ._bridge.sync_call import start as _start
from ._bridge.threads import one_thread_pool as _one_thread_pool
from ._bridge.waiter import Outcome as _Outcome
from ._bridge.waiter import Waiter as _Waiter
from ._bridge.wrapping import copy_metadata as _copy_metadata
from ._compat import get_running_loop_or_none as _running_loop_or_none
from .current_thread_executor import CurrentThreadExecutor
from .local import _STATE as _LOCAL_STATE
from .local import Local, _affinity, _peek

if TYPE_CHECKING:
    from _typeshed import OptExcInfo


# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = [
    "TYPE_CHECKING",
    "Any",
    "AsyncSingleThreadContext",
    "AsyncToSync",
    "Awaitable",
    "Callable",
    "Coroutine",
    "CurrentThreadExecutor",
    "Dict",
    "Executor",
    "Future",
    "Generic",
    "InvalidStateError",
    "List",
    "Local",
    "Optional",
    "ParamSpec",
    "SyncToAsync",
    "ThreadPoolExecutor",
    "ThreadSensitiveContext",
    "TypeVar",
    "async_to_sync",
    "asyncio",
    "contextvars",
    "functools",
    "inspect",
    "iscoroutinefunction",
    "markcoroutinefunction",
    "os",
    "overload",
    "sync_to_async",
    "sys",
    "threading",
    "warnings",
    "weakref",
]


_P = ParamSpec("_P")
_R = TypeVar("_R")

_MISSING: Any = object()


def _restore_context(context: contextvars.Context) -> None:
    """Apply ``context``'s values to the current context, as a crossing does
    when it returns, and make the ``Local`` data it then carries visible to
    the current thread.

    asgiref 3.13.0 defines this helper and code outside it imports it.
    """
    _merge_context(context)
    _adopt_local_data()


# -- Coroutine functions --------------------------------------------------------

iscoroutinefunction = _compat.iscoroutinefunction
markcoroutinefunction = _compat.markcoroutinefunction
# What markcoroutinefunction() sets, to set it directly; None if not known.
_MARKER_NAME, _MARKER_VALUE = _compat.COROUTINE_MARKER or (None, None)
_COROUTINE = inspect.CO_COROUTINE


def _is_async_callable(func: Any) -> bool:
    """Whether ``func`` or its ``__call__`` is a coroutine function.

    An async generator function is not: called, it returns its generator
    without awaiting anything, so ``sync_to_async`` accepts it as upstream
    does."""
    if type(func) is MethodType and type(func.__func__) is FunctionType:
        # A bound method (Django wraps several per request): inspect looks
        # through it to its function, and its own __call__ never is one.
        func = func.__func__
    if type(func) is FunctionType and _MARKER_NAME is not None:
        # The common case, from the code flags, without inspect's unwrapping.
        return bool(func.__code__.co_flags & _COROUTINE) or (
            getattr(func, _MARKER_NAME, None) is _MARKER_VALUE
        )
    return iscoroutinefunction(func) or iscoroutinefunction(
        getattr(func, "__call__", func)  # noqa: B004  # the method, not callability
    )


# -- Executors ------------------------------------------------------------------


def _current_thread_executor() -> CurrentThreadExecutor | None:
    """``AsyncToSync.executors.current``, without raising when unset."""
    return _peek(AsyncToSync.executors, "current")


def _check_executor(executor: object) -> None:
    # Anything with submit() will do, as for loop.run_in_executor().
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, not {executor!r}"
        )


# -- Context managers -----------------------------------------------------------


class AsyncSingleThreadContext:
    """Run every ``async_to_sync`` call in the block on one thread and loop.

    ``with AsyncSingleThreadContext():`` keeps one event loop, on one thread,
    for all ``async_to_sync`` calls made in the block from sync code, so that
    objects bound to a loop (connection pools, clients) survive from one call
    to the next. When the outermost block exits, it waits for the calls still
    running in it (made by other threads that share the block's context);
    then tasks still running are cancelled and awaited, async generators and
    the loop's default executor are shut down, and the loop and its thread
    are closed. Nested blocks share the outermost one's loop. A block never
    exited is closed that way when it is garbage collected, or at the latest
    when the interpreter exits; a call made in its context after it has
    exited runs as outside any block.
    """

    def __init__(self) -> None:
        self.token: contextvars.Token[AsyncSingleThreadContext] | None = None
        self._shared_loop: _SharedLoop | None = None
        # Orders the exit against the loop's start and each call's entry
        # (threads sharing the context may call at once).
        self._lock = threading.Lock()

    def __enter__(self) -> AsyncSingleThreadContext:
        if AsyncToSync.async_single_thread_context.get(None) is None:
            token = AsyncToSync.async_single_thread_context.set(self)
            with self._lock:
                self.token = token
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        with self._lock:
            token, self.token = self.token, None
            shared, self._shared_loop = self._shared_loop, None
        if token is None:
            return
        try:
            if shared is not None:
                shared.finalizer.detach()
                shared.close()
            executor = AsyncToSync.context_to_thread_executor.pop(self, None)
            if executor is not None:
                executor.shutdown()
        finally:
            AsyncToSync.async_single_thread_context.reset(token)
        if shared is not None and shared.undelivered is not None:
            raise shared.undelivered  # no call was left to raise it


class ThreadSensitiveContext:
    """Give thread-sensitive ``sync_to_async`` calls their own thread.

    ``async with ThreadSensitiveContext():`` makes thread-sensitive calls in
    the block (and in tasks it creates) run on one thread dedicated to the
    block instead of the process-wide one; the thread is joined on exit
    without blocking the event loop. Only the outermost such block counts.

    ``ThreadSensitiveContext(executor=...)`` uses the given executor (which
    must run one call at a time on one thread) for the block, even inside
    another context or ``async_to_sync`` call, and restores the enclosing
    choice on exit. The executor stays the caller's: it is not shut down. Such
    a context can be entered only once; tasks created in it must finish
    before it exits, or their later thread-sensitive calls raise
    ``RuntimeError``.
    """

    def __init__(self, *, executor: Executor | None = None) -> None:
        _check_executor(executor)
        self._executor = executor
        self.token: contextvars.Token[ThreadSensitiveContext] | None = None
        self._old_executor: CurrentThreadExecutor | None = None
        self._exited = False

    async def __aenter__(self) -> ThreadSensitiveContext:
        if self._executor is None:
            if SyncToAsync.thread_sensitive_context.get(None) is None:
                self.token = SyncToAsync.thread_sensitive_context.set(self)
            return self
        if self.token is not None:
            raise RuntimeError("ThreadSensitiveContext is already entered")
        if self._exited:
            raise RuntimeError(
                "ThreadSensitiveContext with an executor cannot be entered again"
            )
        self.token = SyncToAsync.thread_sensitive_context.set(self)
        SyncToAsync.context_to_thread_executor[self] = self._executor
        # A waiting async_to_sync frame would otherwise take priority over the
        # given executor. Work sent to that executor from code nested in a new
        # async_to_sync goes to the new frame's own executor instead: the
        # given executor's one thread may be the one waiting.
        self._old_executor = _current_thread_executor()
        AsyncToSync.executors.current = None
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.token is None:
            return
        executor = SyncToAsync.context_to_thread_executor.pop(self, None)
        SyncToAsync.thread_sensitive_context.reset(self.token)
        self.token = None
        if self._executor is not None:
            AsyncToSync.executors.current = self._old_executor
            self._old_executor = None
            self._exited = True
            return
        if executor is not None:
            await _retire(executor)


# -- async_to_sync ----------------------------------------------------------------


class AsyncToSync(Generic[_P, _R]):
    """A sync callable that runs an async function and waits for its result.

    Called from code that ``sync_to_async`` is running, the coroutine runs on
    that caller's event loop. Otherwise it runs in a new event loop on another
    thread (closed when the call returns), or on the shared loop of an
    enclosing ``AsyncSingleThreadContext``. Meanwhile the calling thread runs
    the thread-sensitive sync code the coroutine sends back to it, so sync
    code keeps to one thread however deeply the calls nest.
    """

    # The CurrentThreadExecutor of the innermost sync frame that is waiting
    # in async_to_sync, seen by the coroutines it runs (``current``).
    executors: Local = Local()

    # The same, by event loop, for code that lost the context (such as a task
    # created with a fresh one).
    loop_thread_executors: ClassVar[
        dict[asyncio.AbstractEventLoop, CurrentThreadExecutor]
    ] = _outer_loop.loop_thread_executors

    async_single_thread_context: contextvars.ContextVar[AsyncSingleThreadContext] = (
        contextvars.ContextVar("async_single_thread_context")
    )

    # Each AsyncSingleThreadContext's one-thread executor.
    context_to_thread_executor: ClassVar[
        weakref.WeakKeyDictionary[AsyncSingleThreadContext, ThreadPoolExecutor]
    ] = weakref.WeakKeyDictionary()

    def __init__(
        self,
        awaitable: Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]],
        force_new_loop: bool = False,
    ) -> None:
        if not callable(awaitable) or not _is_async_callable(awaitable):
            # Many awaitable-returning callables aren't coroutine functions
            # (functools.partial of one, say), so this can only be a hint.
            warnings.warn(
                "async_to_sync was passed a non-async-marked callable", stacklevel=2
            )
        self.awaitable = awaitable
        owner = getattr(awaitable, "__self__", _MISSING)
        if owner is not _MISSING:
            self.__self__ = owner
        self.force_new_loop = force_new_loop

    def __call__(self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        __traceback_hide__ = True  # noqa: F841
        main_loop = None if self.force_new_loop else _caller_loop()
        if _running_loop_or_none() is not None:
            raise RuntimeError(
                "You cannot use AsyncToSync in the same thread as an async event "
                "loop - just await the async function directly."
            )
        if not callable(self.awaitable):
            raise TypeError(
                f"async_to_sync needs an async function, not {self.awaitable!r}"
            )

        _adopt_local_data()  # before executors.current replaces foreign data
        old_executor = _current_thread_executor()
        current_executor = CurrentThreadExecutor(old_executor)
        self.executors.current = current_executor
        context = [contextvars.copy_context()]
        task_context = getattr(SyncToAsync.threadlocal, "task_context", None)
        shared = None
        entered = [None]  # the call is counted into ``shared`` until popped
        escaped = None  # what ended ``shared`` while the call was in it
        waiting = True
        try:
            if main_loop is None:
                single = self.async_single_thread_context.get(None)
                if single is not None:
                    shared = _enter_shared_loop(
                        single, AsyncToSync.context_to_thread_executor
                    )
            if shared is not None:
                main_loop = shared.loop
                if shared.tag is not _affinity.tag:
                    # The loop's thread holds another thread's affinity (see
                    # asgiref.local): hand this thread's Local data to it, and
                    # take back what the coroutine leaves (in the finally).
                    context[0].run(_adopt_local_data, shared.tag)
            # On a loop that is already running, the coroutine's report is
            # what ends the wait; a fresh loop is waited for until it has
            # closed.
            call_result: _Outcome[_R] = _Outcome(
                None if main_loop is None else current_executor._finish
            )
            target = self.awaitable(*args, **kwargs)
            hook = _hooks.trace_hook
            if hook is not None:
                target = hook("async_to_sync", self.awaitable, target, None)
            awaitable = self.main_wrap(
                call_result, sys.exc_info(), task_context, context, target
            )
            if main_loop is None:
                _run_on_loop_thread(awaitable, current_executor, context[0], target)
            else:
                if shared is not None:
                    awaitable = _registered(awaitable, current_executor)
                try:
                    _run_on_running_loop(
                        main_loop, awaitable, call_result, current_executor, context[0]
                    )
                except BaseException:
                    if shared is not None:
                        # No longer waiting: the call stays counted in until
                        # the coroutine reports (or the loop ends).
                        waiting = False
                        call_result.on_report(functools.partial(shared.leave, entered))
                    raise
        finally:
            if shared is not None and waiting:
                escaped = shared.leave(entered)
            # What the coroutine's thread left is this thread's again.
            if main_loop is None:
                _restore_context_from_a_loop_thread(context[0])
            else:
                _restore_context(context[0])
            self.executors.current = old_executor
        if escaped is not None and shared is not None:
            # As upstream's asyncio.run raises it once the loop is cleaned up,
            # whatever the call reported.
            _wait_for((shared.finished,))
            raise escaped
        return call_result.result()

    def __get__(self, parent: Any, objtype: Any) -> Callable[_P, _R]:
        """Bind like a method: ``instance.attribute(...)`` passes ``instance``."""
        bound = functools.partial(self.__call__, parent)
        return functools.update_wrapper(bound, self.awaitable)  # type: ignore[return-value]

    async def main_wrap(
        self,
        call_result: _Outcome[_R],
        exc_info: OptExcInfo,
        task_context: list[asyncio.Task[Any]] | None,
        context: list[contextvars.Context],
        awaitable: Coroutine[Any, Any, _R] | Awaitable[_R],
    ) -> None:
        """Await ``awaitable`` in the caller's context; put its outcome in
        ``call_result`` and the context it leaves in ``context[0]``."""
        __traceback_hide__ = True  # noqa: F841
        _merge_context(context[0])
        task = asyncio.current_task()
        if task is not None and task_context is not None:
            task_context.append(task)
        try:
            if exc_info[1] is not None:
                try:
                    raise exc_info[1]
                except BaseException:
                    result = await awaitable
            else:
                result = await awaitable
        except BaseException as exc:
            failure: BaseException | None = exc
        else:
            failure = None
        if task is not None and task_context is not None:
            task_context.remove(task)
        # Reporting wakes the caller, which then reads context[0]: set it first.
        context[0] = contextvars.copy_context()
        if failure is None:
            call_result.set_result(result)
        else:
            call_result.set_exception(failure)


# -- sync_to_async ----------------------------------------------------------------


class SyncToAsync(Generic[_P, _R]):
    """An awaitable wrapper that runs a sync callable in a worker thread.

    Thread-sensitive calls (the default) run, in order of preference: on the
    sync thread of an enclosing ``async_to_sync`` that is waiting for them;
    on the thread of the enclosing ``ThreadSensitiveContext``; on the thread
    that started the running event loop through ``async_to_sync``; otherwise
    on the process-wide ``single_thread_executor``. Other calls run on
    ``executor``, or the running loop's default executor.

    The function runs in a copy of the caller's context (or in ``context``,
    when given), and context variables it sets are visible to the caller
    afterwards. An exception the caller is handling is the one being handled
    inside the function too.
    """

    # The running loop and the list AsyncToSync registers its tasks in, set on
    # the worker thread while it runs a call.
    threadlocal: threading.local = _outer_loop.threadlocal

    # Runs thread-sensitive calls that have no better place. It may be
    # replaced (at start-up) by another one-thread executor.
    single_thread_executor: ThreadPoolExecutor = _one_thread_pool()

    thread_sensitive_context: contextvars.ContextVar[ThreadSensitiveContext] = (
        contextvars.ContextVar("thread_sensitive_context")
    )

    # True while a task's thread-sensitive call holds single_thread_executor:
    # another one from the same task would wait for itself.
    deadlock_context: contextvars.ContextVar[bool] = contextvars.ContextVar(
        "deadlock_context"
    )

    # Each ThreadSensitiveContext's executor; weak, so that a context that is
    # dropped without being exited does not keep its thread.
    context_to_thread_executor: ClassVar[
        weakref.WeakKeyDictionary[ThreadSensitiveContext, Executor]
    ] = weakref.WeakKeyDictionary()

    func: Callable[_P, _R]
    context: contextvars.Context | None
    _thread_sensitive: bool
    _executor: Executor | None

    def __init__(
        self,
        func: Callable[_P, _R],
        thread_sensitive: bool = True,
        executor: Executor | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        if not callable(func) or _is_async_callable(func):
            raise TypeError("sync_to_async can only be applied to sync functions.")
        if executor is not None:
            if thread_sensitive:
                raise TypeError(
                    "executor must not be set when thread_sensitive is True"
                )
            _check_executor(executor)
        if context is not None and not isinstance(context, contextvars.Context):
            raise TypeError(
                f"context must be a contextvars.Context or None, not {context!r}"
            )
        _copy_metadata(self, func)
        # All of these live on the instance, the coroutine function marker
        # included, so that functools.wraps() over the wrapper copies them:
        # a pass-through decorator then makes a coroutine function too.
        namespace = self.__dict__
        namespace["func"] = func
        namespace["context"] = context
        namespace["_thread_sensitive"] = thread_sensitive
        if _MARKER_NAME is None:
            markcoroutinefunction(self)
        else:
            namespace[_MARKER_NAME] = _MARKER_VALUE
        namespace["_executor"] = executor
        if type(func) is not FunctionType:
            owner = getattr(func, "__self__", _MISSING)
            if owner is not _MISSING:
                self.__self__ = owner

    async def __call__(self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        __traceback_hide__ = True  # noqa: F841
        loop = asyncio.get_running_loop()
        if self._thread_sensitive:
            executor = self._thread_sensitive_executor(loop)
        else:
            executor = self._executor

        given = self.context
        if given is None:
            # _adopt_local_data(), inlined: every crossing asks.
            snapshot = _LOCAL_STATE.get(None)
            if snapshot is not None and snapshot[0] is not _affinity.tag:
                _LOCAL_STATE.set((_affinity.tag, snapshot[1]))
            context = contextvars.copy_context()
            run_in_context = context.run
        else:
            context = given
            run_in_context = _given_context_runner(given)
        handler = (
            None
            if type(self).thread_handler is _BASE_THREAD_HANDLER
            else self.thread_handler
        )
        func = self.func
        hook = _hooks.trace_hook
        if hook is not None:
            # Time what the worker calls first: a thread_handler override is
            # still handed the function itself.
            if handler is None:
                func = hook("sync_to_async", func, func, self._thread_sensitive)
            else:
                handler = hook("sync_to_async", func, handler, self._thread_sensitive)
        call = _SyncCall(
            loop, self, func, args, kwargs, run_in_context, sys.exc_info()[1], handler
        )
        try:
            _start(call, executor, loop)
            try:
                await call.waiter
            except asyncio.CancelledError:
                if not await self._absorb_cancellation(call, loop):
                    raise
            if call.ok:
                return call.result
            call.raise_exception()
        finally:
            if given is None:
                _merge_context(context)
            # The caller reads False afterwards, unset before or not, as
            # upstream; setting it where it is False already changes nothing.
            if self.deadlock_context.get(True):
                self.deadlock_context.set(False)

    @staticmethod
    async def _absorb_cancellation(
        call: _SyncCall, loop: asyncio.AbstractEventLoop
    ) -> bool:
        """Handle the calling task being cancelled mid-call.

        A coroutine that the sync function is running through async_to_sync
        is cancelled first. If it finishes without re-raising, the sync code
        goes on, and the call's own outcome is awaited and returned (True).
        Otherwise the call is abandoned: it won't start if it hasn't, and the
        cancellation propagates (False).
        """
        abandon = True
        if call.task_context:
            task = call.task_context[0]
            task.cancel()
            try:
                await task
                abandon = False
            except asyncio.CancelledError:
                pass
        if call.settled or abandon:
            call.cancel()
            return False
        call.waiter = _Waiter(loop)
        await call.waiter
        return True

    def _thread_sensitive_executor(self, loop: asyncio.AbstractEventLoop) -> Executor:
        current = _current_thread_executor()
        if current is not None:
            if not current._broken or current._accepts_work():
                return current
            # This task was started inside an async_to_sync call that has
            # since returned (Uvicorn starts a pipelined request from inside
            # the previous response's send()), and copied that frame's
            # executor and single-thread marker. Nothing waits for the task
            # any more, so it is placed like any other task.
            AsyncToSync.executors.current = None
            self.deadlock_context.set(False)
        context = self.thread_sensitive_context.get(None)
        if context is not None:
            if context._exited:
                raise RuntimeError(
                    "ThreadSensitiveContext has exited. Tasks created "
                    "inside a context with an executor must finish before "
                    "it exits."
                )
            executor = self.context_to_thread_executor.get(context)
            if executor is None:
                # A reused request thread, with asgire.request_threads on and
                # the context still entered; otherwise a fresh one-thread pool.
                executor = _request_threads.executor_for(
                    context.token is not None
                ) or _one_thread_pool(_ContextPool)
                self.context_to_thread_executor[context] = executor
            return executor
        loop_executor = AsyncToSync.loop_thread_executors.get(loop)
        if loop_executor is not None:
            return loop_executor
        if self.deadlock_context.get(False):
            raise RuntimeError(
                "Single thread executor already being used, would deadlock"
            )
        self.deadlock_context.set(True)
        return self.single_thread_executor

    def __get__(
        self, parent: Any, objtype: Any
    ) -> Callable[_P, Coroutine[Any, Any, _R]]:
        """Bind like a method: ``instance.attribute(...)`` passes ``instance``."""
        bound = functools.partial(self.__call__, parent)
        return functools.update_wrapper(bound, self.func)  # type: ignore[return-value]

    def thread_handler(
        self,
        loop: asyncio.AbstractEventLoop,
        exc_info: OptExcInfo,
        task_context: list[asyncio.Task[Any]],
        func: Callable[..., _R],
        *args: Any,
        **kwargs: Any,
    ) -> _R:
        """Run ``func(*args, **kwargs)`` on the worker thread, for one call.

        Every call goes through here, on the worker thread, as
        ``thread_handler(loop, exc_info, task_context, func, child)``: it notes
        ``loop`` in ``threadlocal`` for ``async_to_sync`` inside the function,
        and re-raises ``exc_info``'s exception around the call. Subclasses
        override it to wrap each call (Channels closes database connections).
        """
        __traceback_hide__ = True  # noqa: F841
        threadlocal = self.threadlocal
        threadlocal.main_event_loop = loop
        threadlocal.main_event_loop_pid = _fork.pid
        threadlocal.task_context = task_context
        if exc_info[1] is not None:
            return _raise_then_call(exc_info[1], func, *args, **kwargs)
        return func(*args, **kwargs)


_BASE_THREAD_HANDLER = SyncToAsync.thread_handler


# -- Functions ----------------------------------------------------------------------


@overload
def async_to_sync(
    *,
    force_new_loop: bool = False,
) -> Callable[
    [Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]]],
    Callable[_P, _R],
]: ...


@overload
def async_to_sync(
    awaitable: Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]],
    *,
    force_new_loop: bool = False,
) -> Callable[_P, _R]: ...


def async_to_sync(
    awaitable: Callable[_P, Coroutine[Any, Any, _R]]
    | Callable[_P, Awaitable[_R]]
    | None = None,
    *,
    force_new_loop: bool = False,
) -> (
    Callable[
        [Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]]],
        Callable[_P, _R],
    ]
    | Callable[_P, _R]
):
    """Wrap an async function so that sync code can call it (see AsyncToSync).

    Usable directly, ``async_to_sync(func)``, or as a decorator, with or
    without arguments.
    """
    if awaitable is None:
        return lambda func: AsyncToSync(func, force_new_loop=force_new_loop)
    return AsyncToSync(awaitable, force_new_loop=force_new_loop)


@overload
def sync_to_async(
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]: ...


@overload
def sync_to_async(
    func: Callable[_P, _R],
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[_P, Coroutine[Any, Any, _R]]: ...


def sync_to_async(
    func: Callable[_P, _R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> (
    Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]
    | Callable[_P, Coroutine[Any, Any, _R]]
):
    """Wrap a sync function so that async code can await it (see SyncToAsync).

    Usable directly, ``sync_to_async(func)``, or as a decorator, with or
    without arguments.
    """
    # Positional arguments: binding them by keyword costs more, and a wrapper
    # built inline pays that on every call.
    if func is None:
        return lambda f: SyncToAsync(f, thread_sensitive, executor, context)
    return SyncToAsync(func, thread_sensitive, executor, context)


# -- fork() and interpreter exit -------------------------------------------------------


_default_single_thread_executor = SyncToAsync.single_thread_executor


def _reset_after_fork() -> None:
    """Give the child process fresh threads for what this module keeps: none
    of the parent's survived. (Each mechanism resets its own state.)"""
    global _default_single_thread_executor
    if SyncToAsync.single_thread_executor is _default_single_thread_executor:
        _default_single_thread_executor = _one_thread_pool()
        SyncToAsync.single_thread_executor = _default_single_thread_executor
    for context in list(SyncToAsync.context_to_thread_executor):
        if context._executor is None:
            SyncToAsync.context_to_thread_executor.pop(context, None)
    AsyncToSync.context_to_thread_executor.clear()


_fork.after_fork_in_child(_reset_after_fork)
# Interpreter exit lets the coroutines in flight finish, and closes the
# blocks' loops still open (see _bridge.at_exit).
_compat.at_threading_exit(_finish_at_exit)
