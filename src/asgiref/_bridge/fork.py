"""Which process this is, for telling the parent's objects apart after
fork(); and resetting state in a forked child.

Guarantees: ``pid`` is this process's id, in a forked child too: the child
refreshes it first thing after fork(), before the resets of the modules that
import this one (at-fork functions run in the order they were registered).

Why a copy: ``os.getpid()`` is a system call, and every ``sync_to_async``
call records the process it runs in (``SyncToAsync.thread_handler``), so
that code in a forked child does not mistake the parent's event loop, or its
shared loop, for one it can use.

``after_fork_in_child(reset)``: each module registers the reset of its own
state through it.

Relies on: ``os.register_at_fork`` (absent on Windows, which has no fork()).

State: ``pid``, written at import and by the child's at-fork hook (when
only one thread exists), read by any thread. Read it as ``fork.pid``, an
attribute of this module, so that the refreshed value is seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def after_fork_in_child(reset: Callable[[], object]) -> None:
    """Have ``reset`` called in a child process after fork(), where there
    is fork() (not on Windows)."""
    if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
        os.register_at_fork(after_in_child=reset)


pid = os.getpid()


def _refresh_pid() -> None:
    global pid
    pid = os.getpid()


after_fork_in_child(_refresh_pid)
