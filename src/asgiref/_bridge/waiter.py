"""How each side of a crossing waits for the other's outcome.

- ``Waiter``: what the task making a ``sync_to_async`` call awaits until the
  worker's outcome is back on the loop's thread.
- ``Outcome``: where an ``async_to_sync`` call's coroutine reports how it
  ended, for the sync thread that waits on it.

Both stand in for futures, doing only what a crossing needs of one.

A result whose loop has closed is dropped, never waited for: a
``sync_to_async`` call whose loop closed before the worker finished has
nobody left to receive its outcome (the report fails with the loop's
``RuntimeError`` and is discarded), and an ``async_to_sync`` caller whose
loop closes before the coroutine reports gets ``RuntimeError`` instead of
waiting for good (``Outcome.fail_unreported``).

Guarantees: a ``Waiter`` resumes its task exactly once, in the callback
that brings the outcome back (so a crossing costs the loop one pass fewer),
or on the loop's next pass when cancelled; an ``Outcome`` keeps the first
report only, and ``result()`` raises ``CancelledError`` until one arrives.

Relies on: asyncio's protocol for what a task may await (any object with
``_asyncio_future_blocking``, ``get_loop``, ``add_done_callback``,
``result`` and ``cancel``), as documented with ``asyncio.isfuture``
(``_compat.FUTURE_BLOCKING_FLAG``, pinned live).

State: each object belongs to one call. A ``Waiter`` is touched only on its
loop's thread; an ``Outcome`` is written by the coroutine's thread and read
by the waiting thread after the report has woken it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

_R = TypeVar("_R")


class Waiter:
    """What the task making a ``sync_to_async`` call awaits until the outcome
    is back on the loop's thread (``sync_call.SyncCall`` calls ``wake()``).

    An asyncio task can await any object that follows asyncio's own Future
    protocol (``_asyncio_future_blocking``, ``get_loop``, ``add_done_callback``,
    ``result``, ``cancel``): the task hands it the callback that resumes the
    task. A Future schedules that callback for the loop's next pass when it
    completes. This calls it at once, from the callback that brings the
    outcome back, so a crossing costs the loop one pass (and one ``select()``
    call) fewer. Everything here runs on the loop's thread.
    """

    __slots__ = (
        "_asyncio_future_blocking",  # cpython-private: _asyncio_future_blocking
        "_cancel_message",
        "_context",
        "_loop",
        "_state",
        "_wakeup",
    )

    # Set when first needed: the wake-up and its context by
    # add_done_callback() (the wake-up is deleted once used), the message by
    # cancel().
    _wakeup: Callable[[Waiter], object]
    _context: contextvars.Context | None
    _cancel_message: Any

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # cpython-private: _asyncio_future_blocking (each use in this class)
        self._asyncio_future_blocking = False
        self._state = _PENDING

    def __await__(self) -> Generator[Waiter, None, None]:
        self._asyncio_future_blocking = True
        yield self
        self.result()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(
        self,
        callback: Callable[[Waiter], object],
        *,
        context: contextvars.Context | None = None,
    ) -> None:
        # Only what awaits the call registers, once: a task, before the wait
        # can end, or another runner that follows the protocol, maybe later.
        if self._state is not _PENDING:
            self._loop.call_soon(callback, self, context=context)
            return
        self._wakeup = callback
        self._context = context

    def done(self) -> bool:
        return self._state is not _PENDING

    def cancelled(self) -> bool:
        return self._state is _CANCELLED

    def cancel(self, msg: Any = None) -> bool:
        """Stop waiting (the task was cancelled): resume the task with
        ``CancelledError`` on the loop's next pass."""
        if self._state is not _PENDING:
            return False
        self._state = _CANCELLED
        self._cancel_message = msg
        # Only the awaiting task cancels, so a wake-up is registered.
        self._loop.call_soon(self._wakeup, self, context=self._context)
        del self._wakeup
        return True

    def result(self) -> None:
        if self._state is _CANCELLED:
            message = self._cancel_message
            if message is None:
                raise asyncio.CancelledError
            raise asyncio.CancelledError(message)

    def wake(self) -> None:
        """End the wait, resuming the awaiting task now (unless cancelled)."""
        if self._state is not _PENDING:
            return
        self._state = _DONE
        try:
            wakeup = self._wakeup
        except AttributeError:
            return  # nothing registered yet (not a task); see add_done_callback
        del self._wakeup
        context = self._context
        if context is None:
            wakeup(self)  # a runner that passes no context
        else:
            context.run(wakeup, self)


_PENDING = "pending"
_CANCELLED = "cancelled"
_DONE = "done"


class Outcome(Generic[_R]):
    """How an ``async_to_sync`` call's coroutine ended.

    ``main_wrap`` reports into it through ``set_result`` and
    ``set_exception``, as into a ``concurrent.futures.Future``; reporting
    then calls ``on_done``, which ends the waiting thread's
    ``CurrentThreadExecutor`` loop. A Future would do the same through a
    condition variable that nobody waits on, which costs more than the
    rest of the report.
    """

    __slots__ = ("_failure", "_on_done", "_result", "reported", "task")

    def __init__(self, on_done: Callable[[], object] | None) -> None:
        self._on_done = on_done
        self._result: Any = None
        self.reported = False
        # The task reporting here, when it carries the report_cancellation
        # callback (see ``outer_loop.start_task``).
        self.task: asyncio.Future[Any] | None = None
        # What result() raises until a report arrives: a task cancelled
        # before it started (its loop was shutting down) never reports.
        self._failure: BaseException | type[BaseException] | None = (
            asyncio.CancelledError
        )

    def set_result(self, result: _R) -> None:
        self._report(None, result)

    def set_exception(self, exception: BaseException) -> None:
        self._report(exception, None)

    def report_cancellation(self, _: object = None) -> None:
        """Report that the task was cancelled before its coroutine started."""
        self._report(asyncio.CancelledError, None)

    def _report(
        self, failure: BaseException | type[BaseException] | None, result: Any
    ) -> None:
        self._failure = failure
        self._result = result
        self.reported = True
        task = self.task
        if task is not None:
            # Whichever report comes first is the only one: once the
            # coroutine has reported, the done callback must not. Removing
            # it also spares the loop a turn, as a task that ends with no
            # callbacks queues nothing.
            self.task = None
            task.remove_done_callback(self.report_cancellation)
        if self._on_done is not None:
            self._on_done()

    def on_report(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` instead of ``on_done`` when the report comes, or
        now if it has come; it may be called twice then, as the two race."""
        self._on_done = callback
        if self.reported:
            callback()

    def fail_unreported(self, failure: BaseException) -> None:
        """Make ``result()`` raise ``failure`` if no report has come (and,
        the loop being closed, none ever will)."""
        if not self.reported:
            self._failure = failure

    def result(self) -> _R:
        """The coroutine's result, or raise what it raised."""
        __traceback_hide__ = True  # noqa: F841
        failure = self._failure
        if failure is None:
            return self._result
        self._failure = None  # no reference cycle through the traceback
        try:
            raise failure
        finally:
            del failure
