from __future__ import annotations

from demo_app import views
from django.urls import path

handler500 = "demo_app.views.server_error"

urlpatterns = [
    path("sync/hello/", views.sync_hello),
    path("async/hello/", views.async_hello),
    path("sync/boom/", views.sync_boom),
    path("async/boom/", views.async_boom),
    path("async/boom-in-thread/", views.async_boom_in_thread),
    path("sync/caught/", views.sync_catches_async_error),
    path("async/nested/", views.async_nested_threads),
    path("sync/notes/", views.sync_create_note),
    path("async/notes/", views.async_create_note),
    path("async/notes/atomic/", views.async_atomic_notes),
    path("async/notes/<str:token>/", views.async_read_note),
    path("session/sync/", views.sync_session_bump),
    path("session/async/", views.async_session_bump),
    path("auth/login/", views.async_login),
    path("auth/logout/", views.sync_logout),
    path("auth/whoami/async/", views.async_whoami),
    path("auth/whoami/sync/", views.sync_whoami),
    path("stream/sync/", views.stream_from_sync_iterator),
    path("stream/async/", views.stream_from_async_iterator),
    path("stream/endless/", views.stream_until_disconnect),
    path("stream/state/", views.stream_state),
    path("broadcast/", views.sync_broadcast),
]
