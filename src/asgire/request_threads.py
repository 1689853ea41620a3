"""Reusable request threads: persistent database connections under ASGI.

Django runs each ASGI request's sync code (views, middleware, the ORM) on a
thread started for that request and ended with it, so a database connection
kept open with ``CONN_MAX_AGE`` is never used again. With this switch on, a
request's thread comes from a cache of idle request threads and goes back to
it when the request ends, as WSGI servers reuse their worker threads: the
next request on that thread finds its connection. In ``asgi.py``::

    from asgire import request_threads

    request_threads.enable()  # before the server starts serving

Exactly what changes and what doesn't (one thread per concurrent request,
never shared; idle threads retire after ``idle_timeout`` seconds, which frees
their thread-critical ``Local`` data; ``max_threads`` makes requests wait for
a free thread) is in the README and in ``asgiref._bridge.request_threads``.
"""

from __future__ import annotations

from asgiref._bridge.request_threads import (
    DEFAULT_IDLE_TIMEOUT,
    Status,
    configure,
    status,
)

__all__ = ["DEFAULT_IDLE_TIMEOUT", "Status", "disable", "enable", "status"]


def enable(
    *, max_threads: int | None = None, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
) -> None:
    """Reuse request threads from now on.

    ``max_threads``: at most this many request threads, busy and idle
    together (None: as many as requests run at once, as without the switch).
    A request that needs a thread while that many are busy waits for one.
    ``idle_timeout``: seconds an idle thread waits for a request before it
    retires. Calling ``enable()`` again changes the settings.
    """
    configure(enabled=True, max_threads=max_threads, idle_timeout=idle_timeout)


def disable() -> None:
    """Back to a fresh thread per request: idle threads retire now, busy ones
    when their request ends. The settings are kept for the next ``enable()``."""
    current = status()
    configure(
        enabled=False,
        max_threads=current.max_threads,
        idle_timeout=current.idle_timeout,
    )
