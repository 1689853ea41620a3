"""Drive an ASGI application from a test, one message at a time."""

import asyncio
import contextlib
import contextvars
import time
from typing import Any

from .compatibility import guarantee_single_callable
from .timeout import _Deadline

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = [
    "ApplicationCommunicator",
    "asyncio",
    "contextvars",
    "guarantee_single_callable",
    "time",
]


class ApplicationCommunicator:
    """Run an ASGI application under test and exchange messages with it.

    The application is started on first use, as its own task in a fresh, empty
    ``contextvars`` context, just as a server would run it. Messages go in
    with `send_input` and come out with `receive_output`; whenever the
    application has died, the next call re-raises its exception.
    """

    def __init__(self, application: Any, scope: Any) -> None:
        self._future: asyncio.Task[Any] | None = None
        self.application = guarantee_single_callable(application)
        self.scope = scope
        # Created on first use, so no event loop is needed at construction.
        self._input_queue: asyncio.Queue[Any] | None = None
        self._output_queue: asyncio.Queue[Any] | None = None

    @property
    def input_queue(self) -> "asyncio.Queue[Any]":
        """Messages waiting for the application's ``receive()``."""
        if self._input_queue is None:
            self._input_queue = asyncio.Queue()
        return self._input_queue

    @property
    def output_queue(self) -> "asyncio.Queue[Any]":
        """Messages the application has passed to ``send()``."""
        if self._output_queue is None:
            self._output_queue = asyncio.Queue()
        return self._output_queue

    @property
    def future(self) -> "asyncio.Task[Any]":
        """The application's task, started on first access."""
        if self._future is None:
            # An empty context, so context variables set by the test do not leak
            # into the application (a server starts it with a clean slate too).
            self._future = contextvars.Context().run(
                asyncio.create_task,
                self.application(
                    self.scope, self.input_queue.get, self.output_queue.put
                ),
            )
        return self._future

    async def wait(self, timeout: float | None = 1) -> None:
        """Wait up to ``timeout`` seconds for the application to finish by itself.

        ``timeout=None`` waits without a limit. The application's exception, if
        it raised one, is re-raised. If it is still running when the time is
        up, it is cancelled (and its own cancellation is not reported).
        """
        # Cancelling this task while it awaits the application's task cancels
        # the application too, so on timeout there is nothing left to stop.
        async with _Deadline(timeout):
            with contextlib.suppress(asyncio.CancelledError):
                await self.future

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application if it is running; if it has finished and
        ``exceptions`` is true, re-raise any exception it ended with."""
        future = self._future
        if future is None:
            return
        if not future.done():
            future.cancel()
        elif exceptions:
            future.result()

    def __del__(self) -> None:
        # With the event loop already closed there is nothing left to cancel.
        with contextlib.suppress(RuntimeError):
            self.stop(exceptions=False)

    async def send_input(self, message: Any) -> None:
        """Give one message to the application's ``receive()``."""
        if self.future.done():
            self.future.result()
        await self.input_queue.put(message)

    async def receive_output(self, timeout: float | None = 1) -> Any:
        """Return the next message the application sends, waiting up to ``timeout``.

        ``timeout=None`` waits without a limit. On timeout, if the application
        has died its exception is raised; otherwise it is cancelled and
        ``TimeoutError`` is raised. Either way the calling task's cancellation
        state is left as it was.
        """
        future = self.future
        if future.done():
            future.result()
        try:
            async with _Deadline(timeout):
                return await self.output_queue.get()
        except TimeoutError:
            if future.done():
                future.result()
            else:
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
            raise

    async def receive_nothing(
        self, timeout: float = 0.1, interval: float = 0.01
    ) -> bool:
        """Whether the application sends nothing for ``timeout`` seconds.

        The output queue is polled every ``interval`` seconds, and ``False`` is
        returned as soon as a message is waiting in it (the message stays there).
        """
        if self.future.done():
            self.future.result()
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.output_queue.empty():
                return False
            await asyncio.sleep(interval)
        return self.output_queue.empty()
