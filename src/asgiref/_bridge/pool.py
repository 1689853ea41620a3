"""Handing calls to a stdlib ``ThreadPoolExecutor`` without ``submit()``, and
retiring a one-thread executor without blocking the event loop.

A pool's workers run any queued object that has a ``run()`` method (on 3.14
with an argument). Queuing ``sync_to_async``'s own call object skips
``submit()``'s Future, and the call reports its outcome to the event loop
itself (see ``sync_call``).

Guarantees:

- ``queue_on_pool(pool, item)`` queues ``item`` exactly as ``submit()``
  would (under the same locks, starting a worker if one is missing), or
  returns False and leaves ``submit()`` to do it, and to raise the right
  error for a pool that is shut down or broken. It does so only for the
  exact stdlib class whose ``submit`` is the stdlib's, on the class and on
  the pool, so that subclasses and instrumented pools see every call.
- A pool it has queued on may have its idle-thread semaphore replaced by an
  ``IdleCount``, which answers the pool's one question about it the same.
- ``retire(executor)`` returns once the executor is shut down and its thread
  has ended, and keeps the loop running meanwhile, so that the thread can
  finish a call that waits on this very loop. A ``ContextPool`` whose thread
  is done with the last call it was handed is joined at once: its thread has
  nothing left to do but leave.
- A worker it starts begins in an empty context (see ``threads``);
  ``unhooked_pool`` tells where ``submit()`` may be called in one too,
  because only the stdlib's code would see it.

Relies on: the private names of the stdlib pool listed under
``_compat.POOL_HAND_OFF`` (off: every call goes through ``submit()``).

State: none of its own; it changes the pools it is handed, under their locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import thread as _cf_thread
from typing import Any, ParamSpec, TypeVar

from .._compat import POOL_HAND_OFF
from . import request_threads
from .hooks import is_original, known_originals
from .loop_inbox import call_soon_threadsafe
from .threads import start_thread

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Whether ``retire`` joins an idle ``ContextPool``'s thread at once (False:
#: every context takes the no-op through its pool and the trip through the
#: loop, for an A/B).
JOIN_IDLE_AT_ONCE = True


class IdleCount:
    """A lighter stand-in for a pool's ``_idle_semaphore``.

    A stdlib worker releases that semaphore after every item it runs, to tell
    ``submit()`` that an idle thread exists. ``threading.Semaphore`` does so
    through a Python-level condition variable, right after the worker has
    posted our result, while the event loop thread is waking up to collect
    it: the two then contend for the GIL, and a crossing measurably slows
    down. The pool only ever asks ``acquire(timeout=0)`` ("is a thread
    idle?"), which a deque with one entry per idle thread answers
    atomically, also on free-threaded builds. The count saturates at the
    number of workers, since our calls do not take an entry each as
    ``submit()`` does.
    """

    __slots__ = ("_idle",)

    def __init__(self, workers: int, idle: int) -> None:
        self._idle: deque[None] = deque([None] * idle, maxlen=workers)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        try:
            self._idle.pop()
        except IndexError:
            return False
        return True

    def release(self, n: int = 1) -> None:
        self._idle.append(None)


class ContextPool(ThreadPoolExecutor):
    """The one-thread pool a ``ThreadSensitiveContext`` gets for its calls.

    A stdlib pool in all but one attribute: ``last_call``, the call most
    recently handed to it (``sync_call.start`` sets it), which tells
    ``retire`` whether the thread can still need the event loop. Held
    weakly: the call holds the context (in its copied context variables),
    and the context holds this pool.
    """

    last_call: weakref.ref[Any] | None = None

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]:
        # Work handed over other than by sync_call.start (someone submitting
        # to the context's executor directly) may still be running, or
        # waiting for the loop, when the context exits: retire() then takes
        # the careful path.
        self.last_call = None
        return super().submit(fn, *args, **kwargs)


def queue_on_pool(pool: ThreadPoolExecutor, item: Any) -> bool:
    """Queue ``item`` on ``pool`` the way ``submit()`` would; False if it can't."""
    submit = ThreadPoolExecutor.submit
    if (
        not POOL_HAND_OFF
        # is_original()'s first test inline: this runs on every call.
        or (
            id(submit) not in known_originals
            and not is_original(submit, _cf_thread.__file__)
        )
        or "submit" in pool.__dict__
    ):
        return False
    # cpython-private: _shutdown_lock, _global_shutdown_lock, _broken, _shutdown
    with pool._shutdown_lock, _cf_thread._global_shutdown_lock:  # type: ignore[attr-defined]
        if pool._broken or pool._shutdown or _cf_thread._shutdown:  # type: ignore[attr-defined]
            return False  # submit() raises the right error
        pool._work_queue.put(item)  # type: ignore[attr-defined]  # cpython-private: _work_queue
        # Once every worker exists there is no thread to add; skipping the
        # check saves acquiring the pool's idle semaphore on every call.
        # cpython-private: _threads, _max_workers, _idle_semaphore, _value
        # cpython-private: _adjust_thread_count
        if len(pool._threads) < pool._max_workers:  # type: ignore[attr-defined]
            idle = pool._idle_semaphore  # type: ignore[attr-defined]
            if type(idle) is threading.Semaphore:
                pool._idle_semaphore = IdleCount(pool._max_workers, idle._value)  # type: ignore[assignment,attr-defined]  # ty: ignore[invalid-assignment]
            # A worker started for whichever call comes first serves every
            # later one: it begins in an empty context (see threads).
            contextvars.Context().run(pool._adjust_thread_count)  # type: ignore[attr-defined]
    return True


async def retire(executor: Executor) -> None:
    """Shut ``executor`` down and join its thread without blocking the loop;
    a reused request thread (``request_threads``) is given back instead,
    once its queue has run.

    Its thread may be waiting for this very loop (sync code in it called
    async_to_sync), so the loop must keep running until the thread is done.
    """
    if JOIN_IDLE_AT_ONCE and type(executor) is ContextPool:
        handed, executor.last_call = executor.last_call, None
        last = None if handed is None else handed()
        if handed is not None and (last is None or (last.settled and last.ok)):
            # The thread runs its calls in order and is done with the last
            # one it was handed: nothing holds that call any more (neither
            # the pool's queue nor the thread), or it ran and returned (a
            # call cancelled before it started reports a failure, so it
            # cannot pass for one). Nothing left for the thread to do can
            # need the loop, only leaving: it is joined right here, without
            # a no-op sent through the pool and a trip back through the loop.
            executor.shutdown(wait=True)
            return
    loop = asyncio.get_running_loop()
    drained: asyncio.Future[None] = loop.create_future()

    def report_drained() -> None:
        if not drained.done():
            drained.set_result(None)

    def notify(_: object = None) -> None:
        # A closed loop raises RuntimeError: nobody waits any more (see waiter).
        with contextlib.suppress(RuntimeError):
            call_soon_threadsafe(loop, report_drained)

    if type(executor) is ThreadPoolExecutor or type(executor) is ContextPool:
        # The pool runs its queue in order: once this no-op has run, the
        # thread has nothing left to do but exit, or, for a reused request
        # thread, to wait for its next context.
        try:
            marker = executor.submit(int)
        except RuntimeError:
            marker = None  # already shut down by someone else
        if marker is not None and request_threads.lent(executor):
            # A reused request thread: given back by the thread itself once
            # its queue has run, before the exit completes, and even if the
            # exit is cancelled.
            marker.add_done_callback(lambda _: request_threads.give_back(executor))
            marker.add_done_callback(notify)
            await drained
            return
        executor.shutdown(wait=False)
        if marker is not None:
            marker.add_done_callback(notify)
            await drained
        executor.shutdown(wait=True)  # joins a thread that is already leaving
        return

    # Unknown executor: shut it down from a thread of our own (not the
    # loop's default executor, whose work may be what the thread waits for).
    def join() -> None:
        executor.shutdown()
        notify()

    start_thread(
        threading.Thread(target=join, name="asgire-executor-join", daemon=True)
    )
    await drained


def unhooked_pool(pool: object) -> bool:
    """Whether handing ``pool`` work through ``submit()`` runs only the
    stdlib's own code (None: the pool asyncio makes for a loop without one)."""
    return (
        pool is None
        or (type(pool) is ThreadPoolExecutor and "submit" not in vars(pool))
    ) and is_original(ThreadPoolExecutor.submit, _cf_thread.__file__)
