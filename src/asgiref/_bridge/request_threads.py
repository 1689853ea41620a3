"""Reusable request threads for ``ThreadSensitiveContext`` (opt-in).

Upstream gives each ``ThreadSensitiveContext`` a one-thread executor of its
own and shuts it down when the context exits. Django's ASGI handler wraps
every request in such a context, so each request runs its sync code on a new
thread that ends with the request, and whatever the request left in
thread-critical ``Local`` storage (Django's database connections) goes with
it: a persistent connection is never used twice.

This module is the alternative, switched on by ``configure(enabled=True)``
(users reach it through ``asgire.request_threads``): a cache of idle request
threads. A context takes its thread from the cache on its first
thread-sensitive call and gives it back on exit, so that the next request
finds the same thread, and the same thread-critical data, as a request under
WSGI finds its worker thread's. Switched off (the default), ``executor_for()``
returns None, and the context gets what upstream makes: a fresh one-thread
pool.

What it guarantees while switched on:

- A request thread serves one context at a time. It is lent only from the
  idle list, and goes back there only once the context holding it has exited
  and every call queued on it has run.
- ``max_threads`` (None: no limit) bounds the request threads that exist,
  lent and idle together. A context that needs one while all are lent waits:
  its calls queue (the event loop is not blocked) until a thread is given
  back, the first context to ask being served first. Contexts never share.
- An idle thread retires after ``idle_timeout`` seconds: it ends, which frees
  everything kept in its thread-local storage (thread-critical ``Local`` data
  included), then a full garbage collection runs, so that such data caught in
  reference cycles (Django's connection wrapper is one) is finalised then
  rather than at some unknown later collection. Nothing is closed
  explicitly. The most recently used idle thread is lent first, so that
  threads a burst left over reach their timeout.
- Request threads start in an empty context: nothing of the request that
  happened to start one is kept by the thread. (Each call runs in its own
  copy of its caller's context, as on any executor.)
- Idle threads never hold up interpreter exit: they are stdlib
  ``ThreadPoolExecutor`` workers, which the interpreter wakes and joins at
  exit like any other; the thread retiring them is a daemon.
- After ``fork()`` the child starts with an empty cache (the parent's threads
  do not exist there) and the parent's settings.
- A context that has exited, and thread-sensitive calls outside any context,
  are not affected.

What it relies on:

- ``ThreadPoolExecutor(max_workers=1)`` runs what is queued on it in order,
  on one thread, and ``shutdown()`` ends that thread once its queue is empty.
- ``asgiref.sync`` asks ``executor_for()`` for a context's executor; on the
  context's exit ``pool.retire`` waits, for a thread ``lent()`` from here,
  until the calls queued on it have run before calling ``give_back()``. An
  executor that is waiting for a thread (``_Lease``) is shut down instead;
  it gives its thread back itself.

State: the settings and the cache (``_cache``: idle, lent and waiting
threads, and the thread retiring idle ones), touched from any thread under
the cache's one lock; emptied after fork, the settings kept.
"""

from __future__ import annotations

import contextvars
import gc
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .fork import after_fork_in_child
from .threads import start_thread

_T = TypeVar("_T")

DEFAULT_IDLE_TIMEOUT = 60.0
THREAD_NAME = "asgire-request"


@dataclass(frozen=True)
class Status:
    """A snapshot of the request threads."""

    enabled: bool
    max_threads: int | None
    idle_timeout: float
    #: Threads held by a context now.
    busy: int
    #: Threads waiting to be lent.
    idle: int
    #: Contexts waiting for a thread (only ever with ``max_threads`` reached).
    waiting: int
    #: Threads started, and retired (ended and collected), in this process.
    started: int
    retired: int


def _check_settings(max_threads: object, idle_timeout: object) -> None:
    if max_threads is not None and (
        type(max_threads) is bool or not isinstance(max_threads, int)
    ):
        raise TypeError(f"max_threads must be an int or None, not {max_threads!r}")
    if max_threads is not None and max_threads < 1:
        raise ValueError(f"max_threads must be at least 1, not {max_threads!r}")
    if type(idle_timeout) is bool or not isinstance(idle_timeout, (int, float)):
        raise TypeError(f"idle_timeout must be a number, not {idle_timeout!r}")
    if not (0 < idle_timeout < math.inf):
        raise ValueError(
            f"idle_timeout must be a positive finite number of seconds, "
            f"not {idle_timeout!r}"
        )


class _RequestThreads:
    """The cache: idle, lent and waiting, guarded by one lock."""

    def __init__(self) -> None:
        self.enabled = False
        self.max_threads: int | None = None
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT
        self._reset()

    def _reset(self) -> None:
        """Empty the cache; the settings stay (also after fork, in the child)."""
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        # Idle threads with the time each was given back, oldest first.
        self._idle: deque[tuple[ThreadPoolExecutor, float]] = deque()
        # Weak: a context dropped without exiting must not keep its thread
        # (the pool's worker ends once the pool is collected), nor count
        # against max_threads.
        self._lent: weakref.WeakSet[ThreadPoolExecutor] = weakref.WeakSet()
        self._waiting: deque[_Lease] = deque()
        self._retiring: list[ThreadPoolExecutor] = []
        self._reaper: threading.Thread | None = None
        self._started = 0
        self._retired = 0

    # -- Settings ----------------------------------------------------------------

    def configure(
        self, *, enabled: bool, max_threads: int | None, idle_timeout: float
    ) -> None:
        _check_settings(max_threads, idle_timeout)
        with self._lock:
            self.enabled = enabled
            self.max_threads = max_threads
            self.idle_timeout = float(idle_timeout)
            if not enabled:
                while self._idle:
                    self._retire(self._idle.popleft()[0])
            served = self._serve_waiting()
            if self._reaper is not None:
                self._wakeup.notify()  # the timeout may have changed
        self._bind(served)

    def status(self) -> Status:
        with self._lock:
            return Status(
                enabled=self.enabled,
                max_threads=self.max_threads,
                idle_timeout=self.idle_timeout,
                busy=len(self._lent),
                idle=len(self._idle),
                waiting=len(self._waiting),
                started=self._started,
                retired=self._retired,
            )

    # -- Lending and giving back --------------------------------------------------

    def executor_for(self, live: bool) -> Executor | None:
        """The executor for a context's thread-sensitive calls, or None where
        the context gets a fresh thread of its own, as upstream gives it.

        ``live``: the context is entered. One that has exited (a task it
        created calls on afterwards) gets a fresh thread, never one of these:
        it would never give it back.
        """
        if not (live and self.enabled):
            return None
        with self._lock:
            served = self._serve_waiting()  # first come, first served
            taken = self._take()
            if taken is None:
                lease = _Lease()
                self._waiting.append(lease)
        self._bind(served)
        if taken is None:
            return lease
        pool, new = taken
        if new:
            _start_thread(pool)
        return pool

    def lent(self, executor: Executor) -> bool:
        """Whether ``executor`` is a request thread lent to a context."""
        return executor in self._lent

    def give_back(self, pool: ThreadPoolExecutor) -> None:
        """Take back a thread whose context has exited and whose queued calls
        have all run: it goes to a waiting context, waits for the next one,
        or retires."""
        with self._lock:
            served = []
            if pool in self._lent:
                self._lent.discard(pool)
                if self.enabled and self._has_room():
                    self._idle.append((pool, time.monotonic()))
                    served = self._serve_waiting()
                    if self._idle:
                        self._ensure_reaper(wake=False)
                else:  # switched off, or max_threads lowered
                    self._retire(pool)
            else:
                # Not lent from this cache: the process forked since.
                self._retire(pool)
        self._bind(served)

    def _has_room(self) -> bool:
        limit = self.max_threads
        return limit is None or len(self._idle) + len(self._lent) < limit

    def _take(self) -> tuple[ThreadPoolExecutor, bool] | None:
        """Lend the most recently used idle thread, or a new one where there
        is room (True: to be started); None if neither."""
        if self._idle:
            pool = self._idle.pop()[0]
            self._lent.add(pool)
            return pool, False
        if self.enabled and not self._has_room():
            return None  # switched off, waiting contexts get threads of their own
        self._started += 1
        pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{THREAD_NAME}-{self._started}"
        )
        self._lent.add(pool)
        return pool, True

    def _serve_waiting(self) -> list[tuple[_Lease, ThreadPoolExecutor, bool]]:
        """Threads for the waiting contexts, as far as they go."""
        served = []
        while self._waiting and (taken := self._take()) is not None:
            served.append((self._waiting.popleft(), *taken))
        return served

    @staticmethod
    def _bind(served: list[tuple[_Lease, ThreadPoolExecutor, bool]]) -> None:
        # Outside the lock: starting a thread takes a while.
        for lease, pool, new in served:
            if new:
                _start_thread(pool)
            lease._bind(pool)

    # -- Retiring ------------------------------------------------------------------

    def _retire(self, pool: ThreadPoolExecutor) -> None:
        """Let ``pool``'s thread end; the reaper joins it and collects."""
        pool.shutdown(wait=False)
        self._retiring.append(pool)
        self._ensure_reaper(wake=True)

    def _ensure_reaper(self, *, wake: bool) -> None:
        """Start the reaper if it is not running; ``wake`` it if it is (it
        sleeps until the oldest idle thread times out)."""
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap, name=f"{THREAD_NAME}-reaper", daemon=True
            )
            start_thread(self._reaper)
        elif wake:
            self._wakeup.notify()

    def _reap(self) -> None:
        """Retire idle threads as they time out; end when none is idle."""
        while True:
            with self._lock:
                ending, self._retiring = self._retiring, []
                now = time.monotonic()
                while self._idle and now - self._idle[0][1] >= self.idle_timeout:
                    pool = self._idle.popleft()[0]
                    pool.shutdown(wait=False)
                    ending.append(pool)
                if not ending:
                    if not self._idle:
                        self._reaper = None
                        return
                    self._wakeup.wait(self._idle[0][1] + self.idle_timeout - now)
                    continue
            for pool in ending:
                pool.shutdown(wait=True)  # joins a thread that is leaving
            # The threads' local storage is freed now; what it held in
            # reference cycles goes too.
            if gc.isenabled():
                gc.collect()
            with self._lock:
                self._retired += len(ending)


def _start_thread(pool: ThreadPoolExecutor) -> None:
    """Start ``pool``'s one thread now, in an empty context (see threads)."""
    contextvars.Context().run(pool.submit, int)


def _run_into(
    future: Future[Any],
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _Lease(Executor):
    """The executor of a context waiting for a request thread (all are lent
    and ``max_threads`` is reached): calls queue here until a thread is found
    for it, and then go to that thread, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._queued: list[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = []
        self._bound = threading.Event()
        self._closed = False

    def submit(  # type: ignore[override]
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> Future[_T]:
        with self._lock:
            if self._closed:
                # The thread may serve another context by now.
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is not None:
                return self._pool.submit(fn, *args, **kwargs)
            future: Future[_T] = Future()
            self._queued.append((future, fn, args, kwargs))
            return future

    def _bind(self, pool: ThreadPoolExecutor) -> None:
        with self._lock:
            self._pool = pool
            for entry in self._queued:
                pool.submit(_run_into, *entry)
            self._queued.clear()
        self._bound.set()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The context has exited: once a thread is found and has run every
        call queued here, give it back. Blocks (``pool.retire`` calls it
        from a thread of its own)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._bound.wait()
        pool = self._pool
        assert pool is not None
        try:
            pool.submit(int).result()
        except RuntimeError:
            return  # shut down (the interpreter is exiting): nothing to give
        _cache.give_back(pool)


_cache = _RequestThreads()

configure = _cache.configure
status = _cache.status
executor_for = _cache.executor_for
lent = _cache.lent
give_back = _cache.give_back

after_fork_in_child(_cache._reset)
