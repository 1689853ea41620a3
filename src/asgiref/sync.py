"""Bridges between sync and async code: ``sync_to_async`` and ``async_to_sync``.

A crossing in either direction is a thread hop, so its cost is mostly what it
takes to wake one thread from another. Everything here is arranged so that a
crossing adds as little as possible to that:

- ``sync_to_async`` hands the executor a small ``_SyncCall`` and the worker
  posts the outcome straight back to the event loop (through the loop's
  inbox, an eventfd, where it has one). For the executors it knows (the stdlib
  ``ThreadPoolExecutor`` and ``CurrentThreadExecutor``) it queues the call
  directly instead of going through ``submit()``, which saves building a
  ``concurrent.futures.Future`` and wrapping it in an ``asyncio`` one.
- Context variables are copied to the worker and merged back by identity
  (``_merge_context``), one variable at a time, never by comparing values.
- ``async_to_sync`` from a plain sync thread still gets a fresh event loop per
  call, as upstream promises, but the thread that runs the loop comes from a
  cache of idle threads instead of being started for every call, and the loop
  borrows that thread's selector and self-pipe instead of opening its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import os
import selectors
import socket
import sys
import threading
import warnings
import weakref
from asyncio.selector_events import BaseSelectorEventLoop as _SelectorLoop
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from concurrent.futures import Executor, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import thread as _cf_thread
from queue import Empty, SimpleQueue
from types import FunctionType, MethodType

# Dict, List and Optional go unused here: upstream binds them, so ``import *``
# brings them (see __all__), as does InvalidStateError above.
from typing import (  # noqa: UP035
    TYPE_CHECKING,
    Any,
    ClassVar,
    Dict,
    Generic,
    List,
    Literal,
    NoReturn,
    Optional,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)

from . import _request_threads, current_thread_executor
from .current_thread_executor import CurrentThreadExecutor
from .local import _STATE as _LOCAL_STATE
from .local import _THREAD_CRITICAL_VARIABLE, Local, _affinity, _peek

if TYPE_CHECKING:
    from _typeshed import OptExcInfo

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = [
    "TYPE_CHECKING",
    "Any",
    "AsyncSingleThreadContext",
    "AsyncToSync",
    "Awaitable",
    "Callable",
    "Coroutine",
    "CurrentThreadExecutor",
    "Dict",
    "Executor",
    "Future",
    "Generic",
    "InvalidStateError",
    "List",
    "Local",
    "Optional",
    "ParamSpec",
    "SyncToAsync",
    "ThreadPoolExecutor",
    "ThreadSensitiveContext",
    "TypeVar",
    "async_to_sync",
    "asyncio",
    "contextvars",
    "functools",
    "inspect",
    "iscoroutinefunction",
    "markcoroutinefunction",
    "os",
    "overload",
    "sync_to_async",
    "sys",
    "threading",
    "warnings",
    "weakref",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_R = TypeVar("_R")

# Unlike asyncio.get_running_loop(), returns None instead of raising.
_get_running_loop = asyncio._get_running_loop
_MISSING: Any = object()
# os.getpid() is a system call; this copy is refreshed after fork().
_pid = os.getpid()
if sys.version_info >= (3, 12):  # pragma: no cover - coverage is measured on 3.11
    _running_loop = asyncio.get_running_loop
else:
    # Here asyncio.get_running_loop() makes a getpid() system call every time
    # (to notice a fork), which is a measurable part of a crossing. A loop
    # that asyncio implements records the thread running it in _thread_id,
    # so a remembered loop is still this thread's running loop exactly when
    # that matches; after fork() the memory is reset (_reset_after_fork).

    def _no_loop() -> None:
        return None

    class _LastLoop(threading.local):
        # Weak, so that a finished loop is not kept alive by its thread.
        ref: Callable[[], asyncio.AbstractEventLoop | None] = staticmethod(_no_loop)

    _last_loop = _LastLoop()

    def _running_loop() -> asyncio.AbstractEventLoop:
        loop = _last_loop.ref()
        # Other loop implementations (uvloop) have no _thread_id: never reused.
        if getattr(loop, "_thread_id", None) == threading.get_ident():
            return loop  # type: ignore[return-value]  # ty: ignore[invalid-return-type]
        running = asyncio.get_running_loop()
        _last_loop.ref = weakref.ref(running)
        return running


# asgire.trace puts a function here while a recording is active, and removes
# it after the last one. Each crossing reads it once, so tracing that is off
# costs one global read. It is called on the calling thread as
# ``hook(kind, func, target, thread_sensitive)``, where ``target`` is what
# the crossing is about to run (``func`` itself, a thread_handler override,
# or the awaitable ``func`` returned), and returns a stand-in that times it.
_CrossingKind = Literal["sync_to_async", "async_to_sync"]
_trace_hook: Callable[[_CrossingKind, Any, Any, bool | None], Any] | None = None


# -- Recognising coroutine functions -------------------------------------------
#
# Python 3.12 added inspect.markcoroutinefunction() and taught
# inspect.iscoroutinefunction() to honour it; before that only
# asyncio.iscoroutinefunction() knew a (different) marker.

if sys.version_info >= (3, 12):  # pragma: no cover - coverage is measured on 3.11
    iscoroutinefunction = inspect.iscoroutinefunction
    markcoroutinefunction: Callable[[_F], _F] = inspect.markcoroutinefunction

    def _marker_probe() -> None: ...

    markcoroutinefunction(_marker_probe)
    _MARKER_NAME = "_is_coroutine_marker"
    _MARKER_VALUE: object = getattr(_marker_probe, _MARKER_NAME)
else:
    import asyncio.coroutines

    iscoroutinefunction = asyncio.iscoroutinefunction
    _MARKER_NAME = "_is_coroutine"
    _MARKER_VALUE = vars(asyncio.coroutines)["_is_coroutine"]

    def markcoroutinefunction(func: _F) -> _F:
        """Make ``iscoroutinefunction(func)`` true; returns ``func``."""
        setattr(func, _MARKER_NAME, _MARKER_VALUE)
        return func


_COROUTINE = inspect.CO_COROUTINE


def _is_async_callable(func: Any) -> bool:
    """Whether ``func`` or its ``__call__`` is a coroutine function.

    An async generator function is not: called, it returns its generator
    without awaiting anything, so ``sync_to_async`` accepts it as upstream
    does."""
    if type(func) is MethodType and type(func.__func__) is FunctionType:
        # A bound method (Django wraps several per request): inspect looks
        # through it to its function, and its own __call__ never is one.
        func = func.__func__
    if type(func) is FunctionType:
        # The common case, from the code flags, without inspect's unwrapping.
        return bool(func.__code__.co_flags & _COROUTINE) or (
            getattr(func, _MARKER_NAME, None) is _MARKER_VALUE
        )
    return iscoroutinefunction(func) or iscoroutinefunction(
        getattr(func, "__call__", func)  # noqa: B004  # the method, not callability
    )


# What functools.WRAPPER_ASSIGNMENTS adds to the four names every Python
# version copies (__annotations__, __type_params__, __annotate__ by version).
_FUNCTION_ASSIGNMENTS_BY_VERSION = tuple(
    name
    for name in functools.WRAPPER_ASSIGNMENTS
    if name not in ("__module__", "__name__", "__qualname__", "__doc__")
)


def _copy_metadata(wrapper: object, wrapped: object) -> None:
    """``functools.update_wrapper`` for instances, at a fraction of its cost."""
    namespace = wrapper.__dict__
    source = wrapped
    if type(wrapped) is MethodType and type(wrapped.__func__) is FunctionType:
        # A bound method hands every one of these lookups to its function.
        source = wrapped.__func__
    if type(source) is FunctionType:
        # The common case. A function has every attribute functools copies,
        # so each is read without a default; the four every version copies
        # are read by name, which saves most of the loop's cost.
        namespace["__module__"] = source.__module__
        namespace["__name__"] = source.__name__
        namespace["__qualname__"] = source.__qualname__
        namespace["__doc__"] = source.__doc__
        for name in _FUNCTION_ASSIGNMENTS_BY_VERSION:
            namespace[name] = getattr(source, name)
    else:
        for name in functools.WRAPPER_ASSIGNMENTS:
            value = getattr(source, name, _MISSING)
            if value is not _MISSING:
                namespace[name] = value
    extra = getattr(source, "__dict__", None)
    if extra:
        namespace.update(extra)
    namespace["__wrapped__"] = wrapped


# -- Context variables ---------------------------------------------------------


def _merge_context(changed: contextvars.Context) -> None:
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


def _adopt_local_data(heir: object = None) -> None:
    """Make the ``Local`` data the current context carries visible to this
    thread (or to the thread holding the affinity token ``heir``), whichever
    thread wrote it.

    A crossing calls this where upstream re-homes the storage it carries
    (``_restore_context``): data a thread merely inherited stays hidden from
    it until that thread hands the context to ``sync_to_async`` or
    ``async_to_sync``, which then shows it to the function or coroutine, and
    to the thread afterwards.
    """
    snapshot = _LOCAL_STATE.get(None)
    token = _affinity.token if heir is None else heir
    if snapshot is not None and snapshot[0] is not token:
        _LOCAL_STATE.set((token, snapshot[1]))


def _restore_context(context: contextvars.Context) -> None:
    """Apply ``context``'s values to the current context, as a crossing does
    when it returns, and make the ``Local`` data it then carries visible to
    the current thread.

    asgiref 3.13.0 defines this helper and code outside it imports it.
    """
    _merge_context(context)
    _adopt_local_data()


def _restore_context_from_a_loop_thread(context: contextvars.Context) -> None:
    """``_restore_context`` for what a fresh loop's coroutine left, less the
    thread-critical ``Local`` data it kept for its loop thread.

    Upstream runs each such loop on a thread of its own, so that data is
    never seen again. asgire reuses the thread: were the data carried back
    to the caller, the caller's next call, on the same thread, would find it.
    """
    for var, value in context.items():
        if var.get(_MISSING) is not value and var.name is not _THREAD_CRITICAL_VARIABLE:
            var.set(value)
    _adopt_local_data()


def _given_context_runner(
    context: contextvars.Context,
) -> Callable[..., Any]:
    """``context.run`` for a context given to ``sync_to_async``, that first
    adopts the ``Local`` data the context carries (``_adopt_local_data``).

    That has to happen inside the context, on the worker: the loop's thread
    must not enter a context that an earlier call, serialised behind or
    abandoned on the worker, may still be running in.
    """

    def run(func: Callable[..., Any], /, *args: Any) -> Any:
        return context.run(_adopt_then_call, func, *args)

    return run


def _adopt_then_call(func: Callable[..., Any], /, *args: Any) -> Any:
    _adopt_local_data()
    return func(*args)


# -- Threads the library starts ----------------------------------------------------
#
# From Python 3.14 a new thread may begin in a copy of the context of the
# thread that starts it (sys.flags.thread_inherit_context, on by default in
# free-threaded builds). A thread started for the library would then carry
# the values of whichever call happened to start it (routing variables, a
# trace recording, Local data) into code that runs outside any call, such as
# thread_handler, and keep them alive for as long as the thread lives. So
# every thread started here begins in an empty context, on every version:
# Thread.start() takes its copy of the context current at that moment. What a
# call needs, it hands over explicitly.


def _start_thread(thread: threading.Thread) -> None:
    """Start ``thread`` in an empty context."""
    contextvars.Context().run(thread.start)


def _one_thread_pool() -> ThreadPoolExecutor:
    """``ThreadPoolExecutor(max_workers=1)``, whose thread begins in an empty
    context whichever call starts it: the direct hand-off, ``submit()``, or
    ``loop.run_in_executor()``."""
    pool = ThreadPoolExecutor(max_workers=1)
    pool_ref = weakref.ref(pool)  # no cycle through the pool's own namespace

    def adjust_thread_count() -> None:
        own = cast(ThreadPoolExecutor, pool_ref())  # alive: its submit() calls
        contextvars.Context().run(ThreadPoolExecutor._adjust_thread_count, own)
        # Its one thread exists now: later calls need only the pool's method.
        vars(own).pop("_adjust_thread_count", None)

    # The pool starts its threads from this method, under its shutdown lock.
    vars(pool)["_adjust_thread_count"] = adjust_thread_count
    return pool


def _raise_then_call(
    exception: BaseException, func: Callable[..., _R], *args: Any, **kwargs: Any
) -> _R:
    """Call ``func`` while ``exception`` is being handled, so that
    ``sys.exc_info()`` inside it matches the caller's."""
    __traceback_hide__ = True  # noqa: F841
    try:
        raise exception
    except BaseException:
        return func(*args, **kwargs)


# -- Handing work to executors --------------------------------------------------
#
# A ThreadPoolExecutor's workers run any queued object that has a run()
# method (and, on 3.14, accept an argument). Queuing our own call object
# skips submit()'s Future, and our call reports its outcome to the event loop
# itself. This is done only for the exact stdlib class with the stdlib
# submit(): subclasses and instrumented executors go through submit().
#
# Upstream hands every call to loop.run_in_executor(), which calls the
# executor's submit(); tools replace either one, on the class or on the
# object, to record, time or trace the work. Queuing directly skips both, so
# it is done only while both are the originals: a plain function compiled
# from the defining module's own source file, or a method of an extension
# loop class such as uvloop's. A replacement or a wrapper (wrapt's, or one
# made with functools.wraps) is not one, whether it was installed before
# asgiref was imported or after.

# id -> method, for the originals seen so far; holding them keeps ids unique.
_originals: dict[int, object] = {}
_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: no attribute can be replaced
_BASE_EVENTS_FILE = asyncio.base_events.__file__


def _is_original(method: object, module_file: str | None) -> bool:
    """Whether ``method`` is the function ``module_file`` defines, unreplaced."""
    if id(method) in _originals:
        return True
    if type(method) is not FunctionType or method.__code__.co_filename != module_file:
        return False
    _originals[id(method)] = method
    return True


def _plain_loop_method(loop: asyncio.AbstractEventLoop, name: str) -> bool:
    """Whether ``loop``'s method ``name`` is its loop class's own, unreplaced:
    asyncio's, or that of an extension loop class (uvloop's), which cannot be
    replaced in place."""
    loop_type = type(loop)
    method = getattr(loop_type, name)
    # The known originals inline: this runs on every crossing.
    if id(method) not in _originals and not _is_original(method, _BASE_EVENTS_FILE):
        # The class it comes from: every loop class has one, AbstractEventLoop.
        owner = next(k for k in loop_type.__mro__ if name in vars(k))
        if vars(owner)[name] is not method or not owner.__flags__ & _IMMUTABLE_TYPE:
            return False
        _originals[id(method)] = method
    return name not in getattr(loop, "__dict__", ())


# A named probe: an unnamed pool would take a number from the counter that
# names pools' threads ("ThreadPoolExecutor-N_0"), and every pool made after
# importing this module would be named differently than with upstream.
_probe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asgiref-probe")
_POOL_INTERNALS = all(
    hasattr(_probe, name)
    for name in (
        "_work_queue",
        "_shutdown_lock",
        "_shutdown",
        "_broken",
        "_threads",
        "_idle_semaphore",
    )
) and hasattr(_cf_thread, "_global_shutdown_lock")
del _probe


def _workers_call_run(module: Any) -> bool:
    """Whether ``module``'s pool workers run each queued item by calling its
    ``run`` method with positional arguments only (``item.run()`` up to 3.13,
    ``item.run(ctx)`` from 3.14), which ``_SyncCall.run`` accepts, and mark
    themselves idle through the pool's ``_idle_semaphore``."""
    run = getattr(getattr(module, "_WorkItem", None), "run", None)
    names = getattr(getattr(module, "_worker", None), "__code__", None)
    return (
        isinstance(run, FunctionType)
        and not run.__code__.co_kwonlyargcount
        and names is not None
        and {"run", "_idle_semaphore"} <= set(names.co_names)
    )


_POOL_INTERNALS = _POOL_INTERNALS and _workers_call_run(_cf_thread)


class _IdleCount:
    """A lighter stand-in for a pool's ``_idle_semaphore``.

    A stdlib worker releases that semaphore after every item it runs, to tell
    ``submit()`` that an idle thread exists. ``threading.Semaphore`` does so
    through a Python-level condition variable, right after the worker has
    posted our result, while the event loop thread is waking up to collect
    it: the two then contend for the GIL, and a crossing measurably slows
    down. The pool only ever asks ``acquire(timeout=0)`` ("is a thread
    idle?"), which a deque of tokens answers atomically, also on
    free-threaded builds. The count saturates at the number of workers,
    since our calls do not take a token each as ``submit()`` does.
    """

    __slots__ = ("_tokens",)

    def __init__(self, workers: int, idle: int) -> None:
        self._tokens: deque[None] = deque([None] * idle, maxlen=workers)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        try:
            self._tokens.pop()
        except IndexError:
            return False
        return True

    def release(self, n: int = 1) -> None:
        self._tokens.append(None)


def _queue_on_pool(pool: ThreadPoolExecutor, item: Any) -> bool:
    """Queue ``item`` on ``pool`` the way ``submit()`` would; False if it can't."""
    if (
        not _POOL_INTERNALS
        or not _is_original(ThreadPoolExecutor.submit, _cf_thread.__file__)
        or "submit" in vars(pool)
    ):
        return False
    with pool._shutdown_lock, _cf_thread._global_shutdown_lock:  # type: ignore[attr-defined]
        if pool._broken or pool._shutdown or _cf_thread._shutdown:  # type: ignore[attr-defined]
            return False  # submit() raises the right error
        pool._work_queue.put(item)  # type: ignore[attr-defined]
        # Once every worker exists there is no thread to add; skipping the
        # check saves acquiring the pool's idle semaphore on every call.
        if len(pool._threads) < pool._max_workers:  # type: ignore[attr-defined]
            idle = pool._idle_semaphore  # type: ignore[attr-defined]
            if type(idle) is threading.Semaphore:
                pool._idle_semaphore = _IdleCount(pool._max_workers, idle._value)  # type: ignore[assignment,attr-defined]  # ty: ignore[invalid-assignment]
            # A worker started for whichever call comes first serves every
            # later one: it begins in an empty context (see _start_thread).
            contextvars.Context().run(pool._adjust_thread_count)  # type: ignore[attr-defined]
    return True


# -- Waking an event loop from another thread ----------------------------------
#
# A worker thread hands its outcome back as a callback for the loop to run.
# loop.call_soon_threadsafe() does more work for that than a crossing needs:
# it copies the context into a new Handle and sends a byte down the loop's
# self-pipe, and the loop then reads the pipe in a Python loop until recv()
# raises BlockingIOError. On Linux a stock selector loop gets an inbox
# instead: a deque of callbacks and an eventfd, registered once with
# add_reader(). Handing a callback over is then one write, and collecting it
# one read. With both threads held on one core, so that only CPU time
# counts, a thread-sensitive crossing took 27.8 us instead of 30.9 and a
# non-sensitive one 27.7 instead of 34.2 (medians of 10 runs). On two cores
# most of a crossing is the two thread wake-ups, which stay.
#
# A loop whose call_soon_threadsafe is replaced, on its class or on itself,
# is still called through it, so that whatever hooks it sees every callback.

_HAS_EVENTFD = hasattr(os, "eventfd")
# id(loop) -> its inbox, weakly: the loop alone keeps its inbox alive, through
# the reader registered with it, until it closes. An entry goes with its inbox,
# before the loop's id can be reused; a thread posting to a loop holds the
# loop. Nothing here keeps a loop alive, even with callbacks left in its inbox
# (they hold the loop) when it closed.
_inboxes: dict[int, weakref.ref[_LoopInbox]] = {}


class _LoopInbox:
    """Callbacks that other threads send to one selector event loop, and the
    eventfd that wakes the loop for them, closed with the inbox."""

    __slots__ = ("__weakref__", "_fd", "_pending")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()

    def __del__(self) -> None:
        os.close(self._fd)

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        """Have ``loop`` call ``callback(*args)`` soon; any thread may call
        this. Raises ``RuntimeError`` once the loop is closed, as
        ``call_soon_threadsafe`` does."""
        if loop.is_closed():
            raise RuntimeError("Event loop is closed")
        self._pending.append((callback, args))
        # After the append: a read that consumes this write finds the item.
        os.eventfd_write(self._fd, 1)

    def run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop's reader: run the callbacks posted so far."""
        os.eventfd_read(self._fd)
        pending = self._pending
        try:
            # Only what is here now, as the loop runs only the callbacks
            # ready when its pass began; later ones have signalled again.
            for _ in range(len(pending)):
                callback, args = pending.popleft()
                try:
                    callback(*args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    loop.call_exception_handler(
                        {
                            "message": f"Exception in callback {callback!r}",
                            "exception": exc,
                        }
                    )
        finally:
            if pending:
                # Left behind by an exception that stopped the loop: their
                # signal was consumed above, so signal again.
                os.eventfd_write(self._fd, 1)


def _open_inbox(loop: asyncio.AbstractEventLoop) -> None:
    """Give ``loop`` an inbox if it is a stock selector loop; on its thread.

    Any other loop is asked again on its next crossing, which costs less than
    recording the answer (a finalizer per loop). That includes
    ``async_to_sync``'s fresh loops: one runs a single call, and opening and
    closing an inbox for it would cost more than the inbox saves.
    """
    loop_type = type(loop)
    if (
        not issubclass(loop_type, _SelectorLoop)
        or loop_type is _LoopThreadEventLoop
        or not _plain_loop_method(loop, "call_soon_threadsafe")
    ):
        return
    try:
        inbox = _LoopInbox(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        # The reader's handle keeps the context it is registered in for as
        # long as the loop lives: an empty one holds nothing alive.
        contextvars.Context().run(loop.add_reader, inbox._fd, inbox.run, loop)
    except (OSError, NotImplementedError):
        return  # out of descriptors, or a loop that takes no readers
    key = id(loop)
    _inboxes[key] = weakref.ref(inbox, functools.partial(_forget_inbox, key))


def _forget_inbox(key: int, _: weakref.ref[_LoopInbox]) -> None:
    _inboxes.pop(key, None)


def _call_soon_threadsafe(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any
) -> None:
    """``loop.call_soon_threadsafe(callback, *args)``, through the loop's
    inbox while it has one and the method is not replaced."""
    inbox_ref = _inboxes.get(id(loop))
    inbox = None if inbox_ref is None else inbox_ref()
    if inbox is None or not _plain_loop_method(loop, "call_soon_threadsafe"):
        loop.call_soon_threadsafe(callback, *args)
    else:
        inbox.post(loop, callback, args)


class _Waiter:
    """What the task making a ``sync_to_async`` call awaits until the outcome
    is back on the loop's thread (``_SyncCall._settle`` calls ``wake()``).

    An asyncio task can await any object that follows asyncio's own Future
    protocol (``_asyncio_future_blocking``, ``get_loop``, ``add_done_callback``,
    ``result``, ``cancel``): the task hands it the callback that resumes the
    task. A Future schedules that callback for the loop's next pass when it
    completes. This calls it at once, from the callback that brings the
    outcome back, so a crossing costs the loop one pass (and one ``select()``
    call) fewer. Everything here runs on the loop's thread.
    """

    __slots__ = (
        "_asyncio_future_blocking",
        "_cancel_message",
        "_context",
        "_loop",
        "_state",
        "_wakeup",
    )

    # Set when first needed: the wake-up and its context by
    # add_done_callback() (the wake-up is deleted once used), the message by
    # cancel().
    _wakeup: Callable[[_Waiter], object]
    _context: contextvars.Context | None
    _cancel_message: Any

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asyncio_future_blocking = False
        self._state = _PENDING

    def __await__(self) -> Generator[_Waiter, None, None]:
        self._asyncio_future_blocking = True
        yield self
        self.result()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(
        self,
        callback: Callable[[_Waiter], object],
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


class _SyncCall:
    """One ``sync_to_async`` call on its way through an executor.

    Every call runs as upstream runs it, through
    ``thread_handler(loop, exc_info, task_context, func, child)``, so that
    subclasses and instrumentation overriding that method see each call, and
    tools looking for its frame on the worker thread's stack find it. It gets
    to the worker in one of two ways:

    - Queued directly (``_start``'s fast paths): the worker calls ``run()``,
      and the outcome comes back through ``_call_soon_threadsafe`` and
      ends the wait on ``waiter`` (a ``_Waiter``), which the calling task
      awaits.
    - Otherwise as upstream hands it over, a ``functools.partial`` of
      ``thread_handler`` (``job()``) given to ``loop.run_in_executor()`` or,
      when only the executor is not the stdlib's, to its ``submit()``. The
      job reports as ``run()`` does; the future only tells of a job that
      never ran (``job_done``).

    The outcome lives here rather than in the waiter, so that the caller can
    stop waiting (cancellation) and still collect it later.
    """

    __slots__ = (
        "args",
        "exception",
        "func",
        "handler",
        "kwargs",
        "loop",
        "ok",
        "owner",
        "result",
        "run_in_context",
        "settled",
        "task_context",
        "token",
        "unclaimed",
        "waiter",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: SyncToAsync[..., Any],
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_in_context: Callable[..., Any],
        exception: BaseException | None,
        handler: Callable[..., Any] | None,
    ) -> None:
        self.loop = loop
        self.owner = owner
        # None: SyncToAsync's own thread_handler, called unbound.
        self.handler = handler
        self.func = func
        self.args = args
        self.kwargs = kwargs
        # What thread_handler gets as ``func``: the call's Context.run, or a
        # stand-in for it (_given_context_runner).
        self.run_in_context = run_in_context
        self.exception = exception
        self.token = _affinity.token
        self.task_context: list[asyncio.Task[Any]] = []
        self.waiter = _Waiter(loop)
        self.settled = False
        self.ok = False
        self.result: Any = None
        # Whoever pops the one element first owns the call: the worker, to run
        # it, or the caller, to cancel it before it starts. list.pop() is
        # atomic, on free-threaded builds too.
        self.unclaimed = [None]

    @property
    def future(self) -> _SyncCall:
        # ThreadPoolExecutor.shutdown(cancel_futures=True) and a broken pool
        # reach queued items through ``item.future``.
        return self

    def cancel(self) -> bool:
        """Stop the call from starting; False if a worker already took it."""
        return self._fail_unless_started(asyncio.CancelledError())

    def set_exception(self, exception: BaseException) -> None:
        """A pool that broke before running the call reports it here."""
        self._fail_unless_started(exception)

    def _fail_unless_started(self, exception: BaseException) -> bool:
        if not self._claim():
            return False  # a worker has it
        self._report(False, exception)
        return True

    def _claim(self) -> bool:
        """Take the call to run it; False if it was cancelled before it started."""
        try:
            self.unclaimed.pop()
        except IndexError:
            return False
        return True

    def _handler(self) -> Callable[..., Any]:
        """The ``thread_handler`` to call: an override or a wrapper of it, or
        SyncToAsync's own, bound to the wrapper making the call."""
        handler = self.handler
        return _BASE_THREAD_HANDLER.__get__(self.owner) if handler is None else handler

    def _handler_arguments(
        self,
    ) -> tuple[
        asyncio.AbstractEventLoop,
        tuple[Any, Any, Any],
        list[asyncio.Task[Any]],
        Callable[..., Any],
        functools.partial[Any],
    ]:
        """``thread_handler``'s arguments. The call's own are bound in
        ``child``, so that none can clash with ``thread_handler``'s names."""
        child = functools.partial(self.func, *self.args, **self.kwargs)
        return (
            self.loop,
            self._exc_info(),
            self.task_context,
            self.run_in_context,
            child,
        )

    def _exc_info(self) -> tuple[Any, Any, Any]:
        exception = self.exception
        if exception is None:
            return _NO_EXC_INFO
        return type(exception), exception, exception.__traceback__

    def _outcome(
        self, handler: Callable[..., Any], arguments: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        """Call ``handler(*arguments)`` on this (worker) thread, on the
        caller's behalf; return whether it returned, and what it returned or
        raised."""
        __traceback_hide__ = True  # noqa: F841
        # thread_handler leaves the loop in the thread-local for async_to_sync
        # inside the function. Restoring what was there before (an outer call
        # on the same thread, or nothing) means a later, unrelated use of
        # this thread does not find a stale loop there.
        state = SyncToAsync.threadlocal.__dict__
        nested = state.copy() if state else None
        own_token = _affinity.token
        _affinity.token = self.token
        try:
            return True, handler(*arguments)
        except BaseException as exc:
            return False, exc
        finally:
            _affinity.token = own_token
            state.clear()
            if nested:
                state.update(nested)

    def run(self, *_: object) -> None:
        """Run the call on this (worker) thread and report its outcome."""
        __traceback_hide__ = True  # noqa: F841
        if not self._claim():
            return
        if self.handler is None and not self.kwargs:
            # SyncToAsync's own handler, given positional arguments only: none
            # can clash with its names, so they go to it without a child
            # partial (a few hundred nanoseconds of every crossing).
            handler: Callable[..., Any] = _BASE_THREAD_HANDLER
            arguments = (
                self.owner,
                self.loop,
                self._exc_info(),
                self.task_context,
                self.run_in_context,
                self.func,
                *self.args,
            )
        else:
            handler, arguments = self._handler(), self._handler_arguments()
        self._report(*self._outcome(handler, arguments))

    def job(self) -> _ThreadHandlerJob:
        """What upstream hands to ``loop.run_in_executor()``: ``thread_handler``
        bound to its arguments."""
        job = _ThreadHandlerJob(self._handler(), *self._handler_arguments())
        job.call = self
        return job

    def job_done(self, future: Future[Any] | asyncio.Future[Any]) -> None:
        """Done-callback of the future ``job()`` went into, on any thread: a
        job that ran has reported already; report one the executor dropped
        without running it (cancelled, or its pool broke)."""
        if future.cancelled():
            self._fail_unless_started(asyncio.CancelledError())
        elif (exception := future.exception()) is not None:
            self._fail_unless_started(exception)

    def _report(self, ok: bool, result: Any) -> None:
        try:  # noqa: SIM105  # contextlib.suppress() costs more on this hot path
            _call_soon_threadsafe(self.loop, self._settle, ok, result)
        except RuntimeError:
            pass  # the loop is closed: nobody is left waiting for this

    def _settle(self, ok: bool, result: Any) -> None:
        self.settled = True
        self.ok = ok
        self.result = result
        self.waiter.wake()

    def raise_exception(self) -> NoReturn:
        """Raise the exception a settled call failed with."""
        __traceback_hide__ = True  # noqa: F841
        exception = self.result
        self.result = None  # no reference cycle through the traceback
        try:
            raise exception
        finally:
            del exception


class _ThreadHandlerJob(functools.partial[Any]):
    """``thread_handler`` bound to one call's arguments, as upstream hands it
    to ``loop.run_in_executor()`` (tools recognise it by that shape). Calling
    it runs the call as ``_SyncCall.run`` does, but returns or raises the
    outcome, for the executor's future to carry."""

    __slots__ = ("call",)
    call: _SyncCall

    def __call__(self, /, *args: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841
        call = self.call
        if not call._claim():
            raise asyncio.CancelledError  # cancelled before it started
        ok, result = call._outcome(super().__call__, args)
        # Report at once, as run() does: the executor's future would reach
        # the loop a turn later.
        call._report(ok, result)
        if ok:
            return result
        if isinstance(result, StopIteration):
            # An asyncio future cannot hold StopIteration, and the caller
            # would wait forever. This is what run()'s report becomes in the
            # caller's coroutine.
            raise RuntimeError("coroutine raised StopIteration") from result
        try:
            raise result
        finally:
            del result  # no reference cycle through the traceback


_NO_EXC_INFO = (None, None, None)
_CURRENT_THREAD_EXECUTOR_FILE = current_thread_executor.__file__


def _start(
    call: _SyncCall, executor: Executor | None, loop: asyncio.AbstractEventLoop
) -> None:
    """Hand ``call`` to ``executor`` (None: the loop's default executor):
    directly where nothing is hooked (see above), else as upstream does."""
    if _HAS_EVENTFD and id(loop) not in _inboxes:
        _open_inbox(loop)
    if _plain_loop_method(loop, "run_in_executor"):
        if type(executor) is CurrentThreadExecutor:
            if _is_original(
                CurrentThreadExecutor.submit, _CURRENT_THREAD_EXECUTOR_FILE
            ) and "submit" not in vars(executor):
                if executor._work_thread is threading.current_thread():
                    # The check submit() makes: that thread is busy running
                    # this very loop, so the call would wait forever.
                    raise RuntimeError(current_thread_executor._OWN_THREAD)
                executor._enqueue(call)
                return
        elif executor is None:
            default = getattr(loop, "_default_executor", None)
            if (
                type(default) is ThreadPoolExecutor
                and not getattr(loop, "_executor_shutdown_called", True)
                and _queue_on_pool(default, call)
            ):
                return
            if _unhooked_pool(default):
                # The pool starts threads in the context it is handed work in
                # (see _start_thread); only the stdlib's code sees it here.
                contextvars.Context().run(
                    loop.run_in_executor, None, call.job()
                ).add_done_callback(call.job_done)
                return
        elif type(executor) is ThreadPoolExecutor and _queue_on_pool(executor, call):
            return
        if executor is not None:
            # What run_in_executor() would do, without wrapping the future
            # in an asyncio one that nobody awaits.
            if _unhooked_pool(executor):
                future = contextvars.Context().run(executor.submit, call.job())
            else:
                future = executor.submit(call.job())
            future.add_done_callback(call.job_done)
            return
    loop.run_in_executor(executor, call.job()).add_done_callback(call.job_done)


def _unhooked_pool(pool: object) -> bool:
    """Whether handing ``pool`` work through ``submit()`` runs only the
    stdlib's own code (None: the pool asyncio makes for a loop without one)."""
    return (
        pool is None
        or (type(pool) is ThreadPoolExecutor and "submit" not in vars(pool))
    ) and _is_original(ThreadPoolExecutor.submit, _cf_thread.__file__)


def _check_executor(executor: object) -> None:
    # Anything with submit() will do, as for loop.run_in_executor().
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, not {executor!r}"
        )


# -- Thread-sensitive contexts ---------------------------------------------------


class ThreadSensitiveContext:
    """Give thread-sensitive ``sync_to_async`` calls their own thread.

    ``async with ThreadSensitiveContext():`` makes thread-sensitive calls in
    the block (and in tasks it creates) run on one thread dedicated to the
    block instead of the process-wide one; the thread is joined on exit
    without blocking the event loop. Only the outermost such block counts.

    ``ThreadSensitiveContext(executor=...)`` uses the given executor (which
    must run one call at a time on one thread) for the block, even inside
    another context or ``async_to_sync`` call, and restores the enclosing
    choice on exit. The executor stays the caller's: it is not shut down. Such
    a context can be entered only once; tasks created in it must finish
    before it exits, or their later thread-sensitive calls raise
    ``RuntimeError``.
    """

    def __init__(self, *, executor: Executor | None = None) -> None:
        _check_executor(executor)
        self._executor = executor
        self.token: contextvars.Token[ThreadSensitiveContext] | None = None
        self._old_executor: CurrentThreadExecutor | None = None
        self._exited = False

    async def __aenter__(self) -> ThreadSensitiveContext:
        if self._executor is None:
            if SyncToAsync.thread_sensitive_context.get(None) is None:
                self.token = SyncToAsync.thread_sensitive_context.set(self)
            return self
        if self.token is not None:
            raise RuntimeError("ThreadSensitiveContext is already entered")
        if self._exited:
            raise RuntimeError(
                "ThreadSensitiveContext with an executor cannot be entered again"
            )
        self.token = SyncToAsync.thread_sensitive_context.set(self)
        SyncToAsync.context_to_thread_executor[self] = self._executor
        # A waiting async_to_sync frame would otherwise take priority over the
        # given executor. Work sent to that executor from code nested in a new
        # async_to_sync goes to the new frame's own executor instead: the
        # given executor's one thread may be the one waiting.
        self._old_executor = _current_thread_executor()
        AsyncToSync.executors.current = None
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.token is None:
            return
        executor = SyncToAsync.context_to_thread_executor.pop(self, None)
        SyncToAsync.thread_sensitive_context.reset(self.token)
        self.token = None
        if self._executor is not None:
            AsyncToSync.executors.current = self._old_executor
            self._old_executor = None
            self._exited = True
            return
        if executor is not None:
            await _retire(executor)


async def _retire(executor: Executor) -> None:
    """Shut ``executor`` down and join its thread without blocking the loop;
    a reused request thread (``_request_threads``) is given back instead,
    once its queue has run.

    Its thread may be waiting for this very loop (sync code in it called
    async_to_sync), so the loop must keep running until the thread is done.
    """
    loop = asyncio.get_running_loop()
    drained: asyncio.Future[None] = loop.create_future()

    def report_drained() -> None:
        if not drained.done():
            drained.set_result(None)

    def notify(_: object = None) -> None:
        # A closed loop raises RuntimeError: nobody waits any more.
        with contextlib.suppress(RuntimeError):
            _call_soon_threadsafe(loop, report_drained)

    if type(executor) is ThreadPoolExecutor:
        # The pool runs its queue in order: once this no-op has run, the
        # thread has nothing left to do but exit, or, for a reused request
        # thread, to wait for its next context.
        try:
            marker = executor.submit(int)
        except RuntimeError:
            marker = None  # already shut down by someone else
        if marker is not None and _request_threads.lent(executor):
            # A reused request thread: given back by the thread itself once
            # its queue has run, before the exit completes, and even if the
            # exit is cancelled.
            marker.add_done_callback(lambda _: _request_threads.give_back(executor))
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

    _start_thread(
        threading.Thread(target=join, name="asgire-executor-join", daemon=True)
    )
    await drained


# -- sync_to_async ----------------------------------------------------------------


def _current_thread_executor() -> CurrentThreadExecutor | None:
    """``AsyncToSync.executors.current``, without raising when unset."""
    return _peek(AsyncToSync.executors, "current")


class SyncToAsync(Generic[_P, _R]):
    """An awaitable wrapper that runs a sync callable in a worker thread.

    Thread-sensitive calls (the default) run, in order of preference: on the
    sync thread of an enclosing ``async_to_sync`` that is waiting for them;
    on the thread of the enclosing ``ThreadSensitiveContext``; on the thread
    that started the running event loop through ``async_to_sync``; otherwise
    on the process-wide ``single_thread_executor``. Other calls run on
    ``executor``, or the running loop's default executor.

    The function runs in a copy of the caller's context (or in ``context``,
    when given), and context variables it sets are visible to the caller
    afterwards. An exception the caller is handling is the one being handled
    inside the function too.
    """

    # The running loop and the list AsyncToSync registers its tasks in, set on
    # the worker thread while it runs a call.
    threadlocal = threading.local()

    # Runs thread-sensitive calls that have no better place. It may be
    # replaced (at start-up) by another one-thread executor.
    single_thread_executor: ThreadPoolExecutor = _one_thread_pool()

    thread_sensitive_context: contextvars.ContextVar[ThreadSensitiveContext] = (
        contextvars.ContextVar("thread_sensitive_context")
    )

    # True while a task's thread-sensitive call holds single_thread_executor:
    # another one from the same task would wait for itself.
    deadlock_context: contextvars.ContextVar[bool] = contextvars.ContextVar(
        "deadlock_context"
    )

    # Each ThreadSensitiveContext's executor; weak, so that a context that is
    # dropped without being exited does not keep its thread.
    context_to_thread_executor: ClassVar[
        weakref.WeakKeyDictionary[ThreadSensitiveContext, Executor]
    ] = weakref.WeakKeyDictionary()

    func: Callable[_P, _R]
    context: contextvars.Context | None
    _thread_sensitive: bool
    _executor: Executor | None

    def __init__(
        self,
        func: Callable[_P, _R],
        thread_sensitive: bool = True,
        executor: Executor | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        if not callable(func) or _is_async_callable(func):
            raise TypeError("sync_to_async can only be applied to sync functions.")
        if executor is not None:
            if thread_sensitive:
                raise TypeError(
                    "executor must not be set when thread_sensitive is True"
                )
            _check_executor(executor)
        if context is not None and not isinstance(context, contextvars.Context):
            raise TypeError(
                f"context must be a contextvars.Context or None, not {context!r}"
            )
        _copy_metadata(self, func)
        # All of these live on the instance, the coroutine function marker
        # included, so that functools.wraps() over the wrapper copies them:
        # a pass-through decorator then makes a coroutine function too.
        namespace = self.__dict__
        namespace["func"] = func
        namespace["context"] = context
        namespace["_thread_sensitive"] = thread_sensitive
        namespace[_MARKER_NAME] = _MARKER_VALUE
        namespace["_executor"] = executor
        if type(func) is not FunctionType:
            owner = getattr(func, "__self__", _MISSING)
            if owner is not _MISSING:
                self.__self__ = owner

    async def __call__(self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        __traceback_hide__ = True  # noqa: F841
        loop = _running_loop()
        if self._thread_sensitive:
            executor = self._thread_sensitive_executor(loop)
        else:
            executor = self._executor

        given = self.context
        if given is None:
            # _adopt_local_data(), inlined: every crossing asks.
            snapshot = _LOCAL_STATE.get(None)
            if snapshot is not None and snapshot[0] is not _affinity.token:
                _LOCAL_STATE.set((_affinity.token, snapshot[1]))
            context = contextvars.copy_context()
            run_in_context = context.run
        else:
            context = given
            run_in_context = _given_context_runner(given)
        handler = (
            None
            if type(self).thread_handler is _BASE_THREAD_HANDLER
            else self.thread_handler
        )
        func = self.func
        hook = _trace_hook
        if hook is not None:
            # Time what the worker calls first: a thread_handler override is
            # still handed the function itself.
            if handler is None:
                func = hook("sync_to_async", func, func, self._thread_sensitive)
            else:
                handler = hook("sync_to_async", func, handler, self._thread_sensitive)
        call = _SyncCall(
            loop, self, func, args, kwargs, run_in_context, sys.exc_info()[1], handler
        )
        try:
            _start(call, executor, loop)
            try:
                await call.waiter
            except asyncio.CancelledError:
                if not await self._absorb_cancellation(call, loop):
                    raise
            if call.ok:
                return call.result
            call.raise_exception()
        finally:
            if given is None:
                _merge_context(context)
            # The caller reads False afterwards, unset before or not, as
            # upstream; setting it where it is False already changes nothing.
            if self.deadlock_context.get(True):
                self.deadlock_context.set(False)

    @staticmethod
    async def _absorb_cancellation(
        call: _SyncCall, loop: asyncio.AbstractEventLoop
    ) -> bool:
        """Handle the calling task being cancelled mid-call.

        A coroutine that the sync function is running through async_to_sync
        is cancelled first. If it finishes without re-raising, the sync code
        goes on, and the call's own outcome is awaited and returned (True).
        Otherwise the call is abandoned: it won't start if it hasn't, and the
        cancellation propagates (False).
        """
        abandon = True
        if call.task_context:
            task = call.task_context[0]
            task.cancel()
            try:
                await task
                abandon = False
            except asyncio.CancelledError:
                pass
        if call.settled or abandon:
            call.cancel()
            return False
        call.waiter = _Waiter(loop)
        await call.waiter
        return True

    def _thread_sensitive_executor(self, loop: asyncio.AbstractEventLoop) -> Executor:
        current = _current_thread_executor()
        if current is not None:
            if not current._broken or current._accepts_work():
                return current
            # This task was started inside an async_to_sync call that has
            # since returned (Uvicorn starts a pipelined request from inside
            # the previous response's send()), and copied that frame's
            # executor and single-thread marker. Nothing waits for the task
            # any more, so it is placed like any other task.
            AsyncToSync.executors.current = None
            self.deadlock_context.set(False)
        context = self.thread_sensitive_context.get(None)
        if context is not None:
            if context._exited:
                raise RuntimeError(
                    "ThreadSensitiveContext has exited. Tasks created "
                    "inside a context with an executor must finish before "
                    "it exits."
                )
            executor = self.context_to_thread_executor.get(context)
            if executor is None:
                # A reused request thread, with asgire.request_threads on and
                # the context still entered; otherwise a fresh one-thread pool.
                executor = (
                    _request_threads.executor_for(context.token is not None)
                    or _one_thread_pool()
                )
                self.context_to_thread_executor[context] = executor
            return executor
        loop_executor = AsyncToSync.loop_thread_executors.get(loop)
        if loop_executor is not None:
            return loop_executor
        if self.deadlock_context.get(False):
            raise RuntimeError(
                "Single thread executor already being used, would deadlock"
            )
        self.deadlock_context.set(True)
        return self.single_thread_executor

    def __get__(
        self, parent: Any, objtype: Any
    ) -> Callable[_P, Coroutine[Any, Any, _R]]:
        """Bind like a method: ``instance.attribute(...)`` passes ``instance``."""
        bound = functools.partial(self.__call__, parent)
        return functools.update_wrapper(bound, self.func)  # type: ignore[return-value]

    def thread_handler(
        self,
        loop: asyncio.AbstractEventLoop,
        exc_info: OptExcInfo,
        task_context: list[asyncio.Task[Any]],
        func: Callable[..., _R],
        *args: Any,
        **kwargs: Any,
    ) -> _R:
        """Run ``func(*args, **kwargs)`` on the worker thread, for one call.

        Every call goes through here, on the worker thread, as
        ``thread_handler(loop, exc_info, task_context, func, child)``: it notes
        ``loop`` in ``threadlocal`` for ``async_to_sync`` inside the function,
        and re-raises ``exc_info``'s exception around the call. Subclasses
        override it to wrap each call (Channels closes database connections).
        """
        __traceback_hide__ = True  # noqa: F841
        threadlocal = self.threadlocal
        threadlocal.main_event_loop = loop
        threadlocal.main_event_loop_pid = _pid
        threadlocal.task_context = task_context
        if exc_info[1] is not None:
            return _raise_then_call(exc_info[1], func, *args, **kwargs)
        return func(*args, **kwargs)


_BASE_THREAD_HANDLER = SyncToAsync.thread_handler


# -- async_to_sync ----------------------------------------------------------------


_Job = Callable[[], Callable[[], object]]


def _take(one: list[None]) -> bool:
    """Pop the one element of ``one``: True for the first caller only, even
    when threads race for it (list.pop() is atomic, on free-threaded builds
    too)."""
    try:
        one.pop()
    except IndexError:
        return False
    return True


def _nothing() -> None:
    return None


class _LoopThreads:
    """Idle threads kept for running ``async_to_sync``'s event loops.

    Starting a thread costs about as much as the rest of a call, so a thread
    whose loop has finished waits a while for the next one. The cache is
    unbounded on purpose: a loop thread may be needed while others are busy
    (nested calls), and making it wait could deadlock.

    A job returns the callable that tells its caller it is done; the thread
    calls it only once it is back on the idle list, so that a caller making
    its next call at once finds the thread there instead of starting another.

    Each thread also keeps the selector and self-pipe of its event loops
    (``_LoopParts``), made on first use and closed when the thread ends.
    """

    idle_timeout = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[SimpleQueue[_Job]] = []
        self._started = 0
        self._kept = threading.local()
        self._all_parts: set[_LoopParts] = set()
        # Jobs handed out and still running, which interpreter exit waits for.
        self._busy = 0
        self._closed = False
        self._drained: threading.Event | None = None

    def run(self, job: _Job) -> None:
        """Run ``job`` on an idle loop thread, or a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError(_AFTER_SHUTDOWN)
            self._busy += 1
            if self._idle:
                self._idle.pop().put(job)
                return
            self._started += 1
            name = f"asgire-loop-{self._started}"
        # The job goes through the inbox: the thread's arguments stay
        # referenced for as long as it lives, and must not keep the job's
        # coroutine and context alive. A daemon: an idle loop thread must not
        # keep the process alive, and a busy one is waited for at exit.
        inbox: SimpleQueue[_Job] = SimpleQueue()
        inbox.put(job)
        unclaimed = [None]
        thread = threading.Thread(
            target=self._work, args=(inbox, unclaimed), name=name, daemon=True
        )
        try:
            _start_thread(thread)
        except BaseException:
            # It failed to start, or this thread was interrupted (Ctrl-C)
            # while it started: unless it has taken the job already, it never
            # will, and the job is not counted as running.
            if _take(unclaimed):
                self._job_ended()
            raise

    def _job_ended(self, idle_inbox: SimpleQueue[_Job] | None = None) -> None:
        """Count a job as ended, and put its thread (its inbox) on the idle list."""
        with self._lock:
            if idle_inbox is not None:
                self._idle.append(idle_inbox)
            self._busy -= 1
            if not self._busy and self._drained is not None:
                self._drained.set()

    def close(self) -> None:
        """Take no more jobs, and wait for the running ones to end (at exit)."""
        with self._lock:
            self._closed = True
            if self._busy and self._drained is None:
                self._drained = threading.Event()
            drained = self._drained
        if drained is not None:
            drained.wait()

    def _work(self, inbox: SimpleQueue[_Job], unclaimed: list[None]) -> None:
        try:
            if not _take(unclaimed):
                return  # withdrawn by run(): its start was interrupted
            job = inbox.get()
            while True:
                report_done = job()
                del job
                self._job_ended(inbox)
                report_done()
                del report_done
                try:
                    job = inbox.get(timeout=self.idle_timeout)
                except Empty:
                    with self._lock:
                        if inbox in self._idle:
                            self._idle.remove(inbox)
                            return
                    # Taken off the idle list just now: a job is on its way.
                    job = inbox.get()
        finally:
            parts: _LoopParts | None = getattr(self._kept, "parts", None)
            if parts is not None:
                with self._lock:
                    self._all_parts.discard(parts)
                parts.close()

    def loop_parts(self) -> _LoopParts:
        """The calling loop thread's selector and self-pipe."""
        parts: _LoopParts | None = getattr(self._kept, "parts", None)
        if parts is None:
            parts = self._kept.parts = _LoopParts()
            with self._lock:
                self._all_parts.add(parts)
        return parts

    def forget(self) -> None:
        """After fork(): the idle threads did not survive into the child.

        Their loop parts did, as copies of the parent's file descriptors:
        close them, except the forking thread's own, which may be in use.
        """
        self._lock = threading.Lock()
        self._idle = []
        self._busy = 0
        self._drained = None
        forking_thread = threading.get_ident()
        kept = set()
        for parts in self._all_parts:
            if parts.owner == forking_thread:
                kept.add(parts)
            else:
                parts.close()
        self._all_parts = kept


_loop_threads = _LoopThreads()

# The executors of the sync threads waiting on each loop, oldest first;
# AsyncToSync.loop_thread_executors holds the last one. Touched only by the
# loop's own thread.
_waiting_on_loop: dict[asyncio.AbstractEventLoop, list[CurrentThreadExecutor]] = {}


async def _registered(
    awaitable: Awaitable[None], executor: CurrentThreadExecutor
) -> None:
    """Await ``awaitable`` with ``executor`` registered as the thread waiting
    on this loop (``AsyncToSync.loop_thread_executors``)."""
    # Calls on a shared loop need not finish in the order they started, so
    # the loop's entry is the latest call still waiting.
    loop = asyncio.get_running_loop()
    waiting = _waiting_on_loop.setdefault(loop, [])
    waiting.append(executor)
    AsyncToSync.loop_thread_executors[loop] = executor
    try:
        await awaitable
    finally:
        waiting.remove(executor)
        if waiting:
            AsyncToSync.loop_thread_executors[loop] = waiting[-1]
        else:
            del _waiting_on_loop[loop]
            AsyncToSync.loop_thread_executors.pop(loop, None)


if sys.version_info >= (3, 12):  # pragma: no cover - coverage is measured on 3.11
    # A task made in a callback normally takes its first step on the loop's
    # next pass, which costs a pass (and its select() call) per crossing.
    # Started eagerly, the step runs in the callback itself. That is only
    # done where create_task() would make a plain Task anyway: the loop
    # class's own method, unreplaced, and no task factory set.

    def _create_task(
        loop: asyncio.AbstractEventLoop, awaitable: Coroutine[Any, Any, None]
    ) -> asyncio.Future[None]:
        if _plain_loop_method(loop, "create_task") and loop.get_task_factory() is None:
            return asyncio.Task(awaitable, loop=loop, eager_start=True)
        return loop.create_task(awaitable)

else:

    def _create_task(
        loop: asyncio.AbstractEventLoop, awaitable: Coroutine[Any, Any, None]
    ) -> asyncio.Future[None]:
        return loop.create_task(awaitable)


def _start_task(
    loop: asyncio.AbstractEventLoop,
    awaitable: Coroutine[Any, Any, None],
    outcome: _Outcome[Any],
) -> None:
    """Run ``awaitable`` (which reports into ``outcome``) as a task on
    ``loop``, from a callback on that loop."""
    try:
        task = _create_task(loop, awaitable)
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


class _SharedLoop:
    """The one event loop an ``AsyncSingleThreadContext`` runs every call in.

    It runs on the context's one-thread executor, from the first
    ``async_to_sync`` call in the context until the context exits (or is
    garbage collected, or the interpreter exits), then closes as
    ``asyncio.run`` would close it. Closing waits for the calls still running
    in it, as upstream's executor shutdown does, and cancels only the tasks
    left over once they are done.

    Calls count themselves in and out under the context's lock, the one its
    exit takes: a call either gets in before the exit, which then waits for
    it, or finds the block exited.
    """

    # Closes the loop when the context is dropped; set once the loop runs.
    finalizer: weakref.finalize[Any, Any]

    def __init__(self, lock: threading.Lock, token: object) -> None:
        self.pid = _pid
        self.token = token  # the affinity its thread holds for good
        self.lock = lock
        self.calls = 0
        self.closing = False
        self.ended = False  # the loop has closed, whoever closed it
        self._drained: threading.Event | None = None

    def start(self, executor: Executor) -> bool:
        """Start the loop on ``executor``; False at interpreter exit."""
        with _open_shared_loops_lock:
            if _exiting:
                return False
            _open_shared_loops.add(self)
        ready: Future[tuple[asyncio.AbstractEventLoop, int]] = Future()
        try:
            # The thread the executor starts for it begins in an empty context.
            self.finished = contextvars.Context().run(
                executor.submit, self._serve, ready
            )
            self.loop, self.thread_id = ready.result()
        except BaseException:
            self._forget()
            raise
        return True

    def _serve(self, ready: Future[tuple[asyncio.AbstractEventLoop, int]]) -> None:
        _affinity.token = self.token
        try:
            loop = asyncio.events.new_event_loop()  # what asyncio.run would call
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        asyncio.set_event_loop(loop)
        if _HAS_EVENTFD:
            _open_inbox(loop)  # every call in the block posts to this loop
        ready.set_result((loop, threading.get_ident()))
        try:
            loop.run_forever()
            loop.run_until_complete(_wind_down())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            # Stopped from within (a coroutine stopped it, or an exception
            # escaped it): the calls left in it will never report.
            with self.lock:
                self.ended = True
                if self._drained is not None:
                    self._drained.set()

    def leave(self, entered: list[None]) -> None:
        """Count a call out, once (``entered`` holds one element until then):
        its thread, or the coroutine's report when that thread stopped
        waiting (see _Outcome.on_report), may come first."""
        if not _take(entered):
            return
        with self.lock:
            self.calls -= 1
            if not self.calls and self._drained is not None:
                self._drained.set()

    def close(self) -> None:
        """Take no more calls, wait for those in flight, then stop and close
        the loop; waits for that unless called on the loop's thread."""
        if self.pid != _pid:
            return  # the parent's, whose thread did not survive fork()
        with self.lock:
            self.closing = True
            if self.calls and not self.ended and self._drained is None:
                self._drained = threading.Event()
            drained = self._drained
        if drained is not None:
            drained.wait()
        self._forget()
        with contextlib.suppress(RuntimeError):  # raised when already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.get_ident() != self.thread_id:
            self.finished.result()

    def _forget(self) -> None:
        with _open_shared_loops_lock:
            _open_shared_loops.discard(self)


# -- Interpreter exit ------------------------------------------------------------------
#
# Upstream runs every async_to_sync loop on a pool thread, which the
# interpreter joins at exit once its work is done: a coroutine in flight gets
# to finish (its finally blocks run), whether the thread waiting for it is a
# daemon or was interrupted (Ctrl-C), and an idle pool thread is told to end.
# Here the loop threads are daemons, so that an idle one never holds up the
# exit, and the function below waits for the busy ones instead; a shared loop
# still open (its block never exited) is closed as the block's exit would.
# threading._register_atexit runs it once the main thread is done, before
# the other threads are joined; functions registered later run first, so it
# runs before concurrent.futures stops the pools that the coroutines it
# waits for may still use. Calls made after it has started are refused, as
# upstream's pools refuse new work then.

_AFTER_SHUTDOWN = "cannot schedule new futures after interpreter shutdown"
_open_shared_loops_lock = threading.Lock()
_open_shared_loops: set[_SharedLoop] = set()
_exiting = False


def _finish_at_exit() -> None:
    """Let the coroutines in flight finish, and close every shared loop."""
    global _exiting
    with _open_shared_loops_lock:
        _exiting = True
        still_open = list(_open_shared_loops)
    for shared in still_open:
        with contextlib.suppress(Exception):  # the others must close all the same
            shared.close()
    _loop_threads.close()


threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]  # ty: ignore[unresolved-attribute]


async def _wind_down() -> None:
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
    await _shutdown_default_executor(loop)


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


def _shutdown_default_executor(loop: asyncio.AbstractEventLoop) -> Awaitable[None]:
    if sys.version_info >= (3, 12):  # pragma: no cover - coverage is measured on 3.11
        # Like asyncio.run from 3.12 on, stop waiting for a stuck job after
        # a while (asyncio warns) rather than hang the caller for good.
        return loop.shutdown_default_executor(asyncio.constants.THREAD_JOIN_TIMEOUT)
    return loop.shutdown_default_executor()


def _wind_down_after_escape(loop: asyncio.AbstractEventLoop) -> None:
    """Clean up a fresh loop that something ended before its coroutine
    finished (a KeyboardInterrupt or SystemExit from a task, or a
    ``loop.stop()``), as ``asyncio.run`` does then: cancel and await every
    task left, the coroutine's own included, then shut down async generators
    and the default executor, each in a run of the loop of its own."""
    # The coroutine's own task is among them, unless the loop was ended
    # after it had finished.
    tasks = _cancel_leftovers(loop)
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    _report_leftover_failures(loop, tasks)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(_shutdown_default_executor(loop))


async def _then_wind_down(main: Awaitable[None]) -> None:
    # main (main_wrap) reports whatever its coroutine raises, so it returns
    # unless the loop is ended under it: _wind_down_after_escape cleans up
    # then, with this task among those it cancels.
    await main
    # asyncio.run stops its loop once main is done, and the stop comes
    # after the callbacks main's last step queued: an async generator
    # dropped there queues its aclose() task that way. One turn of the
    # loop lets them run before the leftover tasks are collected.
    await _turn(asyncio.get_running_loop())
    await _wind_down()


async def _turn(loop: asyncio.AbstractEventLoop) -> None:
    """Let ``loop`` take one turn, as ``asyncio.run`` would, if anything is
    ready to run in it.

    With nothing ready a turn would only poll for I/O and timers, which the
    few microseconds a turn lasts almost never bring; skipping it saves a
    fresh loop's call several of them. A loop without the stock loop's
    ready queue always takes the turn.
    """
    if getattr(loop, "_ready", True):
        await asyncio.sleep(0)


class _KeptSelector(selectors.DefaultSelector):
    """A selector that outlives the event loops built on it: closing it only
    drops the registrations a loop left behind. The self-pipe's stays, so
    that the next loop need not register it again."""

    def __init__(self, self_pipe_fd: int) -> None:
        super().__init__()
        self.self_pipe_fd = self_pipe_fd

    def close(self) -> None:
        for fd in list(self.get_map()):
            if fd != self.self_pipe_fd:
                self.unregister(fd)

    def discard(self) -> None:
        super().close()


class _LoopParts:
    """What a loop thread keeps from one event loop to the next.

    A new selector event loop opens an epoll (or kqueue) descriptor and a
    socket pair for its self-pipe, and closes them again: about half of the
    cost of a fresh loop. The loops of one thread run one after the other,
    so they can all borrow the same ones.
    """

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.self_pipe = socket.socketpair()
        for sock in self.self_pipe:
            sock.setblocking(False)
        self.selector = _KeptSelector(self.self_pipe[0].fileno())

    def close(self) -> None:
        self.selector.discard()
        for sock in self.self_pipe:
            sock.close()


class _LoopThreadEventLoop(asyncio.SelectorEventLoop):
    """The stock selector event loop, on its loop thread's ``_LoopParts``.

    Each instance is still a new loop, closed after its one run; only the
    descriptors underneath are reused. A byte a closed loop's self-pipe did
    not read merely wakes the next loop once.
    """

    if TYPE_CHECKING:
        # The selector loop's internals used here, which typeshed leaves out.
        _internal_fds: int

        def _add_reader(self, fd: int, callback: Callable[[], None]) -> object: ...
        def _read_from_self(self) -> None: ...

    def __init__(self, parts: _LoopParts) -> None:
        self._parts = parts
        super().__init__(parts.selector)

    def _make_self_pipe(self) -> None:
        self._ssock, self._csock = self._parts.self_pipe
        self._internal_fds += 1
        # Already registered by an earlier loop, this only swaps the handle.
        self._add_reader(self._parts.self_pipe[0].fileno(), self._read_from_self)

    def _close_self_pipe(self) -> None:
        # Left registered for the next loop, without this loop's handle (it
        # would keep the closed loop alive).
        selector = self._parts.selector
        reader, _ = selector.get_key(selector.self_pipe_fd).data
        reader.cancel()
        selector.modify(selector.self_pipe_fd, selectors.EVENT_READ, (None, None))
        self._ssock = self._csock = None
        self._internal_fds -= 1


_stock_new_event_loop = asyncio.events.new_event_loop
_stock_asyncio_run = asyncio.run
# Looked up by name: Python 3.14 deprecates the policy getter (the private
# one it keeps does not warn) and renames the policies' base class, and a
# later version without policies has neither.
_asyncio_events = vars(asyncio.events)
_current_policy: Callable[[], Any] | None = _asyncio_events.get(
    "_get_event_loop_policy"
) or _asyncio_events.get("get_event_loop_policy")
_default_policy_base: Any = _asyncio_events.get(
    "BaseDefaultEventLoopPolicy"
) or _asyncio_events.get("_BaseDefaultEventLoopPolicy")


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """What ``asyncio.run`` would start, ``asyncio.events.new_event_loop()``,
    but on the calling loop thread's kept selector and self-pipe when that
    would be the stock selector loop.

    Any other policy (uvloop's, a test plugin's) or a patched
    ``new_event_loop`` gets exactly the loop it makes.
    """
    if (
        asyncio.events.new_event_loop is _stock_new_event_loop
        and _current_policy is not None
        and _default_policy_base is not None
    ):
        policy = _current_policy()
        if (
            type(policy).new_event_loop is _default_policy_base.new_event_loop
            and getattr(policy, "_loop_factory", None) is asyncio.SelectorEventLoop
        ):
            return _LoopThreadEventLoop(_loop_threads.loop_parts())
    return asyncio.events.new_event_loop()


def _run_in_fresh_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, in one pass of a new event loop.

    ``asyncio.run`` starts its loop four times: for ``main``, to cancel the
    tasks left over, to shut down async generators, and to shut down the
    default executor. Each start and stop costs about as much as running a
    small coroutine, so here ``main`` is followed by all of that in the same
    pass. The effect is the same: what ``main``'s last step queued gets the
    one turn of the loop that ``asyncio.run``'s stop gives it, then left-over
    tasks are cancelled (before they get another step) and awaited, and the
    loop is closed. Runs on a loop thread (see ``_new_event_loop``).

    Where ``asyncio.run`` has been replaced (a test spy, nest_asyncio), the
    replacement is called, as upstream calls it.
    """
    if asyncio.run is not _stock_asyncio_run:
        asyncio.run(main)
        return
    loop = _new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_then_wind_down(main))
        except BaseException:
            _wind_down_after_escape(loop)
            raise
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class AsyncSingleThreadContext:
    """Run every ``async_to_sync`` call in the block on one thread and loop.

    ``with AsyncSingleThreadContext():`` keeps one event loop, on one thread,
    for all ``async_to_sync`` calls made in the block from sync code, so that
    objects bound to a loop (connection pools, clients) survive from one call
    to the next. When the outermost block exits, it waits for the calls still
    running in it (made by other threads that share the block's context);
    then tasks still running are cancelled and awaited, async generators and
    the loop's default executor are shut down, and the loop and its thread
    are closed. Nested blocks share the outermost one's loop. A block never
    exited is closed that way when it is garbage collected, or at the latest
    when the interpreter exits; a call made in its context after it has
    exited runs as outside any block.
    """

    def __init__(self) -> None:
        self.token: contextvars.Token[AsyncSingleThreadContext] | None = None
        self._shared_loop: _SharedLoop | None = None
        # Orders the exit against the loop's start and each call's entry
        # (threads sharing the context may call at once).
        self._lock = threading.Lock()

    def __enter__(self) -> AsyncSingleThreadContext:
        if AsyncToSync.async_single_thread_context.get(None) is None:
            token = AsyncToSync.async_single_thread_context.set(self)
            with self._lock:
                self.token = token
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        with self._lock:
            token, self.token = self.token, None
            shared, self._shared_loop = self._shared_loop, None
        if token is None:
            return
        try:
            if shared is not None:
                shared.finalizer.detach()
                shared.close()
            executor = AsyncToSync.context_to_thread_executor.pop(self, None)
            if executor is not None:
                executor.shutdown()
        finally:
            AsyncToSync.async_single_thread_context.reset(token)

    def _enter_call(self) -> _SharedLoop | None:
        """Count an ``async_to_sync`` call into the block's loop, started by
        the first one; None once the block has exited (or the interpreter is
        exiting): the call then runs as outside any block."""
        with self._lock:
            if self.token is None:
                return None
            shared = self._shared_loop
            if shared is None or shared.pid != _pid:  # none yet, or the parent's
                executor = AsyncToSync.context_to_thread_executor.get(self)
                if executor is None:
                    executor = ThreadPoolExecutor(max_workers=1)
                    AsyncToSync.context_to_thread_executor[self] = executor
                shared = _SharedLoop(self._lock, _affinity.token)
                if not shared.start(executor):
                    return None
                self._shared_loop = shared
                # A context dropped without exiting still closes its loop.
                shared.finalizer = weakref.finalize(self, shared.close)
                shared.finalizer.atexit = False  # _finish_at_exit's job
            elif shared.closing:
                return None  # closed at interpreter exit
            shared.calls += 1
        return shared


class _Outcome(Generic[_R]):
    """How an ``async_to_sync`` call's coroutine ended.

    ``main_wrap`` reports into it through ``set_result`` and
    ``set_exception``, as into a ``concurrent.futures.Future``; reporting
    then calls ``on_done``, which ends the waiting thread's
    ``CurrentThreadExecutor`` loop. A Future would do the same through a
    condition variable that nobody waits on, at several times the cost.
    """

    __slots__ = ("_failure", "_on_done", "_result", "reported", "task")

    def __init__(self, on_done: Callable[[], object] | None) -> None:
        self._on_done = on_done
        self._result: Any = None
        self.reported = False
        # The task reporting here, when it carries the report_cancellation
        # callback (see _start_task).
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


class AsyncToSync(Generic[_P, _R]):
    """A sync callable that runs an async function and waits for its result.

    Called from code that ``sync_to_async`` is running, the coroutine runs on
    that caller's event loop. Otherwise it runs in a new event loop on another
    thread (closed when the call returns), or on the shared loop of an
    enclosing ``AsyncSingleThreadContext``. Meanwhile the calling thread runs
    the thread-sensitive sync code the coroutine sends back to it, so sync
    code keeps to one thread however deeply the calls nest.
    """

    # The CurrentThreadExecutor of the innermost sync frame that is waiting
    # in async_to_sync, seen by the coroutines it runs (``current``).
    executors: Local = Local()

    # The same, by event loop, for code that lost the context (such as a task
    # created with a fresh one).
    loop_thread_executors: ClassVar[
        dict[asyncio.AbstractEventLoop, CurrentThreadExecutor]
    ] = {}

    async_single_thread_context: contextvars.ContextVar[AsyncSingleThreadContext] = (
        contextvars.ContextVar("async_single_thread_context")
    )

    # Each AsyncSingleThreadContext's one-thread executor.
    context_to_thread_executor: ClassVar[
        weakref.WeakKeyDictionary[AsyncSingleThreadContext, ThreadPoolExecutor]
    ] = weakref.WeakKeyDictionary()

    def __init__(
        self,
        awaitable: Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]],
        force_new_loop: bool = False,
    ) -> None:
        if not callable(awaitable) or not _is_async_callable(awaitable):
            # Many awaitable-returning callables aren't coroutine functions
            # (functools.partial of one, say), so this can only be a hint.
            warnings.warn(
                "async_to_sync was passed a non-async-marked callable", stacklevel=2
            )
        self.awaitable = awaitable
        owner = getattr(awaitable, "__self__", _MISSING)
        if owner is not _MISSING:
            self.__self__ = owner
        self.force_new_loop = force_new_loop

    def __call__(self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        __traceback_hide__ = True  # noqa: F841
        main_loop = None if self.force_new_loop else _caller_loop()
        if _get_running_loop() is not None:
            raise RuntimeError(
                "You cannot use AsyncToSync in the same thread as an async event "
                "loop - just await the async function directly."
            )
        if not callable(self.awaitable):
            raise TypeError(
                f"async_to_sync needs an async function, not {self.awaitable!r}"
            )

        _adopt_local_data()  # before executors.current replaces foreign data
        old_executor = _current_thread_executor()
        current_executor = CurrentThreadExecutor(old_executor)
        self.executors.current = current_executor
        context = [contextvars.copy_context()]
        task_context = getattr(SyncToAsync.threadlocal, "task_context", None)
        shared = None
        entered = [None]  # the call is counted into ``shared`` until popped
        waiting = True
        try:
            if main_loop is None:
                single = self.async_single_thread_context.get(None)
                if single is not None:
                    shared = single._enter_call()
            if shared is not None:
                main_loop = shared.loop
                if shared.token is not _affinity.token:
                    # The loop's thread holds another thread's affinity (see
                    # asgiref.local): hand this thread's Local data to it, and
                    # take back what the coroutine leaves (in the finally).
                    context[0].run(_adopt_local_data, shared.token)
            # On a loop that is already running, the coroutine's report is
            # what ends the wait; a fresh loop is waited for until it has
            # closed.
            call_result: _Outcome[_R] = _Outcome(
                None if main_loop is None else current_executor._finish
            )
            target = self.awaitable(*args, **kwargs)
            hook = _trace_hook
            if hook is not None:
                target = hook("async_to_sync", self.awaitable, target, None)
            awaitable = self.main_wrap(
                call_result, sys.exc_info(), task_context, context, target
            )
            if main_loop is None:
                self._run_in_fresh_loop(awaitable, current_executor, context[0], target)
            else:
                if shared is not None:
                    awaitable = _registered(awaitable, current_executor)
                try:
                    # Created in the caller's context, the task starts with a
                    # copy of it, so main_wrap finds nothing to merge one by
                    # one.
                    _call_soon_threadsafe(
                        main_loop,
                        context[0].run,
                        _start_task,
                        main_loop,
                        awaitable,
                        call_result,
                    )
                    # A loop that closes with the call's task unfinished (or
                    # not yet created) never reports; waiting on would block
                    # this thread, and the executor it belongs to, for good.
                    reported = current_executor._run_until_finished(main_loop.is_closed)
                except BaseException:
                    # Interrupted (Ctrl-C), or the loop has closed: what the
                    # coroutine sends this thread now fails instead of waiting
                    # for good, and a shared loop keeps the call counted in
                    # until the coroutine reports (or the loop ends).
                    waiting = False
                    current_executor._finish()
                    if shared is not None:
                        call_result.on_report(functools.partial(shared.leave, entered))
                    raise
                if not reported:
                    call_result.fail_unreported(
                        RuntimeError(
                            "The event loop running the coroutine passed to "
                            "async_to_sync closed before the coroutine finished"
                        )
                    )
        finally:
            if shared is not None and waiting:
                shared.leave(entered)
            # What the coroutine's thread left is this thread's again.
            if main_loop is None:
                _restore_context_from_a_loop_thread(context[0])
            else:
                _restore_context(context[0])
            self.executors.current = old_executor
        return call_result.result()

    @staticmethod
    def _run_in_fresh_loop(
        awaitable: Coroutine[Any, Any, None],
        executor: CurrentThreadExecutor,
        context: contextvars.Context,
        target: object = None,
    ) -> None:
        """Run ``awaitable`` (which awaits ``target``) in a new event loop on a
        loop thread, running the work it sends back to this thread until that
        loop has closed."""
        finished: _Outcome[None] = _Outcome(executor._finish)
        token = _affinity.token
        # Taken by the loop thread to run the job, or by this thread, when it
        # stops waiting, to withdraw a job that has not started.
        unclaimed = [None]

        def run_loop() -> Callable[[], object]:
            if not _take(unclaimed):
                return _nothing  # withdrawn
            own_token = _affinity.token
            _affinity.token = token
            try:
                # Started in the caller's context, the task needs no context
                # variables copied into it one by one.
                context.run(_run_in_fresh_loop, _registered(awaitable, executor))
            except BaseException as exc:
                return functools.partial(finished.set_exception, exc)
            finally:
                _affinity.token = own_token
            return functools.partial(finished.set_result, None)

        try:
            _loop_threads.run(run_loop)
            executor._run_until_finished()
        except BaseException:
            if _take(unclaimed):
                # Refused (the interpreter is exiting), or interrupted before
                # the job started: neither coroutine will run, and neither is
                # to warn that it was never awaited.
                awaitable.close()
                if inspect.iscoroutine(target):
                    target.close()
            else:
                # Interrupted (Ctrl-C) while the coroutine runs: it runs on
                # (interpreter exit waits for it), and what it sends this
                # thread now fails instead of waiting for good.
                executor._finish()
            raise
        finished.result()

    def __get__(self, parent: Any, objtype: Any) -> Callable[_P, _R]:
        """Bind like a method: ``instance.attribute(...)`` passes ``instance``."""
        bound = functools.partial(self.__call__, parent)
        return functools.update_wrapper(bound, self.awaitable)  # type: ignore[return-value]

    async def main_wrap(
        self,
        call_result: _Outcome[_R],
        exc_info: OptExcInfo,
        task_context: list[asyncio.Task[Any]] | None,
        context: list[contextvars.Context],
        awaitable: Coroutine[Any, Any, _R] | Awaitable[_R],
    ) -> None:
        """Await ``awaitable`` in the caller's context; put its outcome in
        ``call_result`` and the context it leaves in ``context[0]``."""
        __traceback_hide__ = True  # noqa: F841
        _merge_context(context[0])
        task = asyncio.current_task()
        if task is not None and task_context is not None:
            task_context.append(task)
        try:
            if exc_info[1] is not None:
                try:
                    raise exc_info[1]
                except BaseException:
                    result = await awaitable
            else:
                result = await awaitable
        except BaseException as exc:
            failure: BaseException | None = exc
        else:
            failure = None
        if task is not None and task_context is not None:
            task_context.remove(task)
        # Reporting wakes the caller, which then reads context[0]: set it first.
        context[0] = contextvars.copy_context()
        if failure is None:
            call_result.set_result(result)
        else:
            call_result.set_exception(failure)


def _caller_loop() -> asyncio.AbstractEventLoop | None:
    """The loop whose sync_to_async call this thread is running, if any.

    A loop inherited through fork() belongs to the parent process, and a
    closed one (its caller gave up on this sync code, and the loop is gone)
    can never run the coroutine: as upstream, the call then goes where a call
    from a plain sync thread would. A loop that is only idle (between
    ``run_until_complete`` calls) is kept: the call completes once the loop
    runs again, and fails if the loop closes first.
    """
    state = SyncToAsync.threadlocal.__dict__
    loop = state.get("main_event_loop")
    if loop is None or state.get("main_event_loop_pid") != _pid or loop.is_closed():
        return None
    return loop


# -- Functions ----------------------------------------------------------------------


@overload
def async_to_sync(
    *,
    force_new_loop: bool = False,
) -> Callable[
    [Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]]],
    Callable[_P, _R],
]: ...


@overload
def async_to_sync(
    awaitable: Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]],
    *,
    force_new_loop: bool = False,
) -> Callable[_P, _R]: ...


def async_to_sync(
    awaitable: Callable[_P, Coroutine[Any, Any, _R]]
    | Callable[_P, Awaitable[_R]]
    | None = None,
    *,
    force_new_loop: bool = False,
) -> (
    Callable[
        [Callable[_P, Coroutine[Any, Any, _R]] | Callable[_P, Awaitable[_R]]],
        Callable[_P, _R],
    ]
    | Callable[_P, _R]
):
    """Wrap an async function so that sync code can call it (see AsyncToSync).

    Usable directly, ``async_to_sync(func)``, or as a decorator, with or
    without arguments.
    """
    if awaitable is None:
        return lambda func: AsyncToSync(func, force_new_loop=force_new_loop)
    return AsyncToSync(awaitable, force_new_loop=force_new_loop)


@overload
def sync_to_async(
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]: ...


@overload
def sync_to_async(
    func: Callable[_P, _R],
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[_P, Coroutine[Any, Any, _R]]: ...


def sync_to_async(
    func: Callable[_P, _R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> (
    Callable[[Callable[_P, _R]], Callable[_P, Coroutine[Any, Any, _R]]]
    | Callable[_P, Coroutine[Any, Any, _R]]
):
    """Wrap a sync function so that async code can await it (see SyncToAsync).

    Usable directly, ``sync_to_async(func)``, or as a decorator, with or
    without arguments.
    """
    # Positional arguments: passing them by keyword costs a wrapper built
    # inline a fifth of its price.
    if func is None:
        return lambda f: SyncToAsync(f, thread_sensitive, executor, context)
    return SyncToAsync(func, thread_sensitive, executor, context)


# -- fork() ---------------------------------------------------------------------------

_default_single_thread_executor = SyncToAsync.single_thread_executor


def _reset_after_fork() -> None:
    """Give the child process fresh threads: none of the parent's survived."""
    global _default_single_thread_executor, _open_shared_loops_lock, _pid
    _pid = os.getpid()
    if sys.version_info < (3, 12):  # pragma: no branch - measured on 3.11
        _last_loop.ref = _no_loop
    if SyncToAsync.single_thread_executor is _default_single_thread_executor:
        _default_single_thread_executor = _one_thread_pool()
        SyncToAsync.single_thread_executor = _default_single_thread_executor
    for context in list(SyncToAsync.context_to_thread_executor):
        if context._executor is None:
            SyncToAsync.context_to_thread_executor.pop(context, None)
    AsyncToSync.loop_thread_executors.clear()
    _waiting_on_loop.clear()
    AsyncToSync.context_to_thread_executor.clear()
    _open_shared_loops_lock = threading.Lock()
    _open_shared_loops.clear()  # the parent's: not the child's to close
    _loop_threads.forget()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_reset_after_fork)
