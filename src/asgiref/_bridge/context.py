"""Carrying the caller's context variables and ``Local`` data across a
crossing, and back.

Guarantees:

- A crossing runs its function or coroutine in a copy of the caller's
  context (or the context given to ``sync_to_async``), and afterwards the
  caller sees every value set there (``merge_context``).
- Values are compared by identity only, never with ``==``: a value's own
  ``__eq__`` is third-party code that may be slow, raise, or iterate a
  mapping another thread is mutating.
- ``Local`` data the context carries is visible to the thread running the
  call, and back to the caller afterwards, as upstream re-homes the storage
  a crossing carries (``adopt_local_data``); thread-critical data a fresh
  loop's coroutine kept for its loop thread is not carried back.
- An exception the caller is handling is the one being handled inside the
  function too (``raise_then_call``).

Relies on: ``asgiref.local`` keeping all default ``Local`` data in one
context variable whose value is ``(affinity tag, values)``, and naming every
thread-critical variable ``local._THREAD_CRITICAL_VARIABLE``.

State: none. Everything here acts on the current context of the calling
thread.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

from ..local import _STATE, _THREAD_CRITICAL_VARIABLE, _affinity

_R = TypeVar("_R")
_MISSING: Any = object()


def merge_context(changed: contextvars.Context) -> None:
    """Apply to the current context every value ``changed`` holds that the
    current context doesn't hold as the very same object.

    Values are compared by identity only. ``Context.__eq__`` would be O(1)
    when nothing changed, but once something has it calls the values' own
    ``__eq__``: third-party code that may be slow, raise, or iterate a mapping
    another thread is mutating.
    """
    for var, value in changed.items():
        if var.get(_MISSING) is not value:
            var.set(value)


def adopt_local_data(heir: object = None) -> None:
    """Make the ``Local`` data the current context carries visible to this
    thread (or to the thread holding the affinity tag ``heir``), whichever
    thread wrote it.

    A crossing calls this where upstream re-homes the storage it carries
    (``asgiref.sync._restore_context``): data a thread merely inherited stays hidden from
    it until that thread hands the context to ``sync_to_async`` or
    ``async_to_sync``, which then shows it to the function or coroutine, and
    to the thread afterwards.
    """
    snapshot = _STATE.get(None)
    tag = _affinity.tag if heir is None else heir
    if snapshot is not None and snapshot[0] is not tag:
        _STATE.set((tag, snapshot[1]))


def restore_context_from_a_loop_thread(context: contextvars.Context) -> None:
    """``asgiref.sync._restore_context`` for what a fresh loop's coroutine
    left, less the
    thread-critical ``Local`` data it kept for its loop thread.

    Upstream runs each such loop on a thread of its own, so that data is
    never seen again. asgire reuses the thread: were the data carried back
    to the caller, the caller's next call, on the same thread, would find it.
    """
    for var, value in context.items():
        if var.get(_MISSING) is not value and var.name is not _THREAD_CRITICAL_VARIABLE:
            var.set(value)
    adopt_local_data()


def given_context_runner(
    context: contextvars.Context,
) -> Callable[..., Any]:
    """``context.run`` for a context given to ``sync_to_async``, that first
    adopts the ``Local`` data the context carries (``adopt_local_data``).

    That has to happen inside the context, on the worker: the loop's thread
    must not enter a context that an earlier call, serialised behind or
    abandoned on the worker, may still be running in.
    """

    def run(func: Callable[..., Any], /, *args: Any) -> Any:
        return context.run(_adopt_then_call, func, *args)

    return run


def _adopt_then_call(func: Callable[..., Any], /, *args: Any) -> Any:
    adopt_local_data()
    return func(*args)


def raise_then_call(
    exception: BaseException, func: Callable[..., _R], *args: Any, **kwargs: Any
) -> _R:
    """Call ``func`` while ``exception`` is being handled, so that
    ``sys.exc_info()`` inside it matches the caller's."""
    __traceback_hide__ = True  # noqa: F841
    try:
        raise exception
    except BaseException:
        return func(*args, **kwargs)
