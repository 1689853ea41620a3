"""Middleware in each of Django's three flavours.

Each one appends to ``request.trail`` where it ran (on the event loop or in a
worker thread) and to the ``X-Trail-Out`` response header on the way out, and
the sync ones note their thread: the views echo all of it, so a test sees from
the response body how Django's adapters moved the request between threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from asgiref.local import Local
from asgiref.sync import iscoroutinefunction, markcoroutinefunction

# Set on the way in by the outer middleware from the X-Token request header and
# read back by the views: concurrent requests must each see only their own.
request_local = Local()


def where() -> str:
    """'loop' when called on an event loop's thread, else 'thread'."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "thread"
    return "loop"


def _mark_out(response: HttpResponseBase, name: str) -> None:
    previous = response.get("X-Trail-Out")
    response["X-Trail-Out"] = f"{previous},{name}" if previous else name


def _note_sync_thread(request: HttpRequest) -> None:
    threads = getattr(request, "sync_threads", set())
    threads.add(threading.get_ident())
    request.sync_threads = threads


class SyncOuter:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.trail = [f"sync-outer:{where()}"]
        _note_sync_thread(request)
        request_local.outer = request.headers.get("X-Token", "-")
        response = self.get_response(request)
        _mark_out(response, "sync-outer")
        return response


class AsyncMiddle:
    sync_capable = False
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]
    ) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.trail.append(f"async-middle:{where()}")
        request_local.middle = request.headers.get("X-Token", "-")
        response = await self.get_response(request)
        _mark_out(response, "async-middle")
        return response


@sync_and_async_middleware
def hybrid(get_response: Callable[..., object]) -> Callable[..., object]:
    if iscoroutinefunction(get_response):

        async def async_hybrid(request: HttpRequest) -> HttpResponseBase:
            request.trail.append(f"hybrid-async:{where()}")
            response = await get_response(request)
            _mark_out(response, "hybrid-async")
            return response

        return async_hybrid

    def sync_hybrid(request: HttpRequest) -> HttpResponseBase:
        request.trail.append(f"hybrid-sync:{where()}")
        _note_sync_thread(request)
        response = get_response(request)
        _mark_out(response, "hybrid-sync")
        return response

    return sync_hybrid


class SyncInner:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.trail.append(f"sync-inner:{where()}")
        _note_sync_thread(request)
        response = self.get_response(request)
        _mark_out(response, "sync-inner")
        return response
