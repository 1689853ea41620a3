"""Interpreter exit: it never hangs on asgire's threads, and never cuts a
coroutine short.

Upstream runs every ``async_to_sync`` loop on a pool thread, which the
interpreter joins at exit once its work is done: a coroutine in flight gets
to finish (its ``finally`` blocks run), whether the thread waiting for it is
a daemon or was interrupted (Ctrl-C), and an idle pool thread is told to end.

Guarantees: the same. Loop threads are daemons, so that an idle one never
holds up the exit; ``finish()``, which ``asgiref.sync`` registers at import,
waits for the busy ones instead, and closes each ``AsyncSingleThreadContext``
loop still open (a block never exited) as the block's exit would. Calls made
after it has started are refused, as upstream's pools refuse new work then.

Relies on: ``threading._register_atexit`` (``_compat.at_threading_exit``),
which runs ``finish()`` once the main thread is done, before the other
threads are joined; functions registered later run first, so it runs before
``concurrent.futures`` stops the pools that the coroutines it waits for may
still use.

State: none of its own (see ``loop_threads`` and ``shared_loop``).
"""

from __future__ import annotations

from . import loop_threads
from .shared_loop import close_all_at_exit


def finish() -> None:
    """Let the coroutines in flight finish, and close every shared loop."""
    close_all_at_exit()
    loop_threads.loop_thread_cache.close()
