"""HTTP goes to Django, websockets to the Channels consumers."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from demo_app import consumers  # noqa: E402
from django.urls import path  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": AuthMiddlewareStack(
            URLRouter(
                [
                    path("ws/json/", consumers.JsonEcho.as_asgi()),
                    path("ws/async/", consumers.AsyncEcho.as_asgi()),
                    path(
                        "ws/notify/<int:user_id>/",
                        consumers.Notifications.as_asgi(),
                    ),
                ]
            )
        ),
    }
)
