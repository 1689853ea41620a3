"""The benchmark's views; run.py checks every response's body against these."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse

#: Users run.py creates: ids 1 to 5.
USERS = 5


def sync_query(request: HttpRequest) -> HttpResponse:
    """A sync view with one query."""
    name = User.objects.values_list("username", flat=True).get(pk=1)
    return HttpResponse(f"hello {name}")


async def async_orm(request: HttpRequest) -> HttpResponse:
    """An async view with five async ORM queries."""
    users = User.objects.values_list("username", flat=True)
    names = [await users.aget(pk=pk) for pk in range(1, USERS + 1)]
    return HttpResponse("hello " + " ".join(names))


async def async_plain(request: HttpRequest) -> HttpResponse:
    """An async view that touches no database."""
    return HttpResponse("hello async")
