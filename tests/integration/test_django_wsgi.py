"""The same Django project under WSGI, where async views run via async_to_sync."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

pytestmark = pytest.mark.integration

TRAIL = "sync-outer:thread,async-middle:loop,hybrid-sync:thread,sync-inner:thread"
TRAIL_OUT = "sync-inner,hybrid-sync,async-middle,sync-outer"
_tokens = itertools.count()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def wsgi_url(django_in_process: Path) -> Iterator[str]:
    from demo_site.wsgi import application

    server: WSGIServer = make_server(
        "127.0.0.1", 0, application, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgiref"
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()
    assert not thread.is_alive()


@pytest.fixture
def client(wsgi_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=wsgi_url, timeout=30) as client:
        yield client


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, params).fetchall()


@pytest.mark.parametrize(
    ("path", "view"), [("/sync/hello/", "sync"), ("/async/hello/", "async")]
)
def test_views_behind_mixed_middleware(
    client: httpx.Client, path: str, view: str
) -> None:
    response = client.get(path, headers={"X-Token": f"w-{view}"})
    where = "thread" if view == "sync" else "loop"
    assert (
        response.content
        == (
            f"view-{view} trail={TRAIL},view-{view}:{where}"
            f" local=w-{view}/w-{view} sync_threads=1\n"
        ).encode()
    )
    assert response.headers["X-Trail-Out"] == TRAIL_OUT


def test_nested_adapters(client: httpx.Client) -> None:
    assert client.get("/async/nested/").content == (
        b"outer=thread middle=loop inner_thread_is_outer_thread=True"
        b" outer_off_loop_thread=True\n"
    )


def test_async_views_write_through_the_orm(
    client: httpx.Client, django_in_process: Path
) -> None:
    for via in ("orm-async", "sync-to-async"):
        note = f"wsgi-{via}-{next(_tokens)}"
        response = client.post(
            "/async/notes/",
            data={"token": note, "text": "t", "via": via},
            headers={"X-Token": note},
        )
        assert response.status_code == 201
        assert response.content == f"created {note} via {via} local={note}\n".encode()
        assert _rows(
            django_in_process, "SELECT via FROM demo_app_note WHERE token = ?", note
        ) == [(via,)]
        assert (
            client.get(f"/async/notes/{note}/").content == f"{note}:t:{via}\n".encode()
        )

    pair = f"wsgi-pair-{next(_tokens)}"
    assert client.post(
        "/async/notes/atomic/", data={"token": pair, "fail": "1"}
    ).content == (b"rolled back\n")
    assert client.post("/async/notes/atomic/", data={"token": pair}).content == (
        b"committed\n"
    )
    assert _rows(
        django_in_process,
        "SELECT token FROM demo_app_note WHERE token LIKE ? ORDER BY token",
        f"{pair}-%",
    ) == [(f"{pair}-a",), (f"{pair}-b",)]


def test_errors(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    for path, error in [
        ("/sync/boom/", "RuntimeError: boom-sync"),
        ("/async/boom/", "RuntimeError: boom-async"),
        ("/async/boom-in-thread/", "LookupError: boom-thread"),
    ]:
        response = client.get(path)
        assert (response.status_code, response.content) == (500, b"server error\n")
        assert error in caplog.text
    caught = client.get("/sync/caught/")
    assert caught.content == b"caught ValueError('from-coroutine') in thread\n"
    # The records hold the failed requests' tracebacks, whose frames hold the
    # idle loop-thread executors: drop them so the thread-leak check is fair.
    caplog.clear()


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
def test_streaming(client: httpx.Client) -> None:
    assert client.get("/stream/async/").content == b"".join(
        b"async chunk %d loop\n" % index for index in range(50)
    )
    assert client.get("/stream/sync/").content == b"".join(
        b"sync chunk %d thread\n" % index for index in range(50)
    )


def test_sessions_and_auth_through_the_test_client(django_in_process: Path) -> None:
    from django.test import Client

    client = Client()
    assert client.get("/session/sync/").content == b"count=1 by sync\n"
    assert client.get("/session/async/").content == b"count=2 by async\n"
    response = client.post(
        "/auth/login/", {"username": "alice", "password": "wonderland"}
    )
    assert response.content == b"logged in as alice\n"
    session_key = client.cookies["sessionid"].value
    assert _rows(
        django_in_process,
        "SELECT COUNT(*) FROM django_session WHERE session_key = ?",
        session_key,
    ) == [(1,)]
    assert client.get("/auth/whoami/async/").content == b"async sees alice\n"
    assert client.get("/auth/whoami/sync/").content == b"sync sees alice\n"
    assert client.post("/auth/logout/").content == b"logged out\n"
    assert client.get("/auth/whoami/async/").content == b"async sees anonymous\n"


async def test_views_through_the_async_test_client(django_in_process: Path) -> None:
    from django.test import AsyncClient

    client = AsyncClient()
    for view, where in (("sync", "thread"), ("async", "loop")):
        response = await client.get(f"/{view}/hello/", headers={"X-Token": "ac"})
        assert (
            response.content
            == (
                f"view-{view} trail={TRAIL},view-{view}:{where} local=ac/ac sync_threads=1\n"
            ).encode()
        )
    note = f"async-client-{next(_tokens)}"
    response = await client.post(
        "/async/notes/", {"token": note, "text": "t", "via": "orm-async"}
    )
    assert response.status_code == 201
    assert _rows(
        django_in_process, "SELECT via FROM demo_app_note WHERE token = ?", note
    ) == [("orm-async",)]
