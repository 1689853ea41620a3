"""The one event loop an ``AsyncSingleThreadContext`` runs every
``async_to_sync`` call of its block in.

Guarantees: the loop starts with the block's first call, on the block's
one-thread executor, and runs until the block exits (or is garbage
collected); then it closes as ``asyncio.run`` would close it (see
``fresh_loop.wind_down``). Its thread holds, for good, the affinity tag of
the thread that started it, so that ``Local`` data is shared with that
thread; callers from other threads hand theirs over (see
``asgiref.sync.AsyncToSync``). The loop has an inbox, where there is one
(``loop_inbox``), since every call in the block posts to it.

Relies on: ``asyncio.events.new_event_loop()`` making what ``asyncio.run``
would; the executor running one job at a time on one thread.

State: each ``SharedLoop`` belongs to its context; ``pid`` tells a forked
child that the loop is its parent's, and to start its own.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from ..local import _affinity
from . import fork
from .fresh_loop import wind_down
from .loop_inbox import open_inbox


class SharedLoop:
    """A block's loop, started on ``executor`` with affinity tag ``tag``."""

    def __init__(self, executor: ThreadPoolExecutor, tag: object) -> None:
        ready: Future[tuple[asyncio.AbstractEventLoop, int]] = Future()
        self.pid = fork.pid
        self.tag = tag  # the affinity its thread holds for good
        self.finished = executor.submit(self._serve, ready, tag)
        self.loop, self.thread_id = ready.result()

    @staticmethod
    def _serve(
        ready: Future[tuple[asyncio.AbstractEventLoop, int]], tag: object
    ) -> None:
        _affinity.tag = tag
        loop = asyncio.events.new_event_loop()  # what asyncio.run would call
        asyncio.set_event_loop(loop)
        open_inbox(loop)  # every call in the block posts to this loop
        ready.set_result((loop, threading.get_ident()))
        try:
            loop.run_forever()
            loop.run_until_complete(wind_down())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self) -> None:
        """Stop and close the loop; waits for that unless called on its thread."""
        with contextlib.suppress(RuntimeError):  # raised when already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.get_ident() != self.thread_id:
            self.finished.result()
