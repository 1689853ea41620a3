"""``Local``: a namespace whose attributes are local to a thread or an async task.

How the storage works
---------------------
Every default (non thread-critical) ``Local`` in the process keeps its data in
one shared context variable, ``_STATE``. Its value is an immutable snapshot:
``(owner, {local: {attribute: value}})``. Reading an attribute is one context
variable lookup plus two dict lookups, and needs no lock: a write builds a new
snapshot (copy on write) and sets it, so a reader only ever sees a whole one.

Keeping every ``Local`` in one variable makes crossing the sync/async boundary
cheap: ``asgiref.sync`` copies the caller's context to the thread that runs the
work, and whatever the number of ``Local`` objects, there is one value to carry.

Why a snapshot has an owner
---------------------------
In sync code a ``Local`` must behave like ``threading.local``. Context
variables are not thread-local on their own: on Python 3.14 a new thread may
start with a copy of its parent's context (``sys.flags.thread_inherit_context``,
the default on free-threaded builds), and ``contextvars.copy_context()`` can be
handed to any thread explicitly. So each snapshot records the *affinity token*
of the thread that wrote it, and is visible only to a thread that currently
holds the same token. Every thread has a token of its own; ``asgiref.sync``
lends the caller's token to a thread while that thread runs work on the
caller's behalf (``adopt_affinity``), which is exactly when data must be shared
across threads. A thread that merely inherited a context never holds the
token, so it starts empty.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, final

__all__ = ["Local"]

_object_setattr = object.__setattr__
_get_running_loop = asyncio._get_running_loop


class _Affinity(threading.local):
    """Per-thread affinity token; ``threading.local`` runs ``__init__`` per thread."""

    token: object

    def __init__(self) -> None:
        self.token = object()


_affinity = _Affinity()


def current_affinity() -> object:
    """Return the token that the running thread currently holds."""
    return _affinity.token


def adopt_affinity(token: object) -> object:
    """Make the running thread hold ``token``; return the token it held before.

    Used by ``asgiref.sync`` around work it runs on another thread on behalf of
    the thread that owns ``token``. Restore with ``adopt_affinity(previous)``.
    """
    previous = _affinity.token
    _affinity.token = token
    return previous


_Snapshot = tuple[object, dict["_DefaultLocal", dict[str, Any]]]
_STATE: contextvars.ContextVar[_Snapshot] = contextvars.ContextVar("asgiref.local")


@final
class Local:
    """A namespace for data local to the current thread or async task.

    - In sync code (no running event loop) data is local to the thread, but
      it is shared with the code that ``async_to_sync`` and ``sync_to_async``
      run on this thread's behalf, in either direction.
    - In async code it follows context variable rules: a task sees what it
      set and what was set before it was created, and nothing its sibling
      tasks set.
    - ``Local(thread_critical=True)`` keeps data strictly per thread, like
      ``threading.local``, and per task within an event loop thread. Use it
      for objects that must never leave their thread, such as database
      connections.

    ``Local`` is safe to use from many threads at once. It cannot be
    subclassed; ``Local()`` returns a ``_DefaultLocal`` or, with
    ``thread_critical=True``, a ``_ThreadCriticalLocal``.
    """

    __slots__ = ()

    def __new__(cls, thread_critical: bool = False) -> Local:
        if cls is not Local:
            raise TypeError("asgiref.local.Local cannot be subclassed")
        implementation = _ThreadCriticalLocal if thread_critical else _DefaultLocal
        return object.__new__(implementation)

    def __init__(self, thread_critical: bool = False) -> None:
        pass

    # Declared for type checkers, so that arbitrary attributes are allowed;
    # the subclasses define the behaviour.
    def __getattr__(self, key: str) -> Any: ...

    def __setattr__(self, key: str, value: Any) -> None: ...

    def __delattr__(self, key: str) -> None: ...


def _missing(local: object, key: str) -> AttributeError:
    return AttributeError(f"{local!r} object has no attribute {key!r}")


def _refuse_reserved(key: str) -> None:
    if key == "_data":
        raise AttributeError("Cannot set attribute '_data' on Local")


class _DefaultLocal(Local):  # ty: ignore[subclass-of-final-class]
    """``Local(thread_critical=False)``: storage in the shared ``_STATE`` variable."""

    __slots__ = ()

    def __getattr__(self, key: str) -> Any:
        snapshot = _STATE.get(None)
        if snapshot is not None and snapshot[0] is _affinity.token:
            values = snapshot[1].get(self)
            if values is not None and key in values:
                return values[key]
        raise _missing(self, key)

    def _value(self, key: str, default: Any = None) -> Any:
        """The attribute's value, or ``default``: ``getattr`` without raising."""
        snapshot = _STATE.get(None)
        if snapshot is not None and snapshot[0] is _affinity.token:
            values = snapshot[1].get(self)
            if values is not None:
                return values.get(key, default)
        return default

    def _own_values(self) -> tuple[dict[_DefaultLocal, dict[str, Any]], dict[str, Any]]:
        """Copies of the visible snapshot's maps, ready to be changed and stored."""
        snapshot = _STATE.get(None)
        if snapshot is None or snapshot[0] is not _affinity.token:
            return {}, {}
        locals_ = dict(snapshot[1])
        return locals_, dict(locals_.get(self, ()))

    def __setattr__(self, key: str, value: Any) -> None:
        _refuse_reserved(key)
        locals_, values = self._own_values()
        values[key] = value
        locals_[self] = values
        _STATE.set((_affinity.token, locals_))

    def __delattr__(self, key: str) -> None:
        locals_, values = self._own_values()
        if key not in values:
            raise _missing(self, key)
        del values[key]
        if values:
            locals_[self] = values
        else:
            del locals_[self]
        _STATE.set((_affinity.token, locals_))


class _ThreadStorage(threading.local):
    """What a thread-critical ``Local`` holds in one thread."""

    def __init__(self) -> None:
        # Used while no event loop runs in this thread.
        self.values: dict[str, Any] = {}
        # Used while an event loop runs in this thread: there the data is also
        # task-local. The variable is per thread, so even a context copied
        # into another thread never reaches these values.
        self.task_values: contextvars.ContextVar[dict[str, Any]] = (
            contextvars.ContextVar("asgiref.local.thread_critical")
        )


class _ThreadCriticalLocal(Local):  # ty: ignore[subclass-of-final-class]
    """``Local(thread_critical=True)``: never shared between threads."""

    __slots__ = ("_thread",)
    _thread: _ThreadStorage

    def __init__(self, thread_critical: bool = False) -> None:
        _object_setattr(self, "_thread", _ThreadStorage())

    def __getattr__(self, key: str) -> Any:
        thread = self._thread
        if _get_running_loop() is None:
            try:
                return thread.values[key]
            except KeyError:
                raise _missing(self, key) from None
        values = thread.task_values.get(None)
        if values is not None and key in values:
            return values[key]
        raise _missing(self, key)

    def __setattr__(self, key: str, value: Any) -> None:
        _refuse_reserved(key)
        thread = self._thread
        if _get_running_loop() is None:
            thread.values[key] = value
            return
        values = dict(thread.task_values.get(None) or ())
        values[key] = value
        thread.task_values.set(values)

    def __delattr__(self, key: str) -> None:
        thread = self._thread
        if _get_running_loop() is None:
            try:
                del thread.values[key]
            except KeyError:
                raise _missing(self, key) from None
            return
        values = thread.task_values.get(None)
        if values is None or key not in values:
            raise _missing(self, key)
        values = dict(values)
        del values[key]
        thread.task_values.set(values)
