from __future__ import annotations

import dataclasses
import gc
import threading

from django.db import connection
from django.http import HttpRequest, JsonResponse


def query(request: HttpRequest) -> JsonResponse:
    """One query: which server process answered it, on which thread; it
    takes ``?sleep=`` seconds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid() FROM pg_sleep(%s)",
            [float(request.GET.get("sleep", 0))],
        )
        (backend,) = cursor.fetchone()
    return JsonResponse({"backend": backend, "thread": threading.current_thread().name})


def collect(request: HttpRequest) -> JsonResponse:
    """A full garbage collection, to tell connections that are merely
    unreachable (waiting for the collector) from ones still in use."""
    return JsonResponse({"collected": gc.collect()})


def request_threads(request: HttpRequest) -> JsonResponse:
    """asgire's request-thread counts (none under upstream asgiref)."""
    try:
        from asgire.request_threads import status
    except ImportError:
        return JsonResponse({})
    return JsonResponse(dataclasses.asdict(status()))
