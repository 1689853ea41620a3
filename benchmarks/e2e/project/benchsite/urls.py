from __future__ import annotations

from django.urls import path

from benchsite import views

urlpatterns = [
    path("sync/", views.sync_query),
    path("async-orm/", views.async_orm),
    path("async/", views.async_plain),
]
