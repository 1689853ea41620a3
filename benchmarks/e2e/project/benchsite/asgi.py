from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

application = get_asgi_application()

if os.environ.get("BENCH_TRACE") == "1":
    from asgire.trace import TraceMiddleware

    application = TraceMiddleware(application)
