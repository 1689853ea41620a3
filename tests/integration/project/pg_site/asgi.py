"""The ASGI application; ``DEMO_REQUEST_THREADS`` (``max_threads:idle_timeout``,
either part may be empty) turns reusable request threads on, as a project's
own asgi.py would with one line."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pg_site.settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()

if "DEMO_REQUEST_THREADS" in os.environ:
    from asgire import request_threads

    max_threads, _, idle_timeout = os.environ["DEMO_REQUEST_THREADS"].partition(":")
    request_threads.enable(
        max_threads=int(max_threads) if max_threads else None,
        idle_timeout=float(idle_timeout) if idle_timeout else 60.0,
    )
