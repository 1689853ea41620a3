"""The ASGI application; ``DEMO_REQUEST_THREADS`` (``max_threads:idle_timeout``,
either part may be empty) turns reusable request threads on, as a project's
own asgi.py would with one line. ``in_flight`` counts the requests being
served, for the tests to compare with the threads used."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pg_site.settings")

from django.core.asgi import get_asgi_application

if "DEMO_REQUEST_THREADS" in os.environ:
    from asgire import request_threads

    max_threads, _, idle_timeout = os.environ["DEMO_REQUEST_THREADS"].partition(":")
    request_threads.enable(
        max_threads=int(max_threads) if max_threads else None,
        idle_timeout=float(idle_timeout) if idle_timeout else 60.0,
    )


class InFlight:
    """The application, counting the requests it is serving and their peak."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.now = 0
        self.peak = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


application = in_flight = InFlight(get_asgi_application())
