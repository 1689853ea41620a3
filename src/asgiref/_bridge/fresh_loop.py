"""``async_to_sync`` from a plain sync thread: the coroutine runs in a new
event loop, on a loop thread, as ``asyncio.run`` would run it, while the
calling thread runs the sync work the coroutine sends back to it.

Guarantees:

- Each call gets a new event loop, closed before the call returns, as
  upstream promises; what the loop is built on may be kept (see
  ``loop_threads``). ``new_event_loop()`` makes what ``asyncio.run`` would
  start: exactly that loop under any other policy (uvloop's, a test
  plugin's) or a patched ``new_event_loop``, and where ``asyncio.run``
  itself is replaced (a test spy, nest_asyncio), the replacement runs it.
- The loop ends as ``asyncio.run`` ends it, turn for turn: what the
  coroutine's last step queued gets one turn, left-over tasks are cancelled
  (before they get another step) and awaited, failures among them go to the
  exception handler, async generators and the default executor are shut
  down (the latter bounded as ``asyncio.run`` bounds it), and the loop is
  closed; after a ``KeyboardInterrupt``, ``SystemExit`` or ``loop.stop()``
  too. Only the repeated starts and stops of the loop are saved.
- The loop thread runs the coroutine with the caller's affinity tag, so that
  ``Local`` data is shared with the caller, and gives its own back after.
- A caller interrupted (Ctrl-C) before the loop thread took the job
  withdraws it, and closes the coroutines unrun; one interrupted while the
  coroutine runs leaves it running (interpreter exit waits for it), and the
  work it sends back fails instead of waiting for good.

Relies on: an asyncio loop keeping its ready callbacks in ``_ready``
(``_compat.LOOP_READY_QUEUE``: a loop without one always takes its turns);
event loop policies (``_compat.default_policy_loop_class``).

State: the stock ``asyncio.events.new_event_loop`` and ``asyncio.run``, as
found at import, to recognise replacements; nothing else of its own.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .._compat import (
    KEPT_SELF_PIPE,
    LOOP_READY_QUEUE,
    READY_QUEUE_ATTR,
    default_policy_loop_class,
    shutdown_default_executor,
)
from ..current_thread_executor import CurrentThreadExecutor
from ..local import _affinity
from . import loop_threads
from .loop_threads import LoopThreadEventLoop
from .outer_loop import registered
from .threads import claim, nothing
from .waiter import Outcome

_stock_new_event_loop = asyncio.events.new_event_loop
_stock_asyncio_run = asyncio.run


def run_on_loop_thread(
    awaitable: Coroutine[Any, Any, None],
    executor: CurrentThreadExecutor,
    context: contextvars.Context,
    target: object = None,
) -> None:
    """Run ``awaitable`` (which awaits ``target``) in a new event loop on a
    loop thread, running the work it sends back to this thread until that
    loop has closed."""
    finished: Outcome[None] = Outcome(executor._finish)
    tag = _affinity.tag
    # Taken by the loop thread to run the job, or by this thread, when it
    # stops waiting, to withdraw a job that has not started.
    unclaimed = [None]

    def run_loop() -> Callable[[], object]:
        if not claim(unclaimed):
            return nothing  # withdrawn
        own_tag = _affinity.tag
        _affinity.tag = tag
        try:
            # Started in the caller's context, the task needs no context
            # variables copied into it one by one.
            context.run(run_in_one_pass, registered(awaitable, executor))
        except BaseException as exc:
            return functools.partial(finished.set_exception, exc)
        finally:
            _affinity.tag = own_tag
        return functools.partial(finished.set_result, None)

    try:
        loop_threads.loop_thread_cache.run(run_loop)
        executor._run_until_finished()
    except BaseException:
        if claim(unclaimed):
            # Refused (the interpreter is exiting), or interrupted before the
            # job started: neither coroutine will run, and neither is to warn
            # that it was never awaited.
            awaitable.close()
            if inspect.iscoroutine(target):
                target.close()
        else:
            # Interrupted (Ctrl-C) while the coroutine runs: it runs on
            # (interpreter exit waits for it), and what it sends this thread
            # now fails instead of waiting for good.
            executor._finish()
        raise
    finished.result()


def run_in_one_pass(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, in one pass of a new event loop.

    ``asyncio.run`` starts its loop four times: for ``main``, to cancel the
    tasks left over, to shut down async generators, and to shut down the
    default executor. Each start and stop costs about as much as running a
    small coroutine, so here ``main`` is followed by all of that in the same
    pass. The effect is the same: what ``main``'s last step queued gets the
    one turn of the loop that ``asyncio.run``'s stop gives it, then left-over
    tasks are cancelled (before they get another step) and awaited, and the
    loop is closed. Runs on a loop thread (see ``new_event_loop``).

    Where ``asyncio.run`` has been replaced (a test spy, nest_asyncio), the
    replacement is called, as upstream calls it.
    """
    if asyncio.run is not _stock_asyncio_run:
        asyncio.run(main)
        return
    loop = new_event_loop()
    escaped = True  # until main and the wind-down have run to the end
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_then_wind_down(main))
        escaped = False
    finally:
        if escaped:
            wind_down_after_escape(loop)
        asyncio.set_event_loop(None)
        loop.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """What ``asyncio.run`` would start, ``asyncio.events.new_event_loop()``,
    but on the calling loop thread's kept selector and self-pipe when that
    would be the stock selector loop.

    Any other policy (uvloop's, a test plugin's) or a patched
    ``new_event_loop`` gets exactly the loop it makes.
    """
    if (
        KEPT_SELF_PIPE
        and asyncio.events.new_event_loop is _stock_new_event_loop
        and default_policy_loop_class() is asyncio.SelectorEventLoop
    ):
        return LoopThreadEventLoop(loop_threads.loop_thread_cache.loop_parts())
    return asyncio.events.new_event_loop()


async def _then_wind_down(main: Awaitable[None]) -> None:
    # main (main_wrap) reports whatever its coroutine raises, so it returns
    # unless the loop is ended under it: wind_down_after_escape cleans up
    # then, with this task among those it cancels.
    await main
    # asyncio.run stops its loop once main is done, and the stop comes
    # after the callbacks main's last step queued: an async generator
    # dropped there queues its aclose() task that way. One turn of the
    # loop lets them run before the leftover tasks are collected.
    await _turn(asyncio.get_running_loop())
    await wind_down()


async def wind_down() -> None:
    """Do what ``asyncio.run`` does before closing its loop, turn for turn:
    cancel the tasks still running (other than this one) and wait for them,
    then shut down async generators and the default executor.

    ``asyncio.run`` takes each of those steps in a ``run_until_complete`` of
    its own, which starts with a turn of the loop and stops after another.
    Work queued meanwhile gets those turns: an async generator dropped by a
    cancelled task closes in a task of its own, and its ``finally`` may
    await. ``_turn`` gives it the same turns here.
    """
    loop = asyncio.get_running_loop()
    tasks = _cancel_leftovers(loop, asyncio.current_task())
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
        _report_leftover_failures(loop, tasks)
    await _turn(loop)  # the turn the next run_until_complete starts with
    await loop.shutdown_asyncgens()
    await _turn(loop)  # the turn that run stops after
    await _turn(loop)  # and the next one's first
    await shutdown_default_executor(loop)


async def _turn(loop: asyncio.AbstractEventLoop) -> None:
    """Let ``loop`` take one turn, as ``asyncio.run`` would, if anything is
    ready to run in it.

    With nothing ready a turn would only poll for I/O and timers, which the
    few microseconds a turn lasts almost never bring; skipping it saves a
    fresh loop's call several of them. A loop without the stock loop's
    ready queue always takes the turn (``_compat.LOOP_READY_QUEUE``).
    """
    if not LOOP_READY_QUEUE or getattr(loop, READY_QUEUE_ATTR, True):
        await asyncio.sleep(0)


def wind_down_after_escape(loop: asyncio.AbstractEventLoop) -> None:
    """Clean up a loop that something ended before its coroutines finished
    (a KeyboardInterrupt or SystemExit from a task, or a ``loop.stop()``),
    as ``asyncio.run`` does then: cancel and await every task left, the
    coroutines' own included, then shut down async generators and the
    default executor, each in a run of the loop of its own."""
    # The coroutine's own task is among them, unless the loop was ended
    # after it had finished.
    tasks = _cancel_leftovers(loop)
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    _report_leftover_failures(loop, tasks)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(shutdown_default_executor(loop))


def _cancel_leftovers(
    loop: asyncio.AbstractEventLoop, spare: asyncio.Future[Any] | None = None
) -> list[asyncio.Task[Any]]:
    """Cancel every unfinished task of ``loop`` but ``spare``; return them."""
    tasks = [task for task in asyncio.all_tasks(loop) if task is not spare]
    for task in tasks:
        task.cancel()
    return tasks


def _report_leftover_failures(
    loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[Any]]
) -> None:
    """Report the cancelled leftovers that failed instead, as asyncio.run does."""
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
