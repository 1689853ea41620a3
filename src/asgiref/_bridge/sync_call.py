"""One ``sync_to_async`` call on its way to a worker thread and back.

Guarantees:

- Every call runs as upstream runs it, through the wrapper's
  ``thread_handler(loop, exc_info, task_context, func, child)`` on the
  worker thread, so that subclasses and instrumentation overriding that
  method see each call, and tools looking for its frame on the worker's
  stack find it.
- ``start()`` hands the call over the cheapest way that nothing can tell
  apart from upstream's: queued directly on a ``CurrentThreadExecutor`` or a
  stdlib pool (no ``concurrent.futures.Future``, no ``asyncio`` future
  wrapping it) while ``loop.run_in_executor`` and the executor's ``submit``
  are the originals (see ``hooks``); otherwise through them, as upstream
  does. Either way the worker posts the outcome straight back to the loop
  (``loop_inbox.call_soon_threadsafe``), where it resumes the awaiting task.
- A call is run by exactly one party: the worker that claims it, or the
  caller that cancels it before it starts. A pool that drops it unrun
  (shut down with ``cancel_futures``, or broken) reports that.
- The worker thread's ``threadlocal`` and affinity tag are what they were
  before the call, once it returns: a later, unrelated use of the thread
  finds no stale loop there.

Relies on: a ``ThreadPoolExecutor`` worker running any queued object with a
``run()`` method, reaching it through ``item.future`` on shutdown (see
``pool``); a loop's default executor where ``_compat.LOOP_DEFAULT_EXECUTOR``
says (elsewhere, calls for it go through ``run_in_executor()``);
``list.pop()`` being atomic, on free-threaded builds too.

State: each ``SyncCall`` belongs to its call: the caller's task creates and
awaits it on the loop's thread, one worker runs it, and the outcome is set
on the loop's thread by the callback the worker posts.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, NoReturn

from .. import current_thread_executor
from .._compat import (
    DEFAULT_EXECUTOR_ATTR,
    EXECUTOR_SHUTDOWN_CALLED_ATTR,
    LOOP_DEFAULT_EXECUTOR,
)
from ..current_thread_executor import CurrentThreadExecutor
from ..local import _affinity
from .hooks import is_original, known_originals, plain_loop_method
from .loop_inbox import call_soon_threadsafe, inboxes, open_inbox
from .outer_loop import threadlocal
from .pool import ContextPool, queue_on_pool, unhooked_pool
from .waiter import Waiter


class SyncCall:
    """One ``sync_to_async`` call on its way through an executor.

    Every call runs as upstream runs it, through
    ``thread_handler(loop, exc_info, task_context, func, child)``, so that
    subclasses and instrumentation overriding that method see each call, and
    tools looking for its frame on the worker thread's stack find it. It gets
    to the worker in one of two ways:

    - Queued directly (``start``'s fast paths): the worker calls ``run()``,
      and the outcome comes back through ``loop_inbox.call_soon_threadsafe`` and
      ends the wait on ``waiter`` (a ``Waiter``), which the calling task
      awaits.
    - Otherwise as upstream hands it over, a ``functools.partial`` of
      ``thread_handler`` (``job()``) given to ``loop.run_in_executor()`` or,
      when only the executor is not the stdlib's, to its ``submit()``. The
      job reports as ``run()`` does; the future only tells of a job that
      never ran (``job_done``).

    The outcome lives here rather than in the waiter, so that the caller can
    stop waiting (cancellation) and still collect it later.
    """

    __slots__ = (
        "__weakref__",  # a context's pool keeps its last call weakly
        "affinity",
        "args",
        "exception",
        "func",
        "handler",
        "kwargs",
        "loop",
        "ok",
        "owner",
        "result",
        "run_in_context",
        "settled",
        "task_context",
        "unclaimed",
        "waiter",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: Any,  # the SyncToAsync making the call
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_in_context: Callable[..., Any],
        exception: BaseException | None,
        handler: Callable[..., Any] | None,
    ) -> None:
        self.loop = loop
        self.owner = owner
        # None: the owner's class's own thread_handler, bound when the call
        # runs (see _handler).
        self.handler = handler
        self.func = func
        self.args = args
        self.kwargs = kwargs
        # What thread_handler gets as ``func``: the call's Context.run, or a
        # stand-in for it (``context.given_context_runner``).
        self.run_in_context = run_in_context
        self.exception = exception
        self.affinity = _affinity.tag
        self.task_context: list[asyncio.Task[Any]] = []
        self.waiter = Waiter(loop)
        self.settled = False
        self.ok = False
        self.result: Any = None
        # Whoever pops the one element first owns the call: the worker, to run
        # it, or the caller, to cancel it before it starts. list.pop() is
        # atomic, on free-threaded builds too.
        self.unclaimed = [None]

    @property
    def future(self) -> SyncCall:
        # ThreadPoolExecutor.shutdown(cancel_futures=True) and a broken pool
        # reach queued items through ``item.future``.
        return self

    def cancel(self) -> bool:
        """Stop the call from starting; False if a worker already took it."""
        return self._fail_unless_started(asyncio.CancelledError())

    def set_exception(self, exception: BaseException) -> None:
        """A pool that broke before running the call reports it here."""
        self._fail_unless_started(exception)

    def _fail_unless_started(self, exception: BaseException) -> bool:
        if not self._claim():
            return False  # a worker has it
        self._report(False, exception)
        return True

    def _claim(self) -> bool:
        """Take the call to run it; False if it was cancelled before it started."""
        try:
            self.unclaimed.pop()
        except IndexError:
            return False
        return True

    def _handler(self) -> Callable[..., Any]:
        """The ``thread_handler`` to call: an override or a wrapper of it, or
        SyncToAsync's own, bound to the wrapper making the call."""
        handler = self.handler
        if handler is None:
            owner = self.owner
            return type(owner).thread_handler.__get__(owner)
        return handler

    def _handler_arguments(
        self,
    ) -> tuple[
        asyncio.AbstractEventLoop,
        tuple[Any, Any, Any],
        list[asyncio.Task[Any]],
        Callable[..., Any],
        functools.partial[Any],
    ]:
        """``thread_handler``'s arguments. The call's own are bound in
        ``child``, so that none can clash with ``thread_handler``'s names."""
        child = functools.partial(self.func, *self.args, **self.kwargs)
        return (
            self.loop,
            self._exc_info(),
            self.task_context,
            self.run_in_context,
            child,
        )

    def _exc_info(self) -> tuple[Any, Any, Any]:
        exception = self.exception
        if exception is None:
            return _NO_EXC_INFO
        return type(exception), exception, exception.__traceback__

    def _call_handler(
        self, handler: Callable[..., Any], arguments: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        """Call ``handler(*arguments)`` on this (worker) thread, on the
        caller's behalf; return whether it returned, and what it returned or
        raised."""
        __traceback_hide__ = True  # noqa: F841
        # thread_handler leaves the loop in the thread-local for async_to_sync
        # inside the function. Restoring what was there before (an outer call
        # on the same thread, or nothing) means a later, unrelated use of
        # this thread does not find a stale loop there.
        state = threadlocal.__dict__
        nested = state.copy() if state else None
        own_tag = _affinity.tag
        _affinity.tag = self.affinity
        try:
            return True, handler(*arguments)
        except BaseException as exc:
            return False, exc
        finally:
            _affinity.tag = own_tag
            state.clear()
            if nested:
                state.update(nested)

    def run(self, *_: object) -> None:
        """Run the call on this (worker) thread and report its outcome."""
        __traceback_hide__ = True  # noqa: F841
        if not self._claim():
            return
        self._report(*self._call_handler(self._handler(), self._handler_arguments()))

    def job(self) -> ThreadHandlerJob:
        """What upstream hands to ``loop.run_in_executor()``: ``thread_handler``
        bound to its arguments."""
        job = ThreadHandlerJob(self._handler(), *self._handler_arguments())
        job.call = self
        return job

    def job_done(self, future: Future[Any] | asyncio.Future[Any]) -> None:
        """Done-callback of the future ``job()`` went into, on any thread: a
        job that ran has reported already; report one the executor dropped
        without running it (cancelled, or its pool broke)."""
        if future.cancelled():
            self._fail_unless_started(asyncio.CancelledError())
        elif (exception := future.exception()) is not None:
            self._fail_unless_started(exception)

    def _report(self, ok: bool, result: Any) -> None:
        try:  # noqa: SIM105  # contextlib.suppress() costs more on this hot path
            call_soon_threadsafe(self.loop, self._settle, ok, result)
        except RuntimeError:
            pass  # the loop is closed: the outcome is dropped (see waiter)

    def _settle(self, ok: bool, result: Any) -> None:
        self.settled = True
        self.ok = ok
        self.result = result
        self.waiter.wake()

    def raise_exception(self) -> NoReturn:
        """Raise the exception a settled call failed with."""
        __traceback_hide__ = True  # noqa: F841
        exception = self.result
        self.result = None  # no reference cycle through the traceback
        try:
            raise exception
        finally:
            del exception


class ThreadHandlerJob(functools.partial[Any]):
    """``thread_handler`` bound to one call's arguments, as upstream hands it
    to ``loop.run_in_executor()`` (tools recognise it by that shape). Calling
    it runs the call as ``SyncCall.run`` does, but returns or raises the
    outcome, for the executor's future to carry."""

    __slots__ = ("call",)
    call: SyncCall

    def __call__(self, /, *args: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841
        call = self.call
        if not call._claim():
            raise asyncio.CancelledError  # cancelled before it started
        ok, result = call._call_handler(super().__call__, args)
        # Report at once, as run() does: the executor's future would reach
        # the loop a turn later.
        call._report(ok, result)
        if ok:
            return result
        if isinstance(result, StopIteration):
            # An asyncio future cannot hold StopIteration, and the caller
            # would wait forever. This is what run()'s report becomes in the
            # caller's coroutine.
            raise RuntimeError("coroutine raised StopIteration") from result
        try:
            raise result
        finally:
            del result  # no reference cycle through the traceback


_NO_EXC_INFO = (None, None, None)
_CURRENT_THREAD_EXECUTOR_FILE = current_thread_executor.__file__


def start(
    call: SyncCall, executor: Executor | None, loop: asyncio.AbstractEventLoop
) -> None:
    """Hand ``call`` to ``executor`` (None: the loop's default executor):
    directly where nothing is hooked (see above), else as upstream does."""
    if id(loop) not in inboxes:
        open_inbox(loop)
    if type(executor) is ContextPool:
        executor.last_call = weakref.ref(call)
    # plain_loop_method()'s first test inline, for the loops seen before:
    # saving the function call matters on this path.
    if (
        id(type(loop).run_in_executor) in known_originals
        and "run_in_executor" not in getattr(loop, "__dict__", ())
    ) or plain_loop_method(loop, "run_in_executor"):
        if type(executor) is CurrentThreadExecutor:
            submit = CurrentThreadExecutor.submit
            if (
                # is_original()'s first test inline: this runs on every call.
                id(submit) in known_originals
                or is_original(submit, _CURRENT_THREAD_EXECUTOR_FILE)
            ) and "submit" not in executor.__dict__:
                if executor._work_thread is threading.current_thread():
                    # The check submit() makes: that thread is busy running
                    # this very loop, so the call would wait forever.
                    raise RuntimeError(current_thread_executor._OWN_THREAD)
                executor._enqueue(call)
                return
        elif executor is None:
            default = (
                getattr(loop, DEFAULT_EXECUTOR_ATTR, None)
                if LOOP_DEFAULT_EXECUTOR
                else None
            )
            if (
                type(default) is ThreadPoolExecutor
                and not getattr(loop, EXECUTOR_SHUTDOWN_CALLED_ATTR, True)
                and queue_on_pool(default, call)
            ):
                return
            # Without the attribute, None means "unknown", not "none yet".
            if LOOP_DEFAULT_EXECUTOR and unhooked_pool(default):
                # The pool starts threads in the context it is handed work in
                # (see threads); only the stdlib's code sees it here.
                contextvars.Context().run(
                    loop.run_in_executor, None, call.job()
                ).add_done_callback(call.job_done)
                return
        elif (
            type(executor) is ThreadPoolExecutor or type(executor) is ContextPool
        ) and queue_on_pool(executor, call):
            return
        if executor is not None:
            # What run_in_executor() would do, without wrapping the future
            # in an asyncio one that nobody awaits.
            if unhooked_pool(executor):
                future = contextvars.Context().run(executor.submit, call.job())
            else:
                future = executor.submit(call.job())
            future.add_done_callback(call.job_done)
            return
    loop.run_in_executor(executor, call.job()).add_done_callback(call.job_done)
