"""A deadline for a block of asyncio code; deprecated in favour of ``asyncio.timeout``."""

import asyncio
import warnings
from types import TracebackType
from typing import Any, Optional, TypeVar

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = ["Any", "Optional", "TracebackType", "asyncio", "timeout", "warnings"]

_Self = TypeVar("_Self", bound="_Deadline")


class _Deadline:
    """`timeout` without its deprecation warnings, for asgiref's own use
    (``asyncio.timeout`` is missing on Python 3.10)."""

    def __init__(
        self, timeout: float | None, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop() if loop is None else loop
        self._task: asyncio.Task[object] | None = None
        self._cancelled = False
        self._cancel_handler: asyncio.Handle | None = None
        self._cancel_at: float | None = None
        self._cancelling = 0  # the task's pending cancellations on entry (3.11+)

    def __enter__(self: _Self) -> _Self:
        return self._do_enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._do_exit(exc_type)

    async def __aenter__(self: _Self) -> _Self:
        return self._do_enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._do_exit(exc_type)

    @property
    def expired(self) -> bool:
        """Whether the deadline passed and cancelled the block."""
        return self._cancelled

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or ``None`` if unset."""
        if self._cancel_at is None:
            return None
        return max(self._cancel_at - self._loop.time(), 0.0)

    def _do_enter(self: _Self) -> _Self:
        if self._timeout is None:
            return self
        self._task = asyncio.current_task(self._loop)
        if self._task is None:
            raise RuntimeError("Timeout context manager should be used inside a task")
        # Tasks count cancellation requests from Python 3.11 on; on 3.10,
        # only some test runners' backported tasks do.
        cancelling = getattr(self._task, "cancelling", None)
        if cancelling is not None:  # pragma: no branch - measured on 3.11
            self._cancelling = cancelling()
        if self._timeout <= 0:
            self._loop.call_soon(self._cancel_task)
            return self
        self._cancel_at = self._loop.time() + self._timeout
        self._cancel_handler = self._loop.call_at(self._cancel_at, self._cancel_task)
        return self

    def _do_exit(self, exc_type: type[BaseException] | None) -> None:
        task = self._task
        self._task = None
        if self._cancel_handler is not None:
            self._cancel_handler.cancel()
            self._cancel_handler = None
        if not self._cancelled:
            return
        # Withdraw our own cancellation request, even when the block swallowed
        # it, so the task is not left "cancelling"; if someone else's remains,
        # let it propagate.
        uncancel = getattr(task, "uncancel", None)
        if uncancel is not None and uncancel() > self._cancelling:
            return
        if exc_type is asyncio.CancelledError:
            raise TimeoutError

    def _cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._cancelled = True


class timeout(_Deadline):
    """Cancel the enclosed block after ``timeout`` seconds and raise ``TimeoutError``.

    Usable as ``with timeout(...)`` or ``async with timeout(...)`` inside a
    running task; ``timeout=None`` disables the deadline. Once the block has
    run, ``expired`` tells whether the deadline cut it short and
    ``remaining`` how many seconds were left (``None`` without a deadline).

    Deprecated: use ``asyncio.timeout()`` (Python 3.11+) instead.
    """

    def __init__(
        self, timeout: float | None, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        warnings.warn(
            "asgiref.timeout.timeout is deprecated. Use asyncio.timeout() instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        if loop is not None:
            warnings.warn(
                "The loop argument to timeout() is deprecated.",
                DeprecationWarning,
                stacklevel=2,
            )
        super().__init__(timeout, loop)
