"""The demo Django project served over ASGI by Uvicorn and by Daphne."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from harness import Server

pytestmark = pytest.mark.integration

TRAIL = "sync-outer:thread,async-middle:loop,hybrid-sync:thread,sync-inner:thread"
TRAIL_OUT = "sync-inner,hybrid-sync,async-middle,sync-outer"
SERVER_ERROR = b"server error\n"
_tokens = itertools.count()


def token(server: Server, label: str) -> str:
    return f"{server.kind}-{label}-{next(_tokens)}"


@pytest.fixture
def client(django_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=django_server.url, timeout=30) as client:
        yield client


def test_sync_view_behind_mixed_middleware(client: httpx.Client) -> None:
    response = client.get("/sync/hello/", headers={"X-Token": "t-sync"})
    assert response.status_code == 200
    assert (
        response.content
        == (
            f"view-sync trail={TRAIL},view-sync:thread local=t-sync/t-sync sync_threads=1\n"
        ).encode()
    )
    assert response.headers["X-Trail-Out"] == TRAIL_OUT
    assert response.headers["Content-Type"] == "text/plain"


def test_async_view_behind_mixed_middleware(client: httpx.Client) -> None:
    response = client.get("/async/hello/", headers={"X-Token": "t-async"})
    assert response.status_code == 200
    assert (
        response.content
        == (
            f"view-async trail={TRAIL},view-async:loop local=t-async/t-async sync_threads=1\n"
        ).encode()
    )
    assert response.headers["X-Trail-Out"] == TRAIL_OUT


def test_nested_adapters_keep_sync_code_on_one_thread(client: httpx.Client) -> None:
    response = client.get("/async/nested/")
    assert response.content == (
        b"outer=thread middle=loop inner_thread_is_outer_thread=True"
        b" outer_off_loop_thread=True\n"
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/sync/boom/", "RuntimeError: boom-sync"),
        ("/async/boom/", "RuntimeError: boom-async"),
        ("/async/boom-in-thread/", "LookupError: boom-thread"),
    ],
)
def test_a_raising_view_gives_500_and_the_server_lives_on(
    django_server: Server, client: httpx.Client, path: str, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == 500
    assert response.content == SERVER_ERROR
    deadline = time.monotonic() + 10
    while message not in django_server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"Internal Server Error: {path}" in django_server.log()
    assert message in django_server.log()
    assert client.get("/async/hello/").status_code == 200


def test_exception_from_a_coroutine_reaches_the_sync_caller(
    client: httpx.Client,
) -> None:
    response = client.get("/sync/caught/")
    assert response.content == b"caught ValueError('from-coroutine') in thread\n"


@pytest.mark.parametrize(
    ("path", "via"),
    [
        ("/async/notes/", "orm-async"),
        ("/async/notes/", "sync-to-async"),
        ("/sync/notes/", "sync-view"),
    ],
)
def test_orm_writes_land_in_the_database(
    django_server: Server, client: httpx.Client, path: str, via: str
) -> None:
    note = token(django_server, via)
    response = client.post(
        path,
        data={"token": note, "text": f"text of {note}", "via": via},
        headers={"X-Token": note},
    )
    assert response.status_code == 201, response.text
    expected = f"created {note} via {via}"
    if path.startswith("/async/"):
        expected += f" local={note}"
    assert response.content == f"{expected}\n".encode()
    assert django_server.rows(
        "SELECT text, via FROM demo_app_note WHERE token = ?", note
    ) == [(f"text of {note}", via)]
    read_back = client.get(f"/async/notes/{note}/")
    assert read_back.content == f"{note}:text of {note}:{via}\n".encode()


def test_async_orm_reads(django_server: Server, client: httpx.Client) -> None:
    prefix = token(django_server, "list")
    for suffix in ("b", "a", "c"):
        response = client.post(
            "/async/notes/",
            data={"token": f"{prefix}-{suffix}", "text": "x", "via": "orm-async"},
        )
        assert response.status_code == 201
    listed = client.get("/async/notes/", params={"prefix": prefix})
    assert listed.content == f"{prefix}-a\n{prefix}-b\n{prefix}-c\n".encode()
    missing = client.get(f"/async/notes/{prefix}-z/")
    assert missing.status_code == 404
    assert missing.content == f"no note {prefix}-z\n".encode()


@pytest.mark.parametrize("fail", [False, True])
def test_transaction_in_a_worker_thread_commits_or_rolls_back(
    django_server: Server, client: httpx.Client, fail: bool
) -> None:
    pair = token(django_server, "pair")
    response = client.post(
        "/async/notes/atomic/", data={"token": pair, "fail": "1" if fail else "0"}
    )
    assert response.content == (b"rolled back\n" if fail else b"committed\n")
    rows = django_server.rows(
        "SELECT token FROM demo_app_note WHERE token LIKE ? ORDER BY token", f"{pair}-%"
    )
    assert rows == ([] if fail else [(f"{pair}-a",), (f"{pair}-b",)])


def test_session_shared_by_sync_and_async_views(
    django_server: Server, client: httpx.Client
) -> None:
    bodies = [
        client.get(path).content
        for path in (
            "/session/sync/",
            "/session/async/",
            "/session/async/",
            "/session/sync/",
        )
    ]
    assert bodies == [
        b"count=1 by sync\n",
        b"count=2 by async\n",
        b"count=3 by async\n",
        b"count=4 by sync\n",
    ]
    session_key = client.cookies["sessionid"]
    assert django_server.rows(
        "SELECT COUNT(*) FROM django_session WHERE session_key = ?", session_key
    ) == [(1,)]


def test_login_and_logout(django_server: Server, client: httpx.Client) -> None:
    refused = client.post(
        "/auth/login/", data={"username": "alice", "password": "nope"}
    )
    assert refused.status_code == 403
    assert refused.content == b"bad credentials\n"
    assert client.get("/auth/whoami/async/").content == b"async sees anonymous\n"

    (before,) = django_server.rows(
        "SELECT last_login FROM auth_user WHERE username = 'alice'"
    )
    accepted = client.post(
        "/auth/login/", data={"username": "alice", "password": "wonderland"}
    )
    assert accepted.content == b"logged in as alice\n"
    session_key = client.cookies["sessionid"]
    (after,) = django_server.rows(
        "SELECT last_login FROM auth_user WHERE username = 'alice'"
    )
    assert after[0] is not None
    assert after != before
    assert django_server.rows(
        "SELECT COUNT(*) FROM django_session WHERE session_key = ?", session_key
    ) == [(1,)]
    assert client.get("/auth/whoami/async/").content == b"async sees alice\n"
    assert client.get("/auth/whoami/sync/").content == b"sync sees alice\n"

    assert client.post("/auth/logout/").content == b"logged out\n"
    assert client.get("/auth/whoami/sync/").content == b"sync sees anonymous\n"
    assert django_server.rows(
        "SELECT COUNT(*) FROM django_session WHERE session_key = ?", session_key
    ) == [(0,)]


def test_streaming_from_a_sync_iterator(client: httpx.Client) -> None:
    response = client.get("/stream/sync/")
    assert response.status_code == 200
    assert response.content == b"".join(
        b"sync chunk %d thread\n" % index for index in range(50)
    )


def test_streaming_from_an_async_iterator(client: httpx.Client) -> None:
    with client.stream("GET", "/stream/async/") as response:
        body = b"".join(response.iter_bytes())
    assert body == b"".join(b"async chunk %d loop\n" % index for index in range(50))


def _stream_outcomes(client: httpx.Client) -> dict[str, int]:
    return json.loads(client.get("/stream/state/").content)


def test_client_disconnecting_mid_stream(
    django_server: Server, client: httpx.Client
) -> None:
    before = _stream_outcomes(client)
    with socket.create_connection(
        ("127.0.0.1", django_server.port), timeout=30
    ) as conn:
        conn.sendall(b"GET /stream/endless/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while received.count(b"\n") < 10:  # headers, then a few 1 KiB lines
            chunk = conn.recv(65536)
            assert chunk, "server closed the stream early"
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"000000" + b"." * 1017 + b"\n" in received

    deadline = time.monotonic() + 20
    outcomes = _stream_outcomes(client)
    while (
        outcomes["interrupted"] == before["interrupted"] and time.monotonic() < deadline
    ):
        time.sleep(0.05)
        outcomes = _stream_outcomes(client)
    assert outcomes == {
        "started": before["started"] + 1,
        "finished": before["finished"],
        "interrupted": before["interrupted"] + 1,
    }
    assert client.get("/sync/hello/").status_code == 200


# Uvicorn starts a pipelined request from inside the previous response's send
# (see test_wsgi_to_asgi). Daphne is left out: after pipelined requests it
# leaves one request's executor thread behind at shutdown, with upstream
# asgiref as with asgire.
@pytest.mark.parametrize("django_server", ["uvicorn"], indirect=True)
def test_pipelined_requests(django_server: Server) -> None:
    requests = [
        b"GET /sync/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Token: p1\r\n\r\n",
        b"GET /async/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Token: p2\r\n\r\n",
        b"GET /sync/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Token: p3\r\n"
        b"Connection: close\r\n\r\n",
    ]
    with socket.create_connection(
        ("127.0.0.1", django_server.port), timeout=30
    ) as conn:
        conn.sendall(b"".join(requests))
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3, received
    for view, token in (("sync", "p1"), ("async", "p2"), ("sync", "p3")):
        where = "thread" if view == "sync" else "loop"
        body = (
            f"view-{view} trail={TRAIL},view-{view}:{where}"
            f" local={token}/{token} sync_threads=1\n"
        )
        assert body.encode() in received
