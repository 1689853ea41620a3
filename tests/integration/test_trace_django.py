"""``asgire.trace.TraceMiddleware`` around Django's own ASGI handler.

Django opens a ``ThreadSensitiveContext`` per request and crosses several
times per request (signals, the view, closing the response): each crossing
must be counted for the request that made it, even with requests running
concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from asgire.trace import Crossing, TraceMiddleware
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator

pytestmark = pytest.mark.integration

SERVER_TIMING = re.compile(
    rb'asgire-crossings;desc="\d+", asgire-queued;dur=\d+\.\d{3}, '
    rb"asgire-run;dur=\d+\.\d{3}"
)


def sync_view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse("sync")


def load_greeting() -> str:
    return "hello"


async def async_view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(await sync_to_async(load_greeting)())  # async-view-crossing


def _line_of(marker: str) -> str:
    lines = Path(__file__).read_text().splitlines()
    (number,) = [n for n, ln in enumerate(lines, 1) if ln.endswith(f"# {marker}")]
    return f"{__file__}:{number}"


def _name(func: Any) -> str:
    return f"{func.__module__}.{func.__qualname__}"


@pytest.fixture
def application(django_in_process: Path) -> Iterator[Any]:
    """Django's ASGI handler, with no middleware and only the two views
    above, wrapped in the tracing middleware."""
    from django.core.handlers.asgi import ASGIHandler
    from django.test import override_settings
    from django.urls import path

    urls = ModuleType("trace_urls")
    urls.urlpatterns = [path("sync/", sync_view), path("async/", async_view)]
    with override_settings(MIDDLEWARE=[], ROOT_URLCONF=urls):
        yield TraceMiddleware(ASGIHandler(), server_timing=True)


async def _get(application: Any, path: str) -> tuple[dict[str, Any], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=15)
    body = await communicator.receive_output(timeout=15)
    await communicator.wait(timeout=15)
    return start, body["body"]


def _recorded(caplog: pytest.LogCaptureFixture) -> dict[str, tuple[Crossing, ...]]:
    """Each logged request's crossings, by its log line's request part."""
    return {
        record.getMessage().split(":")[0]: getattr(record, "trace_recording").crossings  # noqa: B009
        for record in caplog.records
        if record.name == "asgire.trace"
    }


async def test_each_django_request_gets_its_own_crossings(
    application: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asgire.trace")
    (sync_start, sync_body), (async_start, async_body) = await asyncio.gather(
        _get(application, "/sync/"), _get(application, "/async/")
    )
    assert sync_start["status"] == async_start["status"] == 200
    assert sync_body == b"sync"
    assert async_body == b"hello"
    for start in (sync_start, async_start):
        (value,) = [v for h, v in start["headers"] if h == b"server-timing"]
        assert SERVER_TIMING.fullmatch(value), value

    recorded = _recorded(caplog)
    assert set(recorded) == {"GET /sync/", "GET /async/"}
    sync_functions = {c.function for c in recorded["GET /sync/"]}
    async_functions = {c.function for c in recorded["GET /async/"]}
    assert _name(sync_view) in sync_functions
    assert _name(load_greeting) not in sync_functions
    assert _name(load_greeting) in async_functions
    assert _name(sync_view) not in async_functions
    (view_crossing,) = [
        c for c in recorded["GET /sync/"] if c.function == _name(sync_view)
    ]
    # Django makes that crossing, so the call site is Django's.
    assert "/django/" in view_crossing.call_site
    assert view_crossing.thread_sensitive is True
    (greeting,) = [
        c for c in recorded["GET /async/"] if c.function == _name(load_greeting)
    ]
    assert greeting.call_site == _line_of("async-view-crossing")
