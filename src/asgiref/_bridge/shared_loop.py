"""The one event loop an ``AsyncSingleThreadContext`` runs every
``async_to_sync`` call of its block in.

Guarantees:

- The loop starts with the block's first call, on the block's one-thread
  executor, in an empty context, and runs until the block exits, is garbage
  collected, or the interpreter exits (see ``at_exit``); then it closes as
  ``asyncio.run`` would close it (see ``fresh_loop.wind_down``).
- Closing waits for the calls still running in it, as upstream's executor
  shutdown does, and cancels only the tasks left over once they are done.
  Calls count themselves in and out under the block's lock, the one its
  exit takes: a call either gets in before the exit, which then waits for
  it, or finds the block exited. A call is counted out once, whoever comes
  first: its thread, or its coroutine's report when that thread stopped
  waiting.
- The loop's thread holds, for good, the affinity tag of the thread that
  started it, so that ``Local`` data is shared with that thread; callers
  from other threads hand theirs over (see ``asgiref.sync.AsyncToSync``).
  The loop has an inbox, where there is one (``loop_inbox``), since every
  call in the block posts to it.
- A ``KeyboardInterrupt`` or ``SystemExit`` that escapes the loop (raised
  by one of its tasks) ends it as it would end ``asyncio.run``: what is left
  is cleaned up as ``asyncio.run`` cleans up then, and the calls in it at
  that moment raise that exception (``leave`` hands it to them). With no
  call in it, the exception is kept (``undelivered``) for the block's next
  call or its exit to raise. The block's next call starts a new loop.
- A forked child neither closes nor waits for its parent's loops.

Relies on: ``asyncio.events.new_event_loop()`` making what ``asyncio.run``
would; the executor running one job at a time on one thread.

State: each ``SharedLoop`` belongs to its block, its counts guarded by the
block's lock. ``_open``, the loops not yet closed, and ``_exiting`` are
shared by all threads under ``_open_lock``; a forked child starts them
afresh.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib
import contextvars
import threading
import weakref
from collections.abc import MutableMapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from ..local import _affinity
from . import fork
from .fork import after_fork_in_child
from .fresh_loop import wind_down, wind_down_after_escape
from .loop_inbox import open_inbox
from .threads import claim

_open_lock = threading.Lock()
_open: set[SharedLoop] = set()
_exiting = False


class SharedLoop:
    """A block's loop; its thread holds the affinity tag ``tag``."""

    # Closes the loop when the block is dropped; set once the loop runs.
    finalizer: weakref.finalize[Any, Any]

    def __init__(self, lock: threading.Lock, tag: object) -> None:
        self.pid = fork.pid
        self.tag = tag
        self.lock = lock
        self.calls = 0
        self.closing = False
        self.ended = False  # the loop has closed, whoever closed it
        # What escaped the loop, ending it (see _serve); the part of it that
        # no call was in the loop to receive.
        self.escaped: BaseException | None = None
        self.undelivered: BaseException | None = None
        self._drained: threading.Event | None = None

    def start(self, executor: Executor) -> bool:
        """Start the loop on ``executor``; False at interpreter exit."""
        with _open_lock:
            if _exiting:
                return False
            _open.add(self)
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
        _affinity.tag = self.tag
        try:
            loop = asyncio.events.new_event_loop()  # what asyncio.run would call
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        asyncio.set_event_loop(loop)
        open_inbox(loop)
        ready.set_result((loop, threading.get_ident()))
        try:
            try:
                loop.run_forever()
            except BaseException as exc:
                # A task's KeyboardInterrupt or SystemExit: it goes to the
                # calls in the loop now (or to whoever comes next), as
                # asyncio.run would raise it to the one call it runs.
                with self.lock:
                    self.escaped = exc
                    if not self.calls:
                        self.undelivered = exc
                wind_down_after_escape(loop)
            else:
                loop.run_until_complete(wind_down())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            # Stopped from within (a coroutine stopped it, or an exception
            # escaped it): the calls left in it may never report.
            with self.lock:
                self.ended = True
                if self._drained is not None:
                    self._drained.set()

    def leave(self, entered: list[None]) -> BaseException | None:
        """Count a call out, once (``entered`` holds one element until then);
        return what escaped the loop while the call was in it, if anything."""
        if not claim(entered):
            return None
        with self.lock:
            self.calls -= 1
            if not self.calls and self._drained is not None:
                self._drained.set()
            return self.escaped

    def close(self) -> None:
        """Take no more calls, wait for those in flight, then stop and close
        the loop; waits for that unless called on the loop's thread."""
        if self.pid != fork.pid:
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
            self.loop.call_soon_threadsafe(self._stop)
        if threading.get_ident() != self.thread_id:
            self.finished.result()

    def _stop(self) -> None:
        # Once something has escaped the loop, the clean-up after it runs the
        # loop to its end: a stop would cut that short.
        if self.escaped is None:
            self.loop.stop()

    def _forget(self) -> None:
        with _open_lock:
            _open.discard(self)


class Block(Protocol):
    """What ``enter`` needs of an ``AsyncSingleThreadContext``: the lock its
    exit takes, whether it is still open (``token``), and its loop, which
    ``enter`` starts or replaces under that lock."""

    _lock: threading.Lock
    _shared_loop: SharedLoop | None

    @property
    def token(self) -> object: ...


def enter(
    block: Block, executors: MutableMapping[Any, ThreadPoolExecutor]
) -> SharedLoop | None:
    """Count an ``async_to_sync`` call into ``block``'s loop, started by the
    first one (or the first after an interrupt ended it) on the block's
    executor in ``executors``; None once the block has exited (or the
    interpreter is exiting): the call then runs as outside any block."""
    while True:
        with block._lock:
            if block.token is None:
                return None
            shared = block._shared_loop
            if (
                shared is None
                or shared.pid != fork.pid
                or shared.escaped is None
                or shared.ended
            ):
                return _enter_locked(block, shared, executors)
            ending = shared.finished
        # An interrupt is ending the loop: a new one can start once it has
        # (the block's thread runs one loop at a time).
        wait((ending,))


def _enter_locked(
    block: Block,
    shared: SharedLoop | None,
    executors: MutableMapping[Any, ThreadPoolExecutor],
) -> SharedLoop | None:
    """``enter``'s work, under the block's lock."""
    if (
        shared is not None
        and shared.ended
        and not shared.closing
        and shared.pid == fork.pid
    ):
        # Ended from within: whatever it left for no call, this one raises.
        shared.finalizer.detach()
        block._shared_loop = None
        undelivered, shared.undelivered = shared.undelivered, None
        if undelivered is not None:
            raise undelivered
        shared = None
    if shared is None or shared.pid != fork.pid:  # none yet, or the parent's
        executor = executors.get(block)
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=1)
            executors[block] = executor
        shared = SharedLoop(block._lock, _affinity.tag)
        if not shared.start(executor):
            return None
        block._shared_loop = shared
        # A context dropped without exiting still closes its loop.
        shared.finalizer = weakref.finalize(block, shared.close)
        shared.finalizer.atexit = False  # at_exit's job
    elif shared.closing:
        return None  # closed at interpreter exit
    shared.calls += 1
    return shared


def close_all_at_exit() -> None:
    """Refuse new loops, and close every loop still open (at interpreter exit)."""
    global _exiting
    with _open_lock:
        _exiting = True
        still_open = list(_open)
    for shared in still_open:
        with contextlib.suppress(Exception):  # the others must close all the same
            shared.close()


def _forget_the_parents_shared_loops() -> None:
    global _open_lock
    _open_lock = threading.Lock()
    _open.clear()  # the parent's: not the child's to close


after_fork_in_child(_forget_the_parents_shared_loops)
