"""What outside code can hook into a crossing, and how a crossing tells
whether it has.

Guarantees:

- ``trace_hook``: while it is set, every crossing calls it once, on the
  calling thread, as ``hook(kind, func, target, thread_sensitive)``, where
  ``target`` is what the crossing is about to run (``func`` itself, a
  ``thread_handler`` override, or the awaitable ``func`` returned), and runs
  the stand-in it returns instead. When it is None a crossing pays one read.
- ``is_original`` and ``plain_loop_method`` answer True only for a method
  that is still the one its module or extension class defines, on the class
  and on the instance, whether a replacement was installed before this
  module was imported or after. A crossing takes a shortcut past a method
  only when they say so; otherwise it calls the method, as upstream does,
  so that tools that replace it (to record, time or trace work) see every
  call.

Relies on: a function keeps the path of the source file it was compiled
from in ``co_filename`` (a replacement or wrapper, wrapt's or one made with
``functools.wraps``, has its own); the classes of extension modules are
flagged immutable (``_compat.IMMUTABLE_TYPE_FLAG``), so that their methods
cannot be replaced in place.

State: ``trace_hook`` is set and cleared by ``asgire.trace`` under its own
lock, and read by any thread. ``known_originals`` only grows, from any
thread (a dict item assignment is atomic, on free-threaded builds too); the
methods in it survive fork(), so it is never reset. The hottest callers
make the first test of ``is_original`` and ``plain_loop_method`` inline (the
method is a known original; for a loop, the instance holds no replacement)
and call them only when it fails.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
from collections.abc import Callable
from types import FunctionType
from typing import Any, Literal

from .._compat import IMMUTABLE_TYPE_FLAG

CrossingKind = Literal["sync_to_async", "async_to_sync"]
trace_hook: Callable[[CrossingKind, Any, Any, bool | None], Any] | None = None

# id -> method, for the originals seen so far; holding them keeps ids unique.
known_originals: dict[int, object] = {}
_BASE_EVENTS_FILE = asyncio.base_events.__file__


def is_original(method: object, module_file: str | None) -> bool:
    """Whether ``method`` is the function ``module_file`` defines, unreplaced."""
    if id(method) in known_originals:
        return True
    if type(method) is not FunctionType or method.__code__.co_filename != module_file:
        return False
    known_originals[id(method)] = method
    return True


def plain_loop_method(loop: asyncio.AbstractEventLoop, name: str) -> bool:
    """Whether ``loop``'s method ``name`` is its loop class's own, unreplaced:
    asyncio's, or that of an extension loop class (uvloop's), which cannot be
    replaced in place."""
    loop_type = type(loop)
    method = getattr(loop_type, name)
    # The known originals inline: this runs on every crossing.
    if id(method) not in known_originals and not is_original(method, _BASE_EVENTS_FILE):
        # The class it comes from: every loop class has one, AbstractEventLoop.
        owner = next(k for k in loop_type.__mro__ if name in vars(k))
        if vars(owner)[name] is not method or not owner.__flags__ & IMMUTABLE_TYPE_FLAG:
            return False
        known_originals[id(method)] = method
    return name not in getattr(loop, "__dict__", ())
