"""``async_to_sync`` onto an event loop that is already running: the loop of
the ``sync_to_async`` call the sync code runs in (the "outer" loop), or an
``AsyncSingleThreadContext``'s shared loop; and which sync thread waits on
each loop.

Guarantees:

- ``caller_loop()`` is the loop whose ``sync_to_async`` call the current
  thread is running, as long as it can still run a coroutine: not one
  inherited through fork() (it is the parent's), not a closed one. A loop
  that is only idle, between ``run_until_complete`` calls, still counts: a
  call completes once it runs again, and fails if it closes first.
- ``start_task()`` runs the call's coroutine as a task of that loop, from a
  callback on it, eagerly where that changes nothing observable (3.12+: the
  loop's own ``create_task``, no task factory), so the first step costs no
  extra pass of the loop. A task that is never started, or is cancelled
  before its first step, still reports into the call's ``Outcome``.
- While a coroutine runs, ``loop_thread_executors`` maps its loop to the
  executor of the latest sync thread still waiting on that loop
  (``registered()``), for thread-sensitive code that lost its context.

Relies on: ``asyncio.Task(..., eager_start=True)`` (``_compat.EAGER_TASKS``).

State: ``threadlocal`` (``SyncToAsync.threadlocal``) is per thread:
``SyncToAsync.thread_handler`` sets the loop, its process and the task list
on the worker thread, and ``sync_call`` restores what was there after each
call. ``loop_thread_executors`` (``AsyncToSync.loop_thread_executors``) and
``_waiting_on_loop`` are touched only by each loop's own thread; a forked
child empties both (the loops are the parent's).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any

from .._compat import EAGER_TASKS
from ..current_thread_executor import CurrentThreadExecutor
from . import fork
from .fork import after_fork_in_child
from .hooks import plain_loop_method
from .loop_inbox import call_soon_threadsafe
from .waiter import Outcome

# The running loop and the list AsyncToSync registers its tasks in, set on
# the worker thread while it runs a call.
threadlocal = threading.local()

# The CurrentThreadExecutor of the sync thread waiting on each loop.
loop_thread_executors: dict[asyncio.AbstractEventLoop, CurrentThreadExecutor] = {}
# The executors of the sync threads waiting on each loop, oldest first;
# loop_thread_executors holds the last one.
_waiting_on_loop: dict[asyncio.AbstractEventLoop, list[CurrentThreadExecutor]] = {}


async def registered(
    awaitable: Awaitable[None], executor: CurrentThreadExecutor
) -> None:
    """Await ``awaitable`` with ``executor`` registered as the thread waiting
    on this loop (``loop_thread_executors``)."""
    # Calls on a shared loop need not finish in the order they started, so
    # the loop's entry is the latest call still waiting.
    loop = asyncio.get_running_loop()
    waiting = _waiting_on_loop.setdefault(loop, [])
    waiting.append(executor)
    loop_thread_executors[loop] = executor
    try:
        await awaitable
    finally:
        waiting.remove(executor)
        if waiting:
            loop_thread_executors[loop] = waiting[-1]
        else:
            del _waiting_on_loop[loop]
            loop_thread_executors.pop(loop, None)


if EAGER_TASKS:  # pragma: no cover - coverage is measured on 3.11
    # A task made in a callback normally takes its first step on the loop's
    # next pass, which costs a pass (and its select() call) per crossing.
    # Started eagerly, the step runs in the callback itself. That is only
    # done where create_task() would make a plain Task anyway: the loop
    # class's own method, unreplaced, and no task factory set.

    def create_task(
        loop: asyncio.AbstractEventLoop, awaitable: Coroutine[Any, Any, None]
    ) -> asyncio.Future[None]:
        if plain_loop_method(loop, "create_task") and loop.get_task_factory() is None:
            return asyncio.Task(awaitable, loop=loop, eager_start=True)
        return loop.create_task(awaitable)

else:

    def create_task(
        loop: asyncio.AbstractEventLoop, awaitable: Coroutine[Any, Any, None]
    ) -> asyncio.Future[None]:
        return loop.create_task(awaitable)


def start_task(
    loop: asyncio.AbstractEventLoop,
    awaitable: Coroutine[Any, Any, None],
    outcome: Outcome[Any],
) -> None:
    """Run ``awaitable`` (which reports into ``outcome``) as a task on
    ``loop``, from a callback on that loop."""
    try:
        task = create_task(loop, awaitable)
    except Exception as exc:
        # A task factory that raises would leave the coroutine unrun and its
        # caller waiting for good: the caller gets the error instead.
        awaitable.close()
        outcome.set_exception(exc)
        return
    # Already reported only if it ran to the end in an eager first step.
    if not outcome.reported:  # pragma: no branch - eager starts are 3.12+
        # A task cancelled before its first step (the loop is shutting down)
        # never reports: report the cancellation for it.
        task.add_done_callback(outcome.report_cancellation)
        outcome.task = task


def run_on_running_loop(
    loop: asyncio.AbstractEventLoop,
    awaitable: Coroutine[Any, Any, None],
    outcome: Outcome[Any],
    executor: CurrentThreadExecutor,
    context: contextvars.Context,
) -> None:
    """Run ``awaitable`` (which reports into ``outcome``) as a task on
    ``loop``, running on this thread the work it sends back until it
    reports, or until ``loop`` has closed without it."""
    try:
        # Created in the caller's context, the task starts with a copy of
        # it, so main_wrap finds nothing to merge one by one.
        call_soon_threadsafe(loop, context.run, start_task, loop, awaitable, outcome)
        # Stop waiting once the loop has closed (see waiter).
        reported = executor._run_until_finished(loop.is_closed)
    except BaseException:
        # Interrupted (Ctrl-C), or the loop has closed: what the coroutine
        # sends this thread now fails instead of waiting for good.
        executor._finish()
        raise
    if not reported:
        outcome.fail_unreported(
            RuntimeError(
                "The event loop running the coroutine passed to "
                "async_to_sync closed before the coroutine finished"
            )
        )


def caller_loop() -> asyncio.AbstractEventLoop | None:
    """The loop whose sync_to_async call this thread is running, if any.

    A loop inherited through fork() belongs to the parent process, and a
    closed one (its caller gave up on this sync code, and the loop is gone)
    can never run the coroutine: as upstream, the call then goes where a call
    from a plain sync thread would. A loop that is only idle (between
    ``run_until_complete`` calls) is kept: the call completes once the loop
    runs again, and fails if the loop closes first.
    """
    state = threadlocal.__dict__
    loop = state.get("main_event_loop")
    if loop is None or state.get("main_event_loop_pid") != fork.pid or loop.is_closed():
        return None
    return loop


def _forget_the_parents_waiting_threads() -> None:
    loop_thread_executors.clear()
    _waiting_on_loop.clear()


after_fork_in_child(_forget_the_parents_waiting_threads)
