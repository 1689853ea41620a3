"""The threads that run ``async_to_sync``'s fresh event loops, kept between calls.

Starting a thread is a large part of what an ``async_to_sync`` call from a
plain sync thread costs, and so is what a new selector event loop opens and
closes again: an epoll (or kqueue) descriptor, and a socket pair for its
self-pipe. So both are kept.

Guarantees:

- ``LoopThreads.run(job)`` runs ``job`` at once on an idle thread, or on a
  new daemon thread named ``asgire-loop-N``. It never waits for a thread to
  become free: a loop thread may be needed while all the others are busy
  (nested calls), and making it wait could deadlock, so the cache is
  unbounded. A thread idle for ``idle_timeout`` seconds ends.
- A job returns the callable that tells its caller it is done; the thread
  calls it only once it is back on the idle list, so that a caller making its
  next call at once finds the thread there instead of starting another.
- A busy thread never holds up interpreter exit by itself (the threads are
  daemons), and an idle one never does: ``close()`` refuses new jobs and
  waits for the running ones, which ``at_exit`` does at interpreter exit.
  A job handed to a thread that fails to start (or whose start was
  interrupted) is withdrawn, and not counted as running.
- Each thread keeps one selector and self-pipe (``LoopParts``) for all the
  loops it runs, made on first use and closed when the thread ends. Every
  loop is still new (``LoopThreadEventLoop``) and closed after its one run;
  only the descriptors underneath are reused. A byte a closed loop's
  self-pipe did not read merely wakes the next loop once.
- After fork() the child forgets the idle threads (they did not survive) and
  closes the parts they kept, except the forking thread's own, which may be
  in use.

Relies on: the loops of one thread running one after the other, never two at
once; the selector loop making and closing its self-pipe in two methods this
overrides (``_compat.KEPT_SELF_PIPE``; without it, loops come from
``asyncio.events.new_event_loop()`` as they are, see ``fresh_loop``).

State: ``LoopThreads``' idle list, counts of started and busy threads, and
set of kept parts are shared by all threads under its lock; each thread's
own parts are in a thread-local. ``loop_thread_cache`` is the process's one
cache, read as ``loop_threads.loop_thread_cache`` (so that a test may swap
it). Its threads begin in an empty context (see ``threads``).
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING

from .fork import after_fork_in_child
from .threads import claim, start_thread

# A job runs on a loop thread and returns what reports it done.
Job = Callable[[], Callable[[], object]]

# What a job handed over once interpreter exit has begun is refused with, as
# upstream's pools refuse new work then.
AFTER_SHUTDOWN = "cannot schedule new futures after interpreter shutdown"


class LoopThreads:
    """Idle threads kept for running ``async_to_sync``'s event loops."""

    idle_timeout = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Each idle thread waits on its own slot for its next job.
        self._idle: list[SimpleQueue[Job]] = []
        self._started = 0
        self._kept = threading.local()
        self._all_parts: set[LoopParts] = set()
        # Jobs handed out and still running, which interpreter exit waits for.
        self._busy = 0
        self._closed = False
        self._drained: threading.Event | None = None

    def run(self, job: Job) -> None:
        """Run ``job`` on an idle loop thread, or a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError(AFTER_SHUTDOWN)
            self._busy += 1
            if self._idle:
                self._idle.pop().put(job)
                return
            self._started += 1
            name = f"asgire-loop-{self._started}"
        # The job goes through the slot: the thread's arguments stay
        # referenced for as long as it lives, and must not keep the job's
        # coroutine and context alive.
        slot: SimpleQueue[Job] = SimpleQueue()
        slot.put(job)
        unclaimed = [None]
        thread = threading.Thread(
            target=self._work, args=(slot, unclaimed), name=name, daemon=True
        )
        try:
            start_thread(thread)
        except BaseException:
            # It failed to start, or this thread was interrupted (Ctrl-C)
            # while it started: unless it has taken the job already, it never
            # will, and the job is not counted as running.
            if claim(unclaimed):
                self._job_ended()
            raise

    def _job_ended(self, idle_slot: SimpleQueue[Job] | None = None) -> None:
        """Count a job as ended, and put its thread (its slot) on the idle list."""
        with self._lock:
            if idle_slot is not None:
                self._idle.append(idle_slot)
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

    def _work(self, slot: SimpleQueue[Job], unclaimed: list[None]) -> None:
        try:
            if not claim(unclaimed):
                return  # withdrawn by run(): its start was interrupted
            job = slot.get()
            while True:
                report_done = job()
                del job
                self._job_ended(slot)
                report_done()
                del report_done
                try:
                    job = slot.get(timeout=self.idle_timeout)
                except Empty:
                    with self._lock:
                        if slot in self._idle:
                            self._idle.remove(slot)
                            return
                    # Taken off the idle list just now: a job is on its way.
                    job = slot.get()
        finally:
            parts: LoopParts | None = getattr(self._kept, "parts", None)
            if parts is not None:
                with self._lock:
                    self._all_parts.discard(parts)
                parts.close()

    def loop_parts(self) -> LoopParts:
        """The calling loop thread's selector and self-pipe."""
        parts: LoopParts | None = getattr(self._kept, "parts", None)
        if parts is None:
            parts = self._kept.parts = LoopParts()
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


loop_thread_cache = LoopThreads()
after_fork_in_child(loop_thread_cache.forget)


class KeptSelector(selectors.DefaultSelector):
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


class LoopParts:
    """What a loop thread keeps from one event loop to the next."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.self_pipe = socket.socketpair()
        for sock in self.self_pipe:
            sock.setblocking(False)
        self.selector = KeptSelector(self.self_pipe[0].fileno())

    def close(self) -> None:
        self.selector.discard()
        for sock in self.self_pipe:
            sock.close()


class LoopThreadEventLoop(asyncio.SelectorEventLoop):
    """The stock selector event loop, on its loop thread's ``LoopParts``."""

    if TYPE_CHECKING:
        # The selector loop's internals used here, which typeshed leaves out.
        _internal_fds: int

        def _add_reader(self, fd: int, callback: Callable[[], None]) -> object: ...
        def _read_from_self(self) -> None: ...

    def __init__(self, parts: LoopParts) -> None:
        self._parts = parts
        super().__init__(parts.selector)

    # cpython-private: _make_self_pipe, _ssock, _csock, _internal_fds, _add_reader
    # cpython-private: _read_from_self
    def _make_self_pipe(self) -> None:
        self._ssock, self._csock = self._parts.self_pipe
        self._internal_fds += 1
        # Already registered by an earlier loop, this only swaps the handle.
        self._add_reader(self._parts.self_pipe[0].fileno(), self._read_from_self)

    # cpython-private: _close_self_pipe
    def _close_self_pipe(self) -> None:
        # Left registered for the next loop, without this loop's handle (it
        # would keep the closed loop alive).
        selector = self._parts.selector
        reader, _ = selector.get_key(selector.self_pipe_fd).data
        reader.cancel()
        selector.modify(selector.self_pipe_fd, selectors.EVENT_READ, (None, None))
        self._ssock = self._csock = None
        self._internal_fds -= 1
