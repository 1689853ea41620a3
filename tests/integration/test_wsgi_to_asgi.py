"""A plain WSGI application wrapped in WsgiToAsgi and served by Uvicorn."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import Server, assert_clean_shutdown
from wsgi_demo import BLOCK, pattern_bytes

pytestmark = pytest.mark.integration

LARGE = 50 * 1024 * 1024
# Half the payload: a server that buffered a whole body would exceed it.
MEMORY_BOUND_KIB = LARGE // 2 // 1024


@pytest.fixture(scope="module")
def server(start: Any) -> Iterator[Server]:
    server = start("uvicorn", "wsgi_demo:asgi_application", with_db=False)
    yield server
    assert_clean_shutdown(server)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    for block in pattern_bytes(size):
        digest.update(block)
    return digest.hexdigest()


class _PeakRss:
    """The server's peak RSS growth over a block, in KiB."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> _PeakRss:
        self.server.reset_peak_rss()
        self.before = self.server.peak_rss_kib()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.growth = self.server.peak_rss_kib() - self.before


@pytest.mark.parametrize("path", ["/generator", "/file"])
def test_large_download(server: Server, client: httpx.Client, path: str) -> None:
    client.get(path, params={"size": BLOCK})  # warm up (and create the file)
    digest = hashlib.sha256()
    received = 0
    with (
        _PeakRss(server) as peak,
        client.stream("GET", path, params={"size": LARGE}) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == LARGE
    assert digest.hexdigest() == _expected_digest(LARGE)
    assert peak.growth < MEMORY_BOUND_KIB, f"peak RSS grew by {peak.growth} KiB"


def test_large_upload(server: Server, client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        yield from pattern_bytes(LARGE)

    client.post("/upload", content=b"warm-up", headers={"Content-Length": "7"})
    with _PeakRss(server) as peak:
        response = client.post(
            "/upload", content=body(), headers={"Content-Length": str(LARGE)}
        )
    assert response.status_code == 200
    assert json.loads(response.content) == {
        "size": LARGE,
        "sha256": _expected_digest(LARGE),
    }
    assert peak.growth < MEMORY_BOUND_KIB, f"peak RSS grew by {peak.growth} KiB"


# Uvicorn, by default, starts the next request on a connection from inside the
# previous response's send(), so the new request's task copies the context of
# the async_to_sync call WsgiToAsgi made for that send, a call that has
# returned by the time the task makes its own thread-sensitive call. Upstream
# asgiref 3.13.0 then fails with "CurrentThreadExecutor already quit or is
# broken" (or "would deadlock"); asgire places the task like any other. Both
# that and Uvicorn's reset_contextvars mode (a fresh context per request) are
# exercised.
UVICORN_CONFIGS = ["uvicorn", "uvicorn-reset-contextvars"]


@pytest.fixture(scope="module")
def fresh_context_server(start: Any) -> Iterator[Server]:
    server = start(
        "uvicorn-reset-contextvars", "wsgi_demo:asgi_application", with_db=False
    )
    yield server
    assert_clean_shutdown(server)


def _server_for(request: pytest.FixtureRequest, config: str) -> Server:
    return request.getfixturevalue(
        "server" if config == "uvicorn" else "fresh_context_server"
    )


@pytest.mark.parametrize("config", UVICORN_CONFIGS)
def test_keep_alive_connection_after_a_large_upload(
    request: pytest.FixtureRequest, config: str
) -> None:
    # Uvicorn stops reading a connection while an upload is buffered, and may
    # resume from inside the response's send().
    with httpx.Client(base_url=_server_for(request, config).url, timeout=60) as client:
        upload = client.post("/upload", content=b"u" * (4 * BLOCK))
        assert upload.status_code == 200
        for _ in range(3):
            response = client.get("/cookies")
            assert (response.status_code, response.content) == (200, b"two cookies\n")


@pytest.mark.parametrize("config", UVICORN_CONFIGS)
def test_pipelined_requests(request: pytest.FixtureRequest, config: str) -> None:
    port = _server_for(request, config).port
    head = b"GET /cookies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(head + b"\r\n" + head + b"Connection: close\r\n\r\n")
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        assert received.count(b"HTTP/1.1 200 OK\r\n") == 2, received
        assert received.count(b"two cookies\n") == 2, received


def test_declared_content_length_cuts_the_body(client: httpx.Client) -> None:
    response = client.get("/overlong")
    assert response.content == b"0123456789"


def test_repeated_response_headers_survive(client: httpx.Client) -> None:
    response = client.get("/cookies")
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["x-demo"] == "yes"
    assert response.content == b"two cookies\n"


def test_environ_built_from_the_scope(server: Server, client: httpx.Client) -> None:
    response = client.request(
        "GET",
        "/environ/caf%C3%A9",
        params={"q": "a b"},
        headers=[("X-Demo", "one"), ("X-Demo", "two")],
    )
    assert json.loads(response.content) == {
        "CONTENT_LENGTH": None,
        "CONTENT_TYPE": None,
        "HTTP_X_DEMO": "one,two",
        "PATH_INFO": "/environ/café".encode().decode("latin-1"),
        "QUERY_STRING": "q=a+b",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
    }
    posted = client.post(
        "/environ", content=b"abc", headers={"Content-Type": "text/x-demo"}
    )
    seen = json.loads(posted.content)
    assert (seen["REQUEST_METHOD"], seen["CONTENT_TYPE"], seen["CONTENT_LENGTH"]) == (
        "POST",
        "text/x-demo",
        "3",
    )
