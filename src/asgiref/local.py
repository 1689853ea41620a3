"""``Local``: a namespace whose attributes are local to a thread or an async task.

How the storage works
---------------------
Every default (non thread-critical) ``Local`` in the process keeps its data in
one shared context variable, ``_STATE``. Its value is an immutable snapshot:
``(owner, {(local, attribute): value})``. Reading an attribute is one context
variable lookup plus one dict lookup, and needs no lock: a write copies the
dict, changes the copy and sets a new snapshot, so a reader only ever sees a
whole one. The dict is flat, rather than one dict per ``Local``, so that a
write copies one small dict instead of two.

Keeping every ``Local`` in one variable makes crossing the sync/async boundary
cheap: a crossing (``asgiref.sync``) hands the caller's context to the thread
that runs the work, and whatever the number of ``Local`` objects, there is one value to carry.

Why a snapshot has an owner
---------------------------
In sync code a ``Local`` must behave like ``threading.local``. Context
variables are not thread-local on their own: on Python 3.14 a new thread may
start with a copy of its parent's context (``sys.flags.thread_inherit_context``,
the default on free-threaded builds), and ``contextvars.copy_context()`` can be
handed to any thread explicitly. So each snapshot records the *affinity tag*
of the thread that wrote it, and is visible only to a thread that currently
holds the same tag. Every thread has a tag of its own; a crossing
(``asgiref._bridge.sync_call``, ``fresh_loop``, ``shared_loop``) lends the
caller's tag to a thread while that thread runs work on the caller's behalf
(``_affinity``), which is exactly when data must be shared
across threads. A thread that merely inherited a context never holds the
tag, so it starts empty; only if it hands that context to ``sync_to_async``
or ``async_to_sync`` are the values it carries re-tagged for it, as upstream
asgiref re-homes the storage a crossing carries. The one thread that serves
callers from several threads at once, an ``AsyncSingleThreadContext``'s loop
thread, keeps the tag of the thread that started it; a call from another
thread re-tags its snapshot for the loop thread on the way in and back on the
way out.

Guarantees: in sync code a default ``Local`` is per thread, as
``threading.local``, and shared with the work a crossing runs for that
thread; in async code it follows context variables; ``thread_critical=True``
keeps data per thread, never shared. A reader never sees half a write.

Relies on: context variables (an immutable snapshot needs no lock);
``threading.local`` for the affinity tag and for thread-critical storage;
the running loop (``_compat.get_running_loop_or_none``).

State: ``_STATE`` (one context variable for every default ``Local``) and
``_affinity`` (each thread's tag, swapped by a crossing only on the thread it
belongs to); nothing to reset after fork, since both are per thread or per
context.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex, final

from ._compat import get_running_loop_or_none

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = ["Any", "Local", "asyncio", "contextvars", "final", "threading"]

_object_setattr = object.__setattr__
_running_loop_or_none = get_running_loop_or_none


class _Affinity(threading.local):
    """Per-thread affinity tag; ``threading.local`` runs ``__init__`` per thread."""

    tag: object

    def __init__(self) -> None:
        self.tag = object()


_affinity = _Affinity()


# asgiref.sync (and its _bridge modules) read and swap ``_affinity.tag`` directly
# around the work they run on a thread on behalf of another one.


_Snapshot = tuple[object, dict[tuple["_DefaultLocal", str], Any]]
_STATE: contextvars.ContextVar[_Snapshot] = contextvars.ContextVar("asgiref.local")
_MISSING: Any = object()


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
        if thread_critical:
            return _ThreadCriticalLocal.__new__(_ThreadCriticalLocal)
        return object.__new__(_DefaultLocal)

    def __init__(self, thread_critical: bool = False) -> None:
        pass

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # Its data belongs to the threads and tasks of this process; copied
        # without it, the copy could not even be loaded (see __new__).
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    if TYPE_CHECKING:
        # Arbitrary attributes, for type checkers; the subclasses implement
        # them (at run time a __getattr__ here would catch their misses).
        def __getattr__(self, key: str) -> Any: ...

        def __setattr__(self, key: str, value: Any) -> None: ...

        def __delattr__(self, key: str) -> None: ...


def _reserved(key: str) -> AttributeError:
    return AttributeError(f"Cannot set attribute {key!r} on Local")


def _missing(local: object, key: str) -> AttributeError:
    return AttributeError(f"{local!r} object has no attribute {key!r}")


# Both Local implementations override __getattribute__ rather than
# __getattr__: a __getattr__ hook runs only after the normal lookup has failed,
# and on Python < 3.12 that failure builds an AttributeError on every access.
_object_getattribute = object.__getattribute__


class _DefaultLocal(Local):  # ty: ignore[subclass-of-final-class]
    """``Local(thread_critical=False)``: storage in the shared ``_STATE`` variable."""

    __slots__ = ("__weakref__",)

    def __getattribute__(self, key: str) -> Any:
        snapshot = _STATE.get(None)
        if snapshot is not None and snapshot[0] is _affinity.tag:
            value = snapshot[1].get((self, key), _MISSING)
            if value is not _MISSING:
                return value
        try:
            return _object_getattribute(self, key)  # the class's own attributes
        except AttributeError:
            raise _missing(self, key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "_data":
            raise _reserved(key)
        tag = _affinity.tag
        snapshot = _STATE.get(None)
        if snapshot is None or snapshot[0] is not tag:
            _STATE.set((tag, {(self, key): value}))
            return
        values = snapshot[1].copy()
        values[self, key] = value
        _STATE.set((tag, values))

    def __delattr__(self, key: str) -> None:
        tag = _affinity.tag
        snapshot = _STATE.get(None)
        if snapshot is None or snapshot[0] is not tag or (self, key) not in snapshot[1]:
            raise _missing(self, key)
        values = snapshot[1].copy()
        del values[self, key]
        _STATE.set((tag, values))


def _peek(local: Local, key: str, default: Any = None) -> Any:
    """``getattr(local, key, default)`` for a default (not thread-critical)
    ``Local``, without raising and catching inside."""
    snapshot = _STATE.get(None)
    if snapshot is not None and snapshot[0] is _affinity.tag:
        return snapshot[1].get((local, key), default)
    return default


_local_getattribute = threading.local.__getattribute__
_local_setattr = threading.local.__setattr__
_local_delattr = threading.local.__delattr__
_TASK_VALUES = "\0asgiref task values"  # not an identifier: no user attribute
# The name of every such per-thread variable (asgiref._bridge.context
# recognises them by this very object).
_THREAD_CRITICAL_VARIABLE = "asgiref.local.thread_critical"


class _ThreadCriticalLocal(Local, threading.local):  # ty: ignore[subclass-of-final-class]
    """``Local(thread_critical=True)``: never shared between threads.

    The instance is itself a ``threading.local``. With no event loop running
    in the thread its attributes are plain thread-local ones; under a loop
    they live in a context variable, so that tasks are kept apart too. That
    variable is created per thread, so a context copied into another thread
    never carries these values along.
    """

    def __new__(cls, thread_critical: bool = False) -> _ThreadCriticalLocal:
        return threading.local.__new__(cls)

    def __getattribute__(self, key: str) -> Any:
        if _running_loop_or_none() is None:
            return _local_getattribute(self, key)
        values = _task_values(self).get(None)
        if values is not None and key in values:
            return values[key]
        try:
            return _object_getattribute(self, key)
        except AttributeError:
            raise _missing(self, key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if _running_loop_or_none() is None:
            # A plain per-thread namespace, where "_data" is not reserved.
            _local_setattr(self, key, value)
            return
        if key == "_data":
            raise _reserved(key)
        variable = _task_values(self)
        values = dict(variable.get(None) or ())
        values[key] = value
        variable.set(values)

    def __delattr__(self, key: str) -> None:
        if _running_loop_or_none() is None:
            _local_delattr(self, key)
            return
        variable = _task_values(self)
        values = variable.get(None)
        if values is None or key not in values:
            raise _missing(self, key)
        values = dict(values)
        del values[key]
        variable.set(values)


def _task_values(
    local: _ThreadCriticalLocal,
) -> contextvars.ContextVar[dict[str, Any]]:
    """The running thread's context variable for ``local``'s task data."""
    thread_values = _local_getattribute(local, "__dict__")
    variable = thread_values.get(_TASK_VALUES)
    if variable is None:
        variable = contextvars.ContextVar(_THREAD_CRITICAL_VARIABLE)
        thread_values[_TASK_VALUES] = variable
    return variable
