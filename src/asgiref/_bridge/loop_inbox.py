"""Handing a callback to an event loop from another thread.

A worker thread hands its outcome back as a callback for the loop to run.
``loop.call_soon_threadsafe()`` does more work for that than a crossing needs:
it copies the context into a new Handle and sends a byte down the loop's
self-pipe, and the loop then reads the pipe in a Python loop until ``recv()``
raises ``BlockingIOError``. On Linux a stock selector loop gets an inbox
instead: a deque of callbacks and an eventfd, registered once with
``add_reader()``. Handing a callback over is then one write, and collecting
it one read.

Guarantees:

- ``call_soon_threadsafe(loop, callback, *args)`` behaves as
  ``loop.call_soon_threadsafe(callback, *args)`` does for a crossing: the
  loop runs the callback soon, in its own thread, in the order posted; a
  callback that raises is reported to the loop's exception handler and the
  others still run; once the loop is closed it raises ``RuntimeError``.
- A loop whose ``call_soon_threadsafe`` is replaced, on its class or on
  itself, is always called through it, so that whatever hooks it sees every
  callback.
- Nothing here keeps a loop alive, and an inbox closes its eventfd when its
  loop is collected.

Relies on: ``os.eventfd`` (``_compat.HAS_EVENTFD``, Linux; elsewhere every
callback goes through ``call_soon_threadsafe``); a loop running a reader's
callback on its own thread; ``deque.append`` and ``popleft`` being atomic,
on free-threaded builds too.

State: ``inboxes`` maps ``id(loop)`` to the loop's inbox, weakly: the loop
alone keeps its inbox alive, through the reader registered with it, until it
closes. An entry goes with its inbox, before the loop's id can be reused; a
thread posting to a loop holds the loop. Any thread reads it; entries are
added on the loop's own thread and removed by the garbage collector.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import weakref
from asyncio.selector_events import BaseSelectorEventLoop as _SelectorLoop
from collections import deque
from collections.abc import Callable
from typing import Any

from .._compat import HAS_EVENTFD
from .hooks import known_originals, plain_loop_method
from .loop_threads import LoopThreadEventLoop

inboxes: dict[int, weakref.ref[LoopInbox]] = {}


class LoopInbox:
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
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            # Queued twice: a pass that an exception cut short left this run
            # queued, and the next pass queued it again. The first run took
            # the signal, and with it every callback posted before it.
            return
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


def open_inbox(loop: asyncio.AbstractEventLoop) -> None:
    """Give ``loop`` an inbox if it is a stock selector loop and there is
    eventfd; on the loop's thread.

    Any other loop is asked again on its next crossing, which costs less than
    recording the answer (a finalizer per loop). That includes
    ``async_to_sync``'s fresh loops: one runs a single call, and opening and
    closing an inbox for it would cost more than the inbox saves.
    """
    if not HAS_EVENTFD:
        return
    loop_type = type(loop)
    if (
        not issubclass(loop_type, _SelectorLoop)
        or loop_type is LoopThreadEventLoop
        or not plain_loop_method(loop, "call_soon_threadsafe")
    ):
        return
    try:
        inbox = LoopInbox(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        # The reader's handle keeps the context it is registered in for as
        # long as the loop lives: an empty one holds nothing alive.
        contextvars.Context().run(loop.add_reader, inbox._fd, inbox.run, loop)
    except (OSError, NotImplementedError):
        return  # out of descriptors, or a loop that takes no readers
    key = id(loop)
    inboxes[key] = weakref.ref(inbox, functools.partial(_forget_inbox, key))


def _forget_inbox(key: int, _: weakref.ref[LoopInbox]) -> None:
    inboxes.pop(key, None)


def call_soon_threadsafe(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any
) -> None:
    """``loop.call_soon_threadsafe(callback, *args)``, through the loop's
    inbox while it has one and the method is not replaced."""
    inbox_ref = inboxes.get(id(loop))
    inbox = None if inbox_ref is None else inbox_ref()
    if inbox is not None and (
        # plain_loop_method()'s first test inline (an inbox's loop has a
        # __dict__): saving the function call matters on this path.
        (
            id(type(loop).call_soon_threadsafe) in known_originals
            and "call_soon_threadsafe" not in loop.__dict__
        )
        or plain_loop_method(loop, "call_soon_threadsafe")
    ):
        inbox.post(loop, callback, args)
    else:
        loop.call_soon_threadsafe(callback, *args)
