"""See your ``sync_to_async`` and ``async_to_sync`` crossings.

While a :class:`Recording` is active, every crossing made in its context is
recorded as a :class:`Crossing`: which function, from which line, whether it
was thread-sensitive, how long it waited for its thread and how long it ran::

    from asgire import trace

    with trace.Recording() as recording:
        await handle_request()  # or any sync code
    print(recording.summary())
    trace.report(recording)  # the busiest call sites

A recording belongs to the context it was entered in (it lives in a context
variable), so concurrent requests each get their own, and crossings made by
code nested in the recorded code (sync code that ``sync_to_async`` runs,
coroutines that ``async_to_sync`` runs, tasks created there) count too.
Nested recordings each record the crossings made in them.

:class:`TraceMiddleware` records each HTTP request and WebSocket connection of
an ASGI application and logs a one-line summary of it.

While no recording is active anywhere, a crossing pays for one global
variable read and nothing else. Tracing never changes what a crossing does
(results, exceptions, context variables, threads, cancellation).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Literal, TextIO

import asgiref.sync as _sync

__all__ = [
    "Crossing",
    "Recording",
    "Summary",
    "TraceMiddleware",
    "format_report",
    "report",
]

# Spelled out rather than imported from asgiref.sync, so that this module
# still imports over upstream's asgiref and _install() can say what is wrong.
Kind = Literal["sync_to_async", "async_to_sync"]

#: Call site of a crossing whose coroutine a task runs directly
#: (``asyncio.create_task(sync_to_async(f)())``, ``asyncio.gather``...): where
#: that task was created is not known.
TASK_CALL_SITE = "<task>"

_clock = time.perf_counter


@dataclass(frozen=True, slots=True)
class Crossing:
    """One finished crossing."""

    kind: Kind
    #: Module and qualified name of the function that crossed.
    function: str
    #: ``"path/to/file.py:42"``: the first caller outside asgiref and this
    #: module, or :data:`TASK_CALL_SITE`.
    call_site: str
    #: The ``thread_sensitive`` flag of a ``sync_to_async`` call; None for
    #: ``async_to_sync``.
    thread_sensitive: bool | None
    #: Seconds from the call until the function started: waiting in the
    #: executor's queue (``sync_to_async``) or for the event loop to start the
    #: coroutine (``async_to_sync``).
    queued: float
    #: Seconds the function (or coroutine) took, from start to finish,
    #: crossings nested in it included.
    run: float
    #: Whether it ended with an exception (cancellation included).
    raised: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """Totals over some crossings."""

    crossings: int
    #: Seconds, summed over the crossings.
    queued: float
    run: float

    @classmethod
    def of(cls, crossings: Iterable[Crossing]) -> Summary:
        """The totals over ``crossings``."""
        count, queued, run = 0, 0.0, 0.0
        for crossing in crossings:
            count += 1
            queued += crossing.queued
            run += crossing.run
        return cls(count, queued, run)

    def __str__(self) -> str:
        noun = "crossing" if self.crossings == 1 else "crossings"
        return (
            f"{self.crossings} {noun}, {self.queued * 1000:.3f} ms queued, "
            f"{self.run * 1000:.3f} ms run"
        )


class Recording:
    """Records the crossings made in its context while it is entered.

    Enter it with ``with`` (in sync or async code); it can be entered once. A
    crossing is added when it finishes, on whichever thread that is, so one
    still running when the block exits is added later, and one cancelled
    before its function started is not added at all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._crossings: list[Crossing] = []
        self._token: contextvars.Token[tuple[Recording, ...]] | None = None
        self._used = False

    def __enter__(self) -> Recording:
        if self._used:
            raise RuntimeError("a Recording can be entered only once")
        self._used = True
        _install()
        self._token = _active.set((*_active.get(), self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        assert token is not None, "exited without being entered"
        try:
            _active.reset(token)
        finally:
            _uninstall()

    @property
    def crossings(self) -> tuple[Crossing, ...]:
        """The crossings recorded so far, in the order they finished."""
        with self._lock:
            return tuple(self._crossings)

    def summary(self) -> Summary:
        """Totals over :attr:`crossings`."""
        return Summary.of(self.crossings)

    def _add(self, crossing: Crossing) -> None:
        with self._lock:
            self._crossings.append(crossing)


# The recordings active in the current context, innermost last.
_active: contextvars.ContextVar[tuple[Recording, ...]] = contextvars.ContextVar(
    "asgire.trace", default=()
)

# asgiref.sync calls the hook while at least one recording is active anywhere.
_install_lock = threading.Lock()
_installed = 0


def _install() -> None:
    global _installed
    if not hasattr(_sync, "_trace_hook"):
        raise RuntimeError(
            "asgire.trace needs asgire's asgiref, but this asgiref was installed "
            "by another distribution; `python -m asgire info` shows how to fix it"
        )
    with _install_lock:
        _installed += 1
        _sync._trace_hook = _hook


def _uninstall() -> None:
    global _installed
    with _install_lock:
        _installed -= 1
        if not _installed:
            _sync._trace_hook = None


def _hook(kind: Kind, func: Any, target: Any, thread_sensitive: bool | None) -> Any:
    """What ``asgiref.sync`` calls for each crossing while tracing is on."""
    recordings = _active.get()
    if not recordings:
        return target
    started = _Started(
        recordings,
        kind,
        _function_name(func),
        _call_site(sys._getframe(1)),
        thread_sensitive,
    )
    if kind == "async_to_sync":
        return started.timed_awaitable(target)
    return functools.partial(started.timed_call, target)


@dataclass(slots=True)
class _Started:
    """A crossing from its call until it finishes and is added."""

    recordings: tuple[Recording, ...]
    kind: Kind
    function: str
    call_site: str
    thread_sensitive: bool | None
    called: float = field(default_factory=_clock)
    started: float = 0.0

    def timed_call(
        self, target: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        __traceback_hide__ = True  # noqa: F841
        with self:
            return target(*args, **kwargs)

    async def timed_awaitable(self, target: Awaitable[Any]) -> Any:
        __traceback_hide__ = True  # noqa: F841
        with self:
            return await target

    # Times the run: from entering to leaving, by return or by exception.
    def __enter__(self) -> None:
        self.started = _clock()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        crossing = Crossing(
            self.kind,
            self.function,
            self.call_site,
            self.thread_sensitive,
            self.started - self.called,
            _clock() - self.started,
            exc_type is not None,
        )
        for recording in self.recordings:
            recording._add(crossing)


def _function_name(func: Any) -> str:
    # A partial carries a name only when it was given its function's metadata,
    # as methods decorated with sync_to_async or async_to_sync are once bound.
    while isinstance(func, functools.partial) and "__qualname__" not in vars(func):
        func = func.func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if not isinstance(name, str):  # an instance with __call__
        func = type(func)
        name = func.__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else name


def _call_site(frame: FrameType | None) -> str:
    """Where the crossing that ``frame`` (in asgiref) serves was made: the
    first caller outside asgiref and this module."""
    # A crossing that is its task's own coroutine was started by the event
    # loop, and the frames beyond it are the loop's.
    task = asyncio.current_task() if _sync._get_running_loop() is not None else None
    root = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    while frame is not None and frame is not root and _is_internal(frame):
        frame = frame.f_back
    if frame is None or _is_internal(frame):
        return TASK_CALL_SITE
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _is_internal(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    return module == __name__ or module.partition(".")[0] == "asgiref"


# -- Reports ---------------------------------------------------------------------


def format_report(source: Recording | Iterable[Crossing], *, top: int = 10) -> str:
    """The totals, then the ``top`` busiest call sites by number of crossings
    and by time queued, as text.

    Crossings are grouped by call site, function, kind and thread-sensitivity;
    times are in milliseconds.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    crossings = source.crossings if isinstance(source, Recording) else tuple(source)
    groups: dict[tuple[str, str, Kind, bool | None], list[Crossing]] = {}
    for crossing in crossings:
        key = (
            crossing.call_site,
            crossing.function,
            crossing.kind,
            crossing.thread_sensitive,
        )
        groups.setdefault(key, []).append(crossing)
    rows = [(key, Summary.of(group)) for key, group in groups.items()]
    lines = [str(Summary.of(crossings))]
    here = os.getcwd()
    for title, order in (
        ("by crossings", lambda row: (-row[1].crossings, -row[1].queued)),
        ("by queued time", lambda row: (-row[1].queued, -row[1].crossings)),
    ):
        # sorted() is stable: ties keep the order the crossings first came in.
        shown = sorted(rows, key=order)[:top]
        sites = [_shorter_site(key[0], here) for key, _ in shown]
        width = max(map(len, [_SITE, *sites]))
        lines += [
            "",
            f"Top call sites {title}:",
            f"{_NUMBERS}  {_SITE:<{width}}  function",
        ]
        lines += [
            _row(key, summary, site.ljust(width))
            for (key, summary), site in zip(shown, sites, strict=True)
        ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _shorter_site(call_site: str, here: str) -> str:
    """``call_site`` relative to the directory ``here`` when its file is under
    it (the usual case: the project's own code), else as it is."""
    path, colon, line = call_site.rpartition(":")
    if not colon or not os.path.isabs(path):
        return call_site
    try:
        relative = os.path.relpath(path, here)
    except ValueError:  # another drive, on Windows
        return call_site
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return call_site
    return f"{relative}:{line}"


def report(
    source: Recording | Iterable[Crossing],
    *,
    top: int = 10,
    file: TextIO | None = None,
) -> None:
    """Print :func:`format_report` to ``file`` (default: standard output)."""
    print(format_report(source, top=top), end="", file=file)


_NUMBERS = f"{'crossings':>10} {'queued ms':>10} {'run ms':>10}"
_SITE = "call site"


def _row(key: tuple[str, str, Kind, bool | None], summary: Summary, site: str) -> str:
    _, function, kind, thread_sensitive = key
    how = kind if thread_sensitive is not False else f"{kind}, thread_sensitive=False"
    return (
        f"{summary.crossings:>10} {summary.queued * 1000:>10.3f} "
        f"{summary.run * 1000:>10.3f}  {site}  {function} ({how})"
    )


# -- ASGI middleware -------------------------------------------------------------

# Looser than asgiref.typing's TypedDict unions on purpose: any ASGI app
# (Django's handler, a plain function) must fit, and the middleware only
# reads a few keys.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TraceMiddleware:
    """Records each HTTP request and WebSocket connection of ``app``.

    When one ends, however it ends, a line like
    ``GET /path: 3 crossings, 0.120 ms queued, 4.200 ms run`` is logged at
    INFO on ``logger`` (default: the ``asgire.trace`` logger); the log record
    carries the :class:`Recording` as its ``trace_recording`` attribute.

    With ``server_timing=True`` an HTTP response gets a ``Server-Timing``
    header with the figures recorded by the time the response starts, times
    in milliseconds (crossings made later, while the body is sent, appear in
    the log line only)::

        Server-Timing: asgire-crossings;desc="3", asgire-queued;dur=0.120, asgire-run;dur=4.200

    Lifespan and other scope types pass through untouched. For Django, wrap
    the application in ``asgi.py``:
    ``application = TraceMiddleware(get_asgi_application())``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        server_timing: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.server_timing = server_timing
        self.logger = logger if logger is not None else logging.getLogger(__name__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        with Recording() as recording:
            if self.server_timing and kind == "http":
                send = _send_with_server_timing(send, recording)
            try:
                await self.app(scope, receive, send)
            finally:
                self.logger.info(
                    "%s %s: %s",
                    scope.get("method", "WEBSOCKET"),
                    scope.get("path", ""),
                    recording.summary(),
                    extra={"trace_recording": recording},
                )


def _send_with_server_timing(send: Send, recording: Recording) -> Send:
    async def send_with_header(message: Message) -> None:
        if message["type"] == "http.response.start":
            summary = recording.summary()
            value = (
                f'asgire-crossings;desc="{summary.crossings}", '
                f"asgire-queued;dur={summary.queued * 1000:.3f}, "
                f"asgire-run;dur={summary.run * 1000:.3f}"
            )
            # The application's message is copied, not changed.
            headers = [*message.get("headers", ()), (b"server-timing", value.encode())]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_header
