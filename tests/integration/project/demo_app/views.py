"""Views covering what a Django site asks of asgiref.

Bodies are plain text built from request data and from where the code ran, so
the tests can predict every byte.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

from channels.layers import get_channel_layer
from django.contrib.auth import aauthenticate, alogin, logout
from django.db import transaction
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseNotFound,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt

from asgiref.sync import async_to_sync, sync_to_async
from demo_app.middleware import request_local, where
from demo_app.models import Note


def _describe(request: HttpRequest, view: str) -> HttpResponse:
    request.trail.append(f"{view}:{where()}")
    if view.startswith("view-sync"):
        request.sync_threads.add(threading.get_ident())
    body = (
        f"{view} trail={','.join(request.trail)}"
        f" local={request_local.outer}/{request_local.middle}"
        f" sync_threads={len(request.sync_threads)}\n"
    )
    return HttpResponse(body, content_type="text/plain")


def sync_hello(request: HttpRequest) -> HttpResponse:
    return _describe(request, "view-sync")


async def async_hello(request: HttpRequest) -> HttpResponse:
    return _describe(request, "view-async")


def sync_boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom-sync")


async def async_boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom-async")


def _raise_lookup_error() -> None:
    raise LookupError("boom-thread")


async def async_boom_in_thread(request: HttpRequest) -> HttpResponse:
    await sync_to_async(_raise_lookup_error)()
    return HttpResponse("unreachable\n")


async def _raise_value_error() -> None:
    await asyncio.sleep(0)
    raise ValueError("from-coroutine")


def sync_catches_async_error(request: HttpRequest) -> HttpResponse:
    try:
        async_to_sync(_raise_value_error)()
    except ValueError as exc:
        return HttpResponse(f"caught {exc!r} in {where()}\n", content_type="text/plain")
    return HttpResponse("nothing raised\n", status=500)


def _innermost() -> int:
    return threading.get_ident()


async def _middle() -> tuple[int, str]:
    inner = await sync_to_async(_innermost)()
    return inner, where()


def _outer() -> tuple[int, int, str, str]:
    inner, middle_where = async_to_sync(_middle)()
    return threading.get_ident(), inner, middle_where, where()


async def async_nested_threads(request: HttpRequest) -> HttpResponse:
    outer, inner, middle_where, outer_where = await sync_to_async(_outer)()
    body = (
        f"outer={outer_where} middle={middle_where}"
        f" inner_thread_is_outer_thread={inner == outer}"
        f" outer_off_loop_thread={outer != threading.get_ident()}\n"
    )
    return HttpResponse(body, content_type="text/plain")


def _create_note(token: str, text: str, via: str) -> Note:
    assert where() == "thread", "sync_to_async ran ORM code on the event loop"
    return Note.objects.create(token=token, text=text, via=via)


@csrf_exempt
def sync_create_note(request: HttpRequest) -> HttpResponse:
    note = _create_note(request.POST["token"], request.POST["text"], "sync-view")
    return HttpResponse(f"created {note.token} via {note.via}\n", status=201)


@csrf_exempt
async def async_create_note(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        prefix = request.GET["prefix"]
        tokens = [
            note.token
            async for note in Note.objects.filter(token__startswith=prefix).order_by(
                "token"
            )
        ]
        return HttpResponse("".join(f"{token}\n" for token in tokens))
    token, text, via = request.POST["token"], request.POST["text"], request.POST["via"]
    if via == "orm-async":
        note = await Note.objects.acreate(token=token, text=text, via=via)
    elif via == "sync-to-async":
        note = await sync_to_async(_create_note)(token, text, via)
    else:
        return HttpResponse(f"unknown via {via}\n", status=400)
    # Echo the request's own token from the context-local: under load every
    # request must still see its own value.
    return HttpResponse(
        f"created {note.token} via {note.via} local={request_local.outer}\n",
        status=201,
    )


def _create_pair(token: str, fail: bool) -> None:
    with transaction.atomic():
        Note.objects.create(token=f"{token}-a", text="pair", via="atomic")
        Note.objects.create(token=f"{token}-b", text="pair", via="atomic")
        if fail:
            raise ValueError("roll the pair back")


@csrf_exempt
async def async_atomic_notes(request: HttpRequest) -> HttpResponse:
    fail = request.POST.get("fail") == "1"
    try:
        await sync_to_async(_create_pair)(request.POST["token"], fail)
    except ValueError:
        return HttpResponse("rolled back\n")
    return HttpResponse("committed\n")


async def async_read_note(request: HttpRequest, token: str) -> HttpResponse:
    try:
        note = await Note.objects.aget(token=token)
    except Note.DoesNotExist:
        return HttpResponseNotFound(f"no note {token}\n")
    return HttpResponse(f"{note.token}:{note.text}:{note.via}\n")


def sync_session_bump(request: HttpRequest) -> HttpResponse:
    count = request.session.get("count", 0) + 1
    request.session["count"] = count
    return HttpResponse(f"count={count} by sync\n")


async def async_session_bump(request: HttpRequest) -> HttpResponse:
    count = await request.session.aget("count", 0) + 1
    await request.session.aset("count", count)
    return HttpResponse(f"count={count} by async\n")


@csrf_exempt
async def async_login(request: HttpRequest) -> HttpResponse:
    user = await aauthenticate(
        request, username=request.POST["username"], password=request.POST["password"]
    )
    if user is None:
        return HttpResponseForbidden("bad credentials\n")
    await alogin(request, user)
    return HttpResponse(f"logged in as {user.get_username()}\n")


@csrf_exempt
def sync_logout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("logged out\n")


async def async_whoami(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    return HttpResponse(f"async sees {user.get_username() or 'anonymous'}\n")


def sync_whoami(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"sync sees {request.user.get_username() or 'anonymous'}\n")


def stream_from_sync_iterator(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for index in range(50):
            yield f"sync chunk {index} {where()}\n".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def stream_from_async_iterator(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(50):
            await asyncio.sleep(0)
            yield f"async chunk {index} {where()}\n".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


# What happened to each endless stream, per server process.
stream_outcomes: dict[str, int] = {"started": 0, "finished": 0, "interrupted": 0}


async def stream_until_disconnect(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        stream_outcomes["started"] += 1
        finished = False
        try:
            # Bounded, so a missed disconnect shows up as "finished" rather
            # than as a stream that runs forever.
            for index in range(4000):
                yield b"%06d" % index + b"." * 1017 + b"\n"
                await asyncio.sleep(0.005)
            finished = True
        finally:
            stream_outcomes["finished" if finished else "interrupted"] += 1

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def stream_state(request: HttpRequest) -> JsonResponse:
    return JsonResponse(stream_outcomes)


@csrf_exempt
def sync_broadcast(request: HttpRequest) -> HttpResponse:
    layer = get_channel_layer()
    assert layer is not None
    async_to_sync(layer.group_send)(
        "broadcast", {"type": "broadcast.message", "text": request.POST["text"]}
    )
    return HttpResponse("sent\n")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a fixed body, the same on every Django version."""
    return HttpResponse(b"server error\n", status=500, content_type="text/plain")
