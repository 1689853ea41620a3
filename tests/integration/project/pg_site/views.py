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
    """asgire's request-thread counts (None under upstream asgiref), and the
    most requests served at once so far. ``?idle_timeout=`` changes that
    setting first."""
    from pg_site.asgi import in_flight

    try:
        from asgire import request_threads
    except ImportError:
        status = None
    else:
        if "idle_timeout" in request.GET:
            request_threads.enable(
                max_threads=request_threads.status().max_threads,
                idle_timeout=float(request.GET["idle_timeout"]),
            )
        status = dataclasses.asdict(request_threads.status())
    return JsonResponse({"status": status, "peak_in_flight": in_flight.peak})
