from __future__ import annotations

from django.urls import path

from pg_site import views

urlpatterns = [
    path("query/", views.query),
    path("collect/", views.collect),
    path("request-threads/", views.request_threads),
]
