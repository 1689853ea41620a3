"""An executor that runs work on the thread that created it.

``async_to_sync`` blocks a sync thread while a coroutine runs elsewhere. If
that coroutine calls thread-sensitive sync code, the code must run on the
blocked thread, so the thread does not just wait: it runs whatever work other
threads submit until the call is over. ``run_until_future`` is the public way
to do that; ``async_to_sync`` (``asgiref._bridge.fresh_loop`` and
``outer_loop``) drives the same loop (``_run_until_finished``), and the
call's ``Outcome`` (``asgiref._bridge.waiter``) ends it with ``_finish()``
when the coroutine reports, without a future.

Guarantees: work runs on the executor's own thread, in submission order,
only while that thread waits (``run_until_future``); once the wait is over,
work goes to the executor of an enclosing wait on the same thread, or is
refused with ``RuntimeError``; submitting from the executor's own thread is
refused at once, as it could never run.

Relies on: ``queue.SimpleQueue`` being safe to use from any thread, and the
finishing ``None`` being queued once, under the executor's lock.

State: each executor's queue and whether it has finished, written by any
thread under its lock and read by its own thread; nothing module-wide.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import Empty, SimpleQueue
from typing import Any, ParamSpec, Protocol, TypeVar

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = [
    "Any",
    "Callable",
    "CurrentThreadExecutor",
    "Executor",
    "Future",
    "ParamSpec",
    "TypeVar",
    "deque",
    "threading",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Work from the executor's own thread could never run: that thread is busy.
_OWN_THREAD = "You cannot submit onto CurrentThreadExecutor from its own thread"

# Seconds between checks that a wait can still end (_run_until_finished).
_GONE_CHECK_INTERVAL = 0.25


class _Runnable(Protocol):
    def run(self) -> None: ...


class _WorkItem:
    """A ``submit()`` call waiting for the executor's thread."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> None:
        __traceback_hide__ = True  # noqa: F841  # hidden in Django's debug pages
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class CurrentThreadExecutor(Executor):
    """Run submitted callables on the thread that created this executor.

    The creating thread must call ``run_until_future(future)``; submitted work
    runs there, in submission order, until ``future`` is done. After that the
    executor is finished, and work submitted to it goes to ``old_executor``
    (the executor of an enclosing wait on the same thread), or raises
    ``RuntimeError`` when there is none.
    """

    def __init__(self, old_executor: CurrentThreadExecutor | None) -> None:
        self._work_thread = threading.current_thread()
        self._old_executor = old_executor
        # None in the queue tells the waiting thread to stop; it is queued
        # once, under the lock, when the future completes, so nothing can be
        # queued behind it.
        self._work_items: SimpleQueue[_Runnable | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._broken = False

    def run_until_future(self, future: Future[Any]) -> None:
        """Run submitted work on this thread until ``future`` is done."""
        if threading.current_thread() is not self._work_thread:
            raise RuntimeError(
                "You cannot run CurrentThreadExecutor from a different thread"
            )
        future.add_done_callback(self._finish)
        self._run_until_finished()

    def _run_until_finished(self, gone: Callable[[], bool] | None = None) -> bool:
        """Run submitted work until ``_finish()`` is called (from any thread).

        With ``gone``, also stop once it returns True, checked whenever no
        work has come for a while: when whatever was to call ``_finish()``
        can no longer do so. Returns False if that is how it stopped.
        """
        get = self._work_items.get
        timeout = None if gone is None else _GONE_CHECK_INTERVAL
        finished = True
        while True:
            try:
                work_item = get(timeout=timeout)
            except Empty:  # only with a timeout, so only with ``gone``
                if gone is not None and gone():
                    finished = False
                    self._finish()  # run what was queued before it, then stop
                continue
            if work_item is None:
                return finished
            work_item.run()
            del work_item  # do not keep the last item's result alive while idle

    def _finish(self, _: object = None) -> None:
        with self._lock:
            self._broken = True
            self._work_items.put(None)

    def _accepts_work(self) -> bool:
        """Whether this executor, or one it is stacked on, still runs work."""
        executor: CurrentThreadExecutor | None = self
        while executor is not None:
            if not executor._broken:
                return True
            executor = executor._old_executor
        return False

    def _enqueue(self, work_item: _Runnable) -> None:
        """Queue ``work_item`` on the innermost executor still waiting."""
        executor: CurrentThreadExecutor | None = self
        while executor is not None:
            with executor._lock:
                if not executor._broken:
                    executor._work_items.put(work_item)
                    return
            executor = executor._old_executor
        raise RuntimeError("CurrentThreadExecutor already quit or is broken")

    def submit(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_R]:
        if threading.current_thread() is self._work_thread:
            raise RuntimeError(_OWN_THREAD)
        future: Future[_R] = Future()
        self._enqueue(_WorkItem(future, fn, args, kwargs))
        return future
