"""The threads asgire starts begin in an empty context; and claiming
something once among racing threads.

From Python 3.14 a new thread may begin in a copy of the context of the
thread that starts it (``sys.flags.thread_inherit_context``, on by default
in free-threaded builds). A thread started for the library would then carry
the values of whichever call happened to start it (routing variables, a
trace recording, ``Local`` data) into code that runs outside any call, such
as ``thread_handler``, and keep them alive for as long as the thread lives.

Guarantees: ``start_thread`` starts a thread in an empty context, whatever
the Python; a ``one_thread_pool``'s thread begins in an empty context
whichever call starts it (the direct hand-off, ``submit()``, or
``loop.run_in_executor()``). What a call needs, it hands over explicitly.
``claim(one)`` is true for exactly one caller, however many threads race
(``sync_call.SyncCall._claim`` does the same inline, on the hot path).

Relies on: ``Thread.start()`` taking its copy of the context current at
that moment; a stdlib pool starting its threads from its
``_adjust_thread_count`` method (part of ``_compat.POOL_HAND_OFF``, which
gates the override; without it, the pool's first ``submit()`` runs in an
empty context);
``list.pop()`` being atomic, on free-threaded builds too.

State: none.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from .._compat import POOL_HAND_OFF


def start_thread(thread: threading.Thread) -> None:
    """Start ``thread`` in an empty context."""
    contextvars.Context().run(thread.start)


def one_thread_pool(
    kind: type[ThreadPoolExecutor] = ThreadPoolExecutor,
) -> ThreadPoolExecutor:
    """``kind(max_workers=1)`` (a stdlib pool, or a subclass of it), whose
    thread begins in an empty context whichever call starts it."""
    pool = kind(max_workers=1)
    pool_ref = weakref.ref(pool)  # no cycle through the pool's own namespace
    if not POOL_HAND_OFF:
        # Without the pool's internals: its first submit(), which starts its
        # thread, runs in an empty context (the work carries what it needs).
        def submit_first(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            own = cast(ThreadPoolExecutor, pool_ref())  # alive: this is its method
            vars(own).pop("submit", None)
            return contextvars.Context().run(type(own).submit, own, fn, *args, **kwargs)

        vars(pool)["submit"] = submit_first
        return pool

    # cpython-private: _adjust_thread_count (each use below)
    def adjust_thread_count() -> None:
        own = cast(ThreadPoolExecutor, pool_ref())  # alive: its submit() calls
        contextvars.Context().run(ThreadPoolExecutor._adjust_thread_count, own)  # type: ignore[attr-defined]
        # Its one thread exists now: later calls need only the pool's method.
        vars(own).pop("_adjust_thread_count", None)

    # The pool starts its threads from this method, under its shutdown lock.
    vars(pool)["_adjust_thread_count"] = adjust_thread_count
    return pool


def claim(one: list[None]) -> bool:
    """Pop the one element of ``one``: True for the first caller only."""
    try:
        one.pop()
    except IndexError:
        return False
    return True


def nothing() -> None:
    return None
