"""A base class for servers of connectionless protocols."""

import asyncio
import logging
import time
import traceback
from typing import Any

from .compatibility import guarantee_single_callable

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = [
    "StatelessServer",
    "asyncio",
    "guarantee_single_callable",
    "logger",
    "logging",
    "time",
    "traceback",
]

logger = logging.getLogger(__name__)


class _HandlerFinished(Exception):
    """Raised once `StatelessServer.handle` returns, to end `arun`."""


class StatelessServer:
    """Host ASGI application instances for a protocol without connections.

    Subclasses implement `handle` (the receive loop: for each incoming
    message, pick a ``scope_id`` naming the conversation it belongs to, get
    that conversation's queue from `get_or_create_application_instance` and
    put the message on it) and `application_send` (deliver what an
    application sends).

    Instances are created on demand and kept in ``application_instances``,
    keyed by ``scope_id``; beyond ``max_applications`` the least recently used
    one is cancelled to make room. Every ``application_checker_interval``
    seconds, finished instances are dropped and their exceptions passed to
    `application_exception`, which logs them.
    """

    application_checker_interval = 0.1

    def __init__(self, application: Any, max_applications: int = 1000) -> None:
        self.application = application
        self.max_applications = max_applications
        self.application_instances: dict[Any, dict[str, Any]] = {}

    # Main loop

    def run(self) -> None:
        """Run `arun` in a new event loop until it ends or Ctrl-C is pressed."""
        try:
            asyncio.run(self.arun())
        except KeyboardInterrupt:
            logger.info("Exiting due to Ctrl-C/interrupt")

    async def arun(self) -> None:
        """Run `handle` and the application checker until `handle` returns.

        An exception from either ends the server and propagates.
        """

        async def handle_then_finish() -> None:
            await self.handle()
            raise _HandlerFinished

        tasks = [
            asyncio.ensure_future(handle_then_finish()),
            asyncio.ensure_future(self.application_checker()),
        ]
        try:
            await asyncio.gather(*tasks)
        except _HandlerFinished:
            pass
        finally:
            # gather() leaves the other task running when one fails.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self) -> None:
        """Receive messages and route them to application instances."""
        raise NotImplementedError("You must implement handle()")

    async def application_send(self, scope: Any, message: Any) -> None:
        """Deliver a message an application instance sent for ``scope``."""
        raise NotImplementedError("You must implement application_send()")

    # Application instances

    def get_or_create_application_instance(
        self, scope_id: Any, scope: Any
    ) -> "asyncio.Queue[Any]":
        """Return the input queue of the instance for ``scope_id``.

        An instance is started with ``scope`` if there is none yet (``scope`` is
        ignored otherwise). Either way the instance counts as just used.
        """
        details = self.application_instances.get(scope_id)
        if details is not None:
            details["last_used"] = time.time()
            return details["input_queue"]
        while len(self.application_instances) > self.max_applications:
            self.delete_oldest_application_instance()
        input_queue: asyncio.Queue[Any] = asyncio.Queue()
        application = guarantee_single_callable(self.application)
        future = asyncio.ensure_future(
            application(
                scope=scope,
                receive=input_queue.get,
                send=lambda message: self.application_send(scope, message),
            )
        )
        self.application_instances[scope_id] = {
            "input_queue": input_queue,
            "future": future,
            "scope": scope,
            "last_used": time.time(),
        }
        return input_queue

    def delete_oldest_application_instance(self) -> None:
        """Stop and forget the least recently used application instance."""
        # min() keeps the first of equals, so ties go to the earliest created.
        oldest = min(
            self.application_instances,
            key=lambda scope_id: self.application_instances[scope_id]["last_used"],
        )
        self.delete_application_instance(oldest)

    def delete_application_instance(self, scope_id: Any) -> None:
        """Forget the instance for ``scope_id``, cancelling it if still running."""
        details = self.application_instances.pop(scope_id)
        if not details["future"].done():
            details["future"].cancel()

    async def application_checker(self) -> None:
        """Forever: drop finished instances, reporting those that raised."""
        while True:
            await asyncio.sleep(self.application_checker_interval)
            for scope_id, details in list(self.application_instances.items()):
                future = details["future"]
                if not future.done():
                    continue
                # A cancelled instance has no exception to report (and asking
                # for one would raise CancelledError here).
                exception = None if future.cancelled() else future.exception()
                if exception is not None:
                    await self.application_exception(exception, details)
                # application_exception() may have removed it already.
                self.application_instances.pop(scope_id, None)

    async def application_exception(
        self, exception: BaseException, application_details: dict[str, Any]
    ) -> None:
        """Called with the exception of each instance that died; logs it."""
        # To the root logger, as upstream: a logging configuration that
        # disables the loggers existing at the time (dictConfig's default)
        # would silence asgiref.server's, and with it every report.
        logging.error(
            "Exception inside application: %s\n%s%s",
            exception,
            "".join(traceback.format_tb(exception.__traceback__)),
            f"  {exception}",
        )
