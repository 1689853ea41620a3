"""Every Python version difference and every CPython private name asgiref uses
(not to be confused with ``asgiref.compatibility``, about ASGI apps).

Guarantees: each difference between the supported Pythons (3.10 to 3.15),
and each private name of the standard library the package touches, is
settled here, at import, as a named capability. A missing one never breaks
an import or a call: each has a slower but correct fallback, and its entry
says which, the versions it was checked on, and when it can go.
``tests/test_compat.py`` asserts that each is live on every supported
Python, so that a CPython change turns CI red instead of silently switching
a fast path off.

Relies on: the standard library only, so that ``asgiref.local`` and
``asgiref.current_thread_executor`` can use it and stay leaves.

State: none; every capability is settled once, at import, and only read
after that (tests switch one off by patching the module that reads it).

Marking: code that touches a private name, here or elsewhere, carries (or is
preceded by) a ``# cpython-private: NAME[, NAME...]`` comment; the test
lists each name with its capability, and fails on one it does not list.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.constants
import asyncio.coroutines
import asyncio.events
import atexit
import inspect
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import thread as _cf_thread
from types import FunctionType
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])


def sets_attributes(cls: type, *names: str) -> bool:
    """Whether ``cls``'s own constructor (Python code) sets each of ``names``."""
    init = getattr(cls, "__init__", None)
    return isinstance(init, FunctionType) and set(names) <= set(init.__code__.co_names)


# -- The running loop ---------------------------------------------------------
#
# get_running_loop_or_none(): the running loop, or None instead of raising.
#   Uses asyncio._get_running_loop (C-accelerated). Fallback: catching
#   get_running_loop()'s RuntimeError. Checked on 3.10-3.15. Can go: when
#   asyncio offers a public call that does not raise.


def _running_loop_or_none_fallback() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


get_running_loop_or_none: Callable[[], asyncio.AbstractEventLoop | None] = (
    getattr(asyncio, "_get_running_loop", None)  # cpython-private: _get_running_loop
    or _running_loop_or_none_fallback
)


# -- Coroutine functions ------------------------------------------------------
#
# iscoroutinefunction / markcoroutinefunction: 3.12 added
#   inspect.markcoroutinefunction() and taught inspect.iscoroutinefunction()
#   to honour it; before, only asyncio.iscoroutinefunction() knew a (private,
#   different) marker, asyncio.coroutines._is_coroutine. Can go: with 3.11.
#
# COROUTINE_MARKER: the (attribute name, value) that markcoroutinefunction()
#   sets, found by marking a probe function (3.12+: _is_coroutine_marker).
#   Setting it directly is what makes building a sync_to_async wrapper cheap.
#   Fallback (None): call markcoroutinefunction() and iscoroutinefunction().
#   Checked on 3.10-3.15. Can go: never (a speed mechanism).

if sys.version_info >= (3, 12):  # pragma: no cover - coverage is measured on 3.11
    iscoroutinefunction = inspect.iscoroutinefunction
    markcoroutinefunction: Callable[[_F], _F] = inspect.markcoroutinefunction
else:
    iscoroutinefunction = asyncio.iscoroutinefunction
    # cpython-private: _is_coroutine
    _ASYNCIO_MARK = getattr(asyncio.coroutines, "_is_coroutine", None)

    def markcoroutinefunction(func: _F) -> _F:
        """Make ``iscoroutinefunction(func)`` true; returns ``func``."""
        if _ASYNCIO_MARK is not None:  # pragma: no branch - present on 3.10-3.11
            # cpython-private: _is_coroutine
            func._is_coroutine = _ASYNCIO_MARK  # type: ignore[attr-defined]  # ty: ignore[unresolved-attribute]
        return func


def marker_set_by(mark: Callable[[Any], object]) -> tuple[str, object] | None:
    """The one attribute ``mark`` sets on a function to make it a coroutine
    function, as (name, value); None if it sets none or several."""

    def probe() -> None: ...

    mark(probe)
    added = list(vars(probe).items())
    if len(added) != 1:
        return None
    name, value = added[0]

    def fresh() -> None: ...

    # Set directly, it must mark a function as well as the call did.
    setattr(fresh, name, value)
    return (name, value) if iscoroutinefunction(fresh) else None


# cpython-private: _is_coroutine_marker (found, not named)
COROUTINE_MARKER = marker_set_by(markcoroutinefunction)


# -- Types --------------------------------------------------------------------
#
# IMMUTABLE_TYPE_FLAG: Py_TPFLAGS_IMMUTABLETYPE (1 << 8, 3.10+), set on the
#   classes of extension modules, whose attributes cannot be replaced. A
#   method of such a loop class (uvloop's) is known unhooked without looking
#   at its code. Fallback (0): no extension method counts as unhooked, and
#   such loops get upstream's run_in_executor() path. Checked on 3.10-3.15.
#   Can go: never (CPython ABI).


# cpython-private: Py_TPFLAGS_IMMUTABLETYPE
def immutable_type_flag(flag: int = 1 << 8) -> int:
    """``flag`` if it marks exactly the types whose attributes are fixed: set
    on a built-in type, not on a class statement's; else 0."""

    class Mutable:
        pass

    return flag if int.__flags__ & flag and not Mutable.__flags__ & flag else 0


IMMUTABLE_TYPE_FLAG = immutable_type_flag()


# -- concurrent.futures.ThreadPoolExecutor -----------------------------------
#
# POOL_HAND_OFF: whether a sync_to_async call may be queued on a stdlib pool
#   directly (asgiref._bridge.pool), skipping submit()'s Future: the pool has
#   _work_queue, _shutdown_lock, _shutdown, _broken, _threads,
#   _idle_semaphore (a threading.Semaphore, whose _value seeds the lighter
#   count), _max_workers and _adjust_thread_count() (from which submit()
#   starts threads; asgiref._bridge.threads starts them in an empty context
#   there), and the module _shutdown and _global_shutdown_lock; its workers (_worker) call item.run() as
#   _WorkItem.run is called, positionally (item.run() up to 3.13,
#   item.run(ctx) from 3.14), and mark themselves idle through
#   _idle_semaphore. Fallback: submit(). Checked on 3.10-3.15. Can go: never
#   (a speed mechanism).

# cpython-private: _work_queue, _shutdown_lock, _shutdown, _broken, _threads
# cpython-private: _idle_semaphore, _adjust_thread_count, _max_workers
# cpython-private: _global_shutdown_lock
_POOL_ATTRIBUTES = ("_work_queue", "_shutdown_lock", "_shutdown", "_broken", "_threads")
_POOL_ATTRIBUTES += ("_idle_semaphore", "_adjust_thread_count", "_max_workers")


def pool_has_internals(module: Any) -> bool:
    """Whether ``module``'s ThreadPoolExecutor, and the module, have every
    private name the direct hand-off uses."""
    # Named: an unnamed pool would take a number from the counter that names
    # pools' threads ("ThreadPoolExecutor-N_0"), and every pool made after
    # this would be named differently than with upstream.
    probe = module.ThreadPoolExecutor(max_workers=1, thread_name_prefix="asgiref-probe")
    # submit() starts the pool's threads through _adjust_thread_count().
    submit = getattr(module.ThreadPoolExecutor, "submit", None)
    return (
        all(hasattr(probe, name) for name in _POOL_ATTRIBUTES)
        # cpython-private: _idle_semaphore, _value - seeds pool.IdleCount
        and hasattr(probe._idle_semaphore, "_value")
        and all(
            hasattr(module, name) for name in ("_shutdown", "_global_shutdown_lock")
        )
        and isinstance(submit, FunctionType)
        and "_adjust_thread_count" in submit.__code__.co_names
    )


# cpython-private: _WorkItem, _worker
def workers_call_run(module: Any) -> bool:
    """Whether ``module``'s pool workers run each queued item by calling its
    ``run`` method with positional arguments only, which
    ``asgiref._bridge.sync_call.SyncCall.run`` accepts, and mark themselves
    idle through the pool's ``_idle_semaphore``."""
    run = getattr(getattr(module, "_WorkItem", None), "run", None)
    names = getattr(getattr(module, "_worker", None), "__code__", None)
    return (
        isinstance(run, FunctionType)
        and not run.__code__.co_kwonlyargcount
        and names is not None
        and {"run", "_idle_semaphore"} <= set(names.co_names)
    )


POOL_HAND_OFF = pool_has_internals(_cf_thread) and workers_call_run(_cf_thread)


# -- Event loops --------------------------------------------------------------
#
# LOOP_DEFAULT_EXECUTOR: an asyncio loop keeps its default executor in
#   _default_executor, and sets _executor_shutdown_called once
#   shutdown_default_executor() has begun. Read with defaults that send the
#   call through run_in_executor() when either is missing (the fallback).
#   Checked on 3.10-3.15. Can go: never (a speed mechanism).
#
# LOOP_READY_QUEUE: an asyncio loop's callbacks ready to run, _ready, read
#   to skip a loop turn that would run nothing. Fallback: take the turn.
#   Checked on 3.10-3.15. Can go: never (a speed mechanism).
#
# Both are read on every crossing, with getattr() and a default, through the
# names below: a call of a function here would add a Python frame each time.

# cpython-private: _default_executor, _executor_shutdown_called, _ready
DEFAULT_EXECUTOR_ATTR = "_default_executor"
EXECUTOR_SHUTDOWN_CALLED_ATTR = "_executor_shutdown_called"
READY_QUEUE_ATTR = "_ready"
LOOP_DEFAULT_EXECUTOR = sets_attributes(
    asyncio.base_events.BaseEventLoop,
    DEFAULT_EXECUTOR_ATTR,
    EXECUTOR_SHUTDOWN_CALLED_ATTR,
)
LOOP_READY_QUEUE = sets_attributes(asyncio.base_events.BaseEventLoop, READY_QUEUE_ATTR)

# KEPT_SELF_PIPE: a selector loop makes its self-pipe in _make_self_pipe()
#   (sockets _ssock and _csock, counted in _internal_fds, the reader added
#   with _add_reader() to call _read_from_self()), called by its constructor,
#   and closes it in _close_self_pipe(), called by close(); a selector key's
#   data is the (reader, writer) pair of handles _add_reader() registers. A
#   loop thread overrides both to keep one self-pipe for all its loops
#   (asgiref._bridge.loop_threads). Fallback: the stock loop from
#   asyncio.events.new_event_loop(). Checked on 3.10-3.15. Can go: never (a
#   speed mechanism).


# cpython-private: _make_self_pipe, _close_self_pipe, _add_reader, _read_from_self
# cpython-private: _ssock, _csock, _internal_fds
def self_pipe_is_replaceable(loop_class: type) -> bool:
    """Whether ``loop_class`` makes and closes its self-pipe as described."""

    def own(name: str) -> set[str]:
        # The method that runs, which the loop thread's loop replaces.
        method = getattr(loop_class, name, None)
        return (
            set(method.__code__.co_names) if isinstance(method, FunctionType) else set()
        )

    def along_the_mro(name: str) -> set[str]:
        # Every class's own, as each calls the next through super().
        return {
            called
            for klass in loop_class.__mro__
            if isinstance(method := vars(klass).get(name), FunctionType)
            for called in method.__code__.co_names
        }

    return (
        {"_ssock", "_csock", "_internal_fds", "_add_reader", "_read_from_self"}
        <= own("_make_self_pipe")
        and {"_ssock", "_csock", "_internal_fds"} <= own("_close_self_pipe")
        and "_make_self_pipe" in along_the_mro("__init__")
        and "_close_self_pipe" in along_the_mro("close")
        # Readers are registered as (reader, writer) handle pairs.
        and {"data", "modify", "register"} <= own("_add_reader")
        and callable(getattr(loop_class, "_read_from_self", None))
    )


KEPT_SELF_PIPE = self_pipe_is_replaceable(asyncio.SelectorEventLoop)

# HAS_THREAD_JOIN_TIMEOUT / shutdown_default_executor(loop): from 3.12 asyncio.run
#   bounds its wait for the default executor by
#   asyncio.constants.THREAD_JOIN_TIMEOUT (read at each call, as asyncio
#   does). Fallback: 300 seconds, asyncio's value. Checked on 3.12-3.15.
#   Can go: the version branch with 3.11.

HAS_THREAD_JOIN_TIMEOUT = hasattr(asyncio.constants, "THREAD_JOIN_TIMEOUT")
_THREAD_JOIN_TIMEOUT_FALLBACK = 300.0


def shutdown_default_executor(loop: asyncio.AbstractEventLoop) -> Any:
    """``loop.shutdown_default_executor()``, bounded as ``asyncio.run`` bounds it."""
    if sys.version_info >= (3, 12):  # pragma: no cover - coverage is measured on 3.11
        # cpython-private: THREAD_JOIN_TIMEOUT
        timeout = getattr(
            asyncio.constants, "THREAD_JOIN_TIMEOUT", _THREAD_JOIN_TIMEOUT_FALLBACK
        )
        return loop.shutdown_default_executor(timeout)  # type: ignore[call-arg]
    return loop.shutdown_default_executor()


# LOOP_POLICIES / current_policy / DEFAULT_POLICY_BASE: event loop policies,
#   to tell whether asyncio.run would make the stock selector loop. 3.14
#   deprecates the public getter (the private one does not warn) and renames
#   the base class; a Python without policies has neither. Fallback: loops
#   come from asyncio.events.new_event_loop() as they are. Checked on
#   3.10-3.15. Can go: when policies go (the fallback is then the only path).

_events = vars(asyncio.events)
current_policy: Callable[[], Any] | None = _events.get(
    "_get_event_loop_policy"  # cpython-private: _get_event_loop_policy
) or _events.get("get_event_loop_policy")
DEFAULT_POLICY_BASE: Any = _events.get("BaseDefaultEventLoopPolicy") or _events.get(
    "_BaseDefaultEventLoopPolicy"  # cpython-private: _BaseDefaultEventLoopPolicy
)
LOOP_POLICIES = current_policy is not None and DEFAULT_POLICY_BASE is not None


def default_policy_loop_class() -> type | None:
    """The loop class the current event loop policy makes, when that policy
    is asyncio's default one with its own ``new_event_loop``; else None."""
    if current_policy is None or DEFAULT_POLICY_BASE is None:
        return None
    policy = current_policy()
    if type(policy).new_event_loop is not DEFAULT_POLICY_BASE.new_event_loop:
        return None
    return getattr(policy, "_loop_factory", None)  # cpython-private: _loop_factory


# EAGER_TASKS: asyncio.Task(..., eager_start=True) runs a task's first step
#   at once (3.12+). Fallback: loop.create_task(). Can go: with 3.11.

EAGER_TASKS = sys.version_info >= (3, 12)

# HAS_EVENTFD: os.eventfd (Linux). Fallback: call_soon_threadsafe().

HAS_EVENTFD = hasattr(os, "eventfd")

# THREADING_ATEXIT / at_threading_exit(func): threading._register_atexit
#   runs func once the main thread is done, before the interpreter joins the
#   other threads (asgiref._bridge.at_exit). Fallback: atexit.register, which
#   runs only after that join, so a block never exited could hold the exit
#   up. Checked on 3.10-3.15. Can go: when threading offers it publicly.

_register_atexit = getattr(
    threading, "_register_atexit", None
)  # cpython-private: _register_atexit
THREADING_ATEXIT = _register_atexit is not None
at_threading_exit: Callable[..., Any] = _register_atexit or atexit.register


# FUTURE_BLOCKING_FLAG: a task awaits any object that follows asyncio's
#   Future protocol, which asyncio.isfuture() recognises by the
#   _asyncio_future_blocking attribute (documented there, named privately);
#   asgiref._bridge.waiter.Waiter implements the protocol. Fallback: none (a
#   Waiter would have to be an asyncio.Future); pinned live so that a change
#   turns CI red. Checked on 3.10-3.15. Can go: never (a speed mechanism).

# cpython-private: _asyncio_future_blocking
FUTURE_BLOCKING_FLAG = hasattr(asyncio.Future, "_asyncio_future_blocking")
