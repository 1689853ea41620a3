"""Behaviour of ``asgiref.wsgi``: serving a WSGI application over ASGI."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterable, Iterator
from tempfile import SpooledTemporaryFile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from asgiref.wsgi import WsgiToAsgi, WsgiToAsgiInstance

BOUND = 10  # seconds; every wait is bounded so a broken gateway fails, not hangs
END = {"type": "http.response.body"}
REQUEST = {"type": "http.request"}

Environ = dict[str, Any]


def http_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 8000),
    }
    scope.update(overrides)
    return scope


def start(
    status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def chunk(body: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": True}


class Recorder:
    """A WSGI application that records its environ and answers as configured."""

    def __init__(
        self,
        status: str = "200 OK",
        headers: Iterable[tuple[str, str]] = (),
        body: Iterable[bytes] = (b"ok",),
    ) -> None:
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.environ: Environ | None = None
        self.input = b""
        self.calls = 0

    def __call__(self, environ: Environ, start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        self.environ = environ
        self.input = environ["wsgi.input"].read()
        start_response(self.status, self.headers)
        return self.body


async def serve(
    application: Any, scope: dict[str, Any], *messages: dict[str, Any], **options: Any
) -> list[dict[str, Any]]:
    """Run one request through ``WsgiToAsgi`` and return every message it sent."""
    communicator = ApplicationCommunicator(WsgiToAsgi(application, **options), scope)
    for message in messages or (REQUEST,):
        await communicator.send_input(message)
    sent: list[dict[str, Any]] = []
    while True:
        message = await communicator.receive_output(BOUND)
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            break
    await communicator.wait(BOUND)
    return sent


class Messages:
    """``receive`` and ``send`` callables that serve a script and record replies."""

    def __init__(self, *incoming: dict[str, Any], fail_on: str | None = None) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, Any]] = []
        self.fail_on = fail_on

    async def receive(self) -> dict[str, Any]:
        if not self.incoming:
            await asyncio.Event().wait()  # a real server would block here too
        return self.incoming.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == self.fail_on:
            raise OSError("connection lost")
        self.sent.append(message)


# The environ


async def test_basic_request_and_response() -> None:
    app = Recorder(headers=[("Content-Type", "text/plain"), ("X-Colour", "Blue")])
    app.body = [b"first ", b"second"]
    sent = await serve(
        app,
        http_scope(
            method="POST",
            path="/foo/bar",
            query_string=b"a=1&b=2",
            headers=[
                (b"host", b"example.com"),
                (b"content-type", b"text/plain"),
                (b"content-length", b"5"),
                (b"x-token", b"one"),
                (b"x-token", b"two"),
            ],
        ),
        {"type": "http.request", "body": b"hello"},
    )
    assert sent == [
        start(200, [(b"content-type", b"text/plain"), (b"x-colour", b"Blue")]),
        chunk(b"first "),
        chunk(b"second"),
        END,
    ]
    environ = app.environ
    assert environ is not None
    assert app.input == b"hello"
    assert {
        key: value for key, value in environ.items() if not key.startswith("wsgi.")
    } == {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/foo/bar",
        "QUERY_STRING": "a=1&b=2",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "example.com",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "5",
        "HTTP_X_TOKEN": "one,two",
    }
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.errors"] is sys.stderr
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is True
    assert environ["wsgi.run_once"] is False


async def test_minimal_scope_uses_defaults() -> None:
    app = Recorder()
    scope = {
        "type": "http",
        "http_version": "1.0",
        "method": "GET",
        "path": "/",
        "query_string": b"",
    }
    await serve(app, scope)
    assert app.environ is not None
    assert app.environ["SCRIPT_NAME"] == ""
    assert app.environ["SERVER_NAME"] == "localhost"
    assert app.environ["SERVER_PORT"] == "80"
    assert app.environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert app.environ["wsgi.url_scheme"] == "http"
    assert "REMOTE_ADDR" not in app.environ
    assert not any(key.startswith("HTTP_") for key in app.environ)


def build_environ(scope: dict[str, Any], limit: int | None = 100) -> Environ:
    adapter = WsgiToAsgiInstance(Recorder(), limit)
    adapter.scope = scope  # asgiref reads the headers from here, not the argument
    return adapter.build_environ(scope, None)


@pytest.mark.parametrize(
    ("root_path", "path", "script_name", "path_info"),
    [
        ("", "/app/page", "", "/app/page"),
        ("/app", "/app/page", "/app", "/page"),
        ("/app", "/app", "/app", ""),
        ("/app", "/other", "/app", "/other"),
        # The prefix is stripped as text, not by path segment.
        ("/app", "/application", "/app", "lication"),
    ],
)
def test_script_name_and_path_info(
    root_path: str, path: str, script_name: str, path_info: str
) -> None:
    environ = build_environ(http_scope(root_path=root_path, path=path))
    assert environ["SCRIPT_NAME"] == script_name
    assert environ["PATH_INFO"] == path_info


def test_paths_are_utf8_bytes_as_latin1() -> None:
    environ = build_environ(http_scope(root_path="/ünï", path="/ünï/çødé ✓"))
    assert environ["SCRIPT_NAME"] == "/ünï".encode().decode("latin1")
    assert environ["PATH_INFO"] == "/çødé ✓".encode().decode("latin1")
    assert environ["PATH_INFO"].encode("latin1").decode() == "/çødé ✓"


def test_https_scheme() -> None:
    assert build_environ(http_scope(scheme="https"))["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize(
    ("server", "name", "port"),
    [
        (("example.com", 443), "example.com", "443"),
        (["10.0.0.1", 8080], "10.0.0.1", "8080"),
        (None, "localhost", "80"),
        # A unix socket server has a path and no port.
        (("/run/app.sock", None), "/run/app.sock", "0"),
        (["/tmp/uvicorn.sock", None], "/tmp/uvicorn.sock", "0"),
    ],
)
def test_server_name_and_port(server: Any, name: str, port: str) -> None:
    environ = build_environ(http_scope(server=server))
    assert environ["SERVER_NAME"] == name
    assert environ["SERVER_PORT"] == port


def test_client_none_gives_no_remote_addr() -> None:
    assert "REMOTE_ADDR" not in build_environ(http_scope(client=None))


def test_headers_are_latin1_and_joined_in_order() -> None:
    environ = build_environ(
        http_scope(
            headers=[
                [b"accept", b"text/html"],
                [b"x-custom-thing", b"caf\xe9"],
                [b"accept", b"*/*"],
                [b"x-custom_thing", b"second"],
            ]
        )
    )
    assert environ["HTTP_ACCEPT"] == "text/html,*/*"
    # "-" and "_" both become "_", so these two names merge.
    assert environ["HTTP_X_CUSTOM_THING"] == "café,second"


def test_content_headers_have_no_http_prefix() -> None:
    environ = build_environ(
        http_scope(headers=[(b"content-length", b"10"), (b"content-type", b"a/b")])
    )
    assert environ["CONTENT_LENGTH"] == "10"
    assert environ["CONTENT_TYPE"] == "a/b"
    assert "HTTP_CONTENT_LENGTH" not in environ
    assert "HTTP_CONTENT_TYPE" not in environ


# The request body


async def test_body_is_assembled_from_several_messages() -> None:
    app = Recorder()
    await serve(
        app,
        http_scope(method="PUT"),
        {"type": "http.request", "body": b"one ", "more_body": True},
        {"type": "http.request", "more_body": True},  # no body key at all
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"two"},
    )
    assert app.input == b"one two"


async def test_small_body_stays_in_memory_and_large_body_spills() -> None:
    seen: list[tuple[bool, bytes]] = []

    def application(environ: Environ, start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"]
        assert isinstance(body, SpooledTemporaryFile)
        seen.append((body._rolled, body.read()))
        start_response("204 No Content", [])
        return []

    small = b"x" * 65536
    large = b"y" * 65537
    await serve(application, http_scope(), {"type": "http.request", "body": small})
    await serve(
        application,
        http_scope(),
        {"type": "http.request", "body": large[:40000], "more_body": True},
        {"type": "http.request", "body": large[40000:]},
    )
    assert seen == [(False, small), (True, large)]


async def test_application_waits_for_the_whole_body() -> None:
    app = Recorder()
    communicator = ApplicationCommunicator(WsgiToAsgi(app), http_scope())
    await communicator.send_input(
        {"type": "http.request", "body": b"a", "more_body": True}
    )
    assert await communicator.receive_nothing(0.05) is True
    assert app.calls == 0
    await communicator.send_input({"type": "http.request", "body": b"b"})
    assert (await communicator.receive_output(BOUND))["type"] == "http.response.start"
    assert app.input == b"ab"
    # Let the response finish: stopping now could end the loop while the
    # worker thread is still sending, and upstream's worker then waits for
    # that loop forever, blocking every later thread-sensitive call.
    while (message := await communicator.receive_output(BOUND)).get("more_body"):
        pass
    assert message["type"] == "http.response.body"
    await communicator.wait(BOUND)


# Refusals


async def test_non_http_scope_is_refused() -> None:
    messages = Messages()
    with pytest.raises(ValueError, match=r"^WSGI wrapper received a non-HTTP scope$"):
        await WsgiToAsgi(Recorder())(
            {"type": "websocket"}, messages.receive, messages.send
        )
    assert messages.sent == []


async def test_unexpected_message_is_refused() -> None:
    app = Recorder()
    messages = Messages({"type": "websocket.receive"})
    with pytest.raises(
        ValueError, match=r"^WSGI wrapper received a non-HTTP-request message$"
    ):
        await WsgiToAsgi(app)(http_scope(), messages.receive, messages.send)
    assert app.calls == 0
    assert messages.sent == []


BAD_REQUEST = [
    start(400, [(b"content-type", b"text/plain")]),
    {"type": "http.response.body", "body": b"Bad Request: Too many duplicate headers"},
]


async def test_too_many_duplicate_headers_answer_400() -> None:
    app = Recorder()
    headers = [(b"x-dup", b"v")] * 101
    messages = Messages(REQUEST)
    await WsgiToAsgi(app)(http_scope(headers=headers), messages.receive, messages.send)
    assert messages.sent == BAD_REQUEST
    assert app.calls == 0


async def test_duplicate_header_limit_is_inclusive_and_configurable() -> None:
    app = Recorder()
    await serve(app, http_scope(headers=[(b"x-dup", b"v")] * 100))
    assert app.environ is not None
    assert app.environ["HTTP_X_DUP"] == ",".join(["v"] * 100)

    messages = Messages(REQUEST)
    headers = [(b"x-a", b"1"), (b"x-a", b"2"), (b"x-a", b"3")]
    await WsgiToAsgi(app, duplicate_header_limit=2)(
        http_scope(headers=headers), messages.receive, messages.send
    )
    assert messages.sent == BAD_REQUEST
    assert app.calls == 1


@pytest.mark.parametrize("limit", [0, None])
async def test_duplicate_header_limit_can_be_disabled(limit: int | None) -> None:
    app = Recorder()
    await serve(
        app, http_scope(headers=[(b"x-dup", b"v")] * 500), duplicate_header_limit=limit
    )
    assert app.environ is not None
    assert app.environ["HTTP_X_DUP"].count("v") == 500


def test_build_environ_raises_for_too_many_duplicates() -> None:
    scope = http_scope(headers=[(b"content-type", b"a")] * 3)
    with pytest.raises(ValueError, match="Too many duplicate headers: CONTENT_TYPE"):
        build_environ(scope, limit=2)


async def test_bad_request_messages_are_fresh_each_time() -> None:
    first = Messages(REQUEST)
    second = Messages(REQUEST)
    application = WsgiToAsgi(Recorder(), duplicate_header_limit=1)
    scope = http_scope(headers=[(b"a", b"1"), (b"a", b"2")])
    await application(scope, first.receive, first.send)
    first.sent[0]["headers"].append((b"x-added", b"by middleware"))
    await application(scope, second.receive, second.send)
    assert second.sent == BAD_REQUEST


# The response


async def test_empty_response_still_starts() -> None:
    sent = await serve(Recorder(status="204 No Content", body=[]), http_scope())
    assert sent == [start(204), END]


async def test_status_and_headers_are_encoded() -> None:
    app = Recorder(
        status="404 Not Found",
        headers=[
            ("X-UPPER", "Mixed Case Value"),
            ("set-cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ],
    )
    sent = await serve(app, http_scope())
    assert sent[0] == start(
        404,
        [
            (b"x-upper", b"Mixed Case Value"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
        ],
    )


async def test_status_reason_phrase_is_not_sent() -> None:
    sent = await serve(Recorder(status="599 Something  Unusual "), http_scope())
    assert sent[0]["status"] == 599


async def test_output_is_clamped_to_content_length() -> None:
    app = Recorder(headers=[("Content-Length", "7")], body=[b"abcd", b"efgh", b"ijkl"])
    sent = await serve(app, http_scope())
    assert sent[1:] == [chunk(b"abcd"), chunk(b"efg"), END]


async def test_iteration_stops_once_content_length_is_sent() -> None:
    pulled: list[int] = []

    def body() -> Iterator[bytes]:
        for index in range(100):
            pulled.append(index)
            yield b"12345"

    app = Recorder(headers=[("content-length", "10")], body=body())
    sent = await serve(app, http_scope())
    assert sent[1:] == [chunk(b"12345"), chunk(b"12345"), END]
    assert pulled == [0, 1]


async def test_zero_content_length() -> None:
    app = Recorder(headers=[("Content-Length", "0")], body=[b"ignored", b"never"])
    sent = await serve(app, http_scope())
    assert sent[1:] == [chunk(b""), END]


async def test_last_content_length_header_wins() -> None:
    app = Recorder(
        headers=[("Content-Length", "2"), ("Content-Length", "4")], body=[b"abcdef"]
    )
    sent = await serve(app, http_scope())
    assert sent[1:] == [chunk(b"abcd"), END]


async def test_empty_chunks_are_passed_on() -> None:
    sent = await serve(Recorder(body=[b"", b"a", b""]), http_scope())
    assert sent[1:] == [chunk(b""), chunk(b"a"), chunk(b""), END]


async def test_start_response_inside_a_generator() -> None:
    def application(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("201 Created", [("Content-Length", "3")])
        yield b"abcdef"

    sent = await serve(application, http_scope())
    assert sent == [start(201, [(b"content-length", b"3")]), chunk(b"abc"), END]


async def test_second_start_response_needs_exc_info() -> None:
    def application(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("500 Error", [])
        return []

    messages = Messages(REQUEST)
    with pytest.raises(
        ValueError,
        match=r"^You cannot call start_response a second time without exc_info$",
    ):
        await WsgiToAsgi(application)(http_scope(), messages.receive, messages.send)
    assert messages.sent == []


async def test_start_response_with_exc_info_replaces_the_unsent_start() -> None:
    def application(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        try:
            raise RuntimeError("failed")
        except RuntimeError:
            start_response(
                "500 Internal Server Error", [("X-Error", "1")], sys.exc_info()
            )
        return [b"an error page"]

    sent = await serve(application, http_scope())
    # The earlier Content-Length went away with the earlier headers.
    assert sent == [start(500, [(b"x-error", b"1")]), chunk(b"an error page"), END]


async def test_start_response_with_exc_info_after_the_start_reraises() -> None:
    def application(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise KeyError("mid-response failure")
        except KeyError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never sent"

    messages = Messages(REQUEST)
    with pytest.raises(KeyError, match="mid-response failure"):
        await WsgiToAsgi(application)(http_scope(), messages.receive, messages.send)
    assert messages.sent == [start(200), chunk(b"partial")]


async def test_application_exception_propagates() -> None:
    def application(environ: Environ, start_response: Any) -> list[bytes]:
        raise ZeroDivisionError("application bug")

    messages = Messages(REQUEST)
    with pytest.raises(ZeroDivisionError, match="application bug"):
        await WsgiToAsgi(application)(http_scope(), messages.receive, messages.send)
    assert messages.sent == []


async def test_application_runs_in_the_thread_sensitive_worker() -> None:
    threads: list[int] = []

    def application(environ: Environ, start_response: Any) -> list[bytes]:
        threads.append(threading.get_ident())

        def recording_start_response(*args: Any) -> Any:
            threads.append(threading.get_ident())
            return start_response(*args)

        recording_start_response("200 OK", [])
        return []

    await serve(application, http_scope())
    await serve(application, http_scope())
    worker = await sync_to_async(threading.get_ident)()
    assert threads == [worker] * 4
    assert worker != threading.get_ident()


async def test_each_call_gets_a_fresh_instance() -> None:
    application = WsgiToAsgi(Recorder(headers=[("Content-Length", "2")], body=[b"abc"]))
    for _ in range(2):
        messages = Messages(REQUEST)
        await application(http_scope(), messages.receive, messages.send)
        assert messages.sent == [
            start(200, [(b"content-length", b"2")]),
            chunk(b"ab"),
            END,
        ]


# Beyond upstream: closing the application's iterable (PEP 3333)


class ClosingBody:
    """An application iterable that records how far it was read and whether closed."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.read = 0
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, data in enumerate(self.chunks):
            if index == self.fail_at:
                raise LookupError("body generation failed")
            self.read += 1
            yield data

    def close(self) -> None:
        self.closed += 1


@pytest.mark.asgire_only
async def test_iterable_is_closed_after_a_complete_response() -> None:
    body = ClosingBody([b"a", b"b"])
    sent = await serve(Recorder(body=body), http_scope())
    assert sent[1:] == [chunk(b"a"), chunk(b"b"), END]
    assert body.closed == 1


@pytest.mark.asgire_only
async def test_iterable_is_closed_when_content_length_cuts_it_short() -> None:
    body = ClosingBody([b"abc", b"def", b"ghi"])
    await serve(Recorder(headers=[("Content-Length", "4")], body=body), http_scope())
    assert body.read == 2
    assert body.closed == 1


@pytest.mark.asgire_only
async def test_iterable_is_closed_when_it_fails() -> None:
    body = ClosingBody([b"a", b"b"], fail_at=1)
    messages = Messages(REQUEST)
    with pytest.raises(LookupError):
        await WsgiToAsgi(Recorder(body=body))(
            http_scope(), messages.receive, messages.send
        )
    assert messages.sent == [start(200), chunk(b"a")]
    assert body.closed == 1


@pytest.mark.asgire_only
@pytest.mark.parametrize("fail_on", ["http.response.start", "http.response.body"])
async def test_iterable_is_closed_when_sending_fails(fail_on: str) -> None:
    body = ClosingBody([b"a", b"b"])
    messages = Messages(REQUEST, fail_on=fail_on)
    with pytest.raises(OSError, match="connection lost"):
        await WsgiToAsgi(Recorder(body=body))(
            http_scope(), messages.receive, messages.send
        )
    assert body.closed == 1


@pytest.mark.asgire_only
async def test_generator_cleanup_runs_even_while_referenced() -> None:
    cleaned: list[str] = []
    responses: list[Iterator[bytes]] = []  # e.g. a cache or a debugging middleware

    def body() -> Iterator[bytes]:
        try:
            yield b"a"
            yield b"b"
        finally:
            cleaned.append("done")

    def application(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "1")])
        response = body()
        responses.append(response)
        return response

    await serve(application, http_scope())
    # Garbage collection cannot have finalised it: close() must have been called.
    assert cleaned == ["done"]


async def test_iterable_without_close_is_fine() -> None:
    sent = await serve(Recorder(body=iter([b"x"])), http_scope())
    assert sent[1:] == [chunk(b"x"), END]


# Beyond upstream: the client leaving before its request is complete


@pytest.mark.asgire_only
@pytest.mark.parametrize(
    "incoming",
    [
        [{"type": "http.disconnect"}],
        [
            {"type": "http.request", "body": b"part", "more_body": True},
            {"type": "http.disconnect"},
        ],
    ],
)
async def test_disconnect_before_the_body_is_complete_ends_quietly(
    incoming: list[dict[str, Any]],
) -> None:
    app = Recorder()
    messages = Messages(*incoming)
    await asyncio.wait_for(
        WsgiToAsgi(app)(http_scope(), messages.receive, messages.send), BOUND
    )
    assert app.calls == 0
    assert messages.sent == []


# Beyond upstream: clear errors for a malformed response start


@pytest.mark.asgire_only
@pytest.mark.parametrize(
    "status", ["200", "200OK", "OK 200", "2000 OK", " 200 OK", "20x OK", "", "٢٠٠ OK"]
)
async def test_malformed_status_line_is_named(status: str) -> None:
    messages = Messages(REQUEST)
    with pytest.raises(ValueError, match="status line is malformed") as info:
        await WsgiToAsgi(Recorder(status=status))(
            http_scope(), messages.receive, messages.send
        )
    assert repr(status) in str(info.value)
    assert messages.sent == []


@pytest.mark.asgire_only
@pytest.mark.parametrize(
    ("name", "value"), [("X-Naïve", "value"), ("X-Ok", "café"), ("X-Snow", "☃")]
)
async def test_non_ascii_header_is_named(name: str, value: str) -> None:
    messages = Messages(REQUEST)
    with pytest.raises(ValueError, match="not ASCII") as info:
        await WsgiToAsgi(Recorder(headers=[(name, value)]))(
            http_scope(), messages.receive, messages.send
        )
    assert repr(name) in str(info.value)
    assert repr(value) in str(info.value)
    assert isinstance(info.value.__cause__, UnicodeEncodeError)
    assert messages.sent == []


@pytest.mark.asgire_only
@pytest.mark.parametrize("length", ["ten", "-1", "", "1.5"])
async def test_bad_content_length_is_named(length: str) -> None:
    messages = Messages(REQUEST)
    app = Recorder(headers=[("Content-Length", length)])
    with pytest.raises(ValueError, match="Content-Length") as info:
        await WsgiToAsgi(app)(http_scope(), messages.receive, messages.send)
    assert repr(length) in str(info.value)


@pytest.mark.asgire_only
async def test_response_without_start_response_is_named() -> None:
    def application(environ: Environ, start_response: Any) -> list[bytes]:
        return [b"body without a status"]

    messages = Messages(REQUEST)
    with pytest.raises(RuntimeError, match="did not call start_response"):
        await WsgiToAsgi(application)(http_scope(), messages.receive, messages.send)
    assert messages.sent == []


async def test_bad_status_and_headers_raise_value_error() -> None:
    # Whatever the message, these are ValueErrors on asgiref too.
    for app in (
        Recorder(status="OK"),
        Recorder(status="abc OK"),
        Recorder(headers=[("X", "ünïcode")]),
        Recorder(headers=[("Content-Length", "many")]),
    ):
        messages = Messages(REQUEST)
        with pytest.raises(ValueError):  # noqa: PT011 - messages differ; the type does not
            await WsgiToAsgi(app)(http_scope(), messages.receive, messages.send)


# Properties of the environ builder over arbitrary scopes

header_names = st.one_of(
    st.sampled_from(
        [b"content-length", b"content-type", b"Content-Type", b"host", b"x-a", b"X_A"]
    ),
    st.binary(min_size=1, max_size=12),
)
headers = st.lists(st.tuples(header_names, st.binary(max_size=16)), max_size=12)


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    root_path = draw(st.text(max_size=8))
    path = draw(
        st.one_of(
            st.text(max_size=16), st.text(max_size=8).map(lambda rest: root_path + rest)
        )
    )
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": draw(st.sampled_from(["1.0", "1.1", "2"])),
        "method": draw(st.sampled_from(["GET", "POST", "PATCH"]) | st.text(min_size=1)),
        "path": path,
        "query_string": draw(st.binary().map(lambda raw: bytes(b & 0x7F for b in raw))),
        "headers": draw(headers),
    }
    optional = {
        "root_path": root_path,
        "scheme": draw(st.sampled_from(["http", "https"])),
        "server": draw(
            st.none()
            | st.tuples(st.text(max_size=10), st.integers(0, 65535))
            | st.tuples(st.text(max_size=10), st.none())
        ),
        "client": draw(
            st.none() | st.tuples(st.text(max_size=10), st.integers(0, 65535))
        ),
    }
    for key in draw(st.sets(st.sampled_from(sorted(optional)))):
        scope[key] = optional[key]
    return scope


def environ_key(name: bytes) -> str:
    if name == b"content-length":
        return "CONTENT_LENGTH"
    if name == b"content-type":
        return "CONTENT_TYPE"
    return "HTTP_" + name.decode("latin1").upper().replace("-", "_")


def as_wsgi_string(text: str) -> str:
    """PEP 3333 native string: the UTF-8 bytes of ``text`` as latin-1 code points."""
    return text.encode().decode("latin1")


property_settings = settings(
    deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)


@property_settings
@given(scopes())
def test_environ_properties(scope: dict[str, Any]) -> None:
    environ = build_environ(scope, limit=None)
    root_path = as_wsgi_string(scope.get("root_path", ""))
    path = as_wsgi_string(scope["path"])

    assert environ["REQUEST_METHOD"] == scope["method"]
    assert environ["QUERY_STRING"] == scope["query_string"].decode()
    assert environ["SERVER_PROTOCOL"] == "HTTP/" + scope["http_version"]
    assert environ["wsgi.url_scheme"] == scope.get("scheme", "http")
    assert environ["wsgi.input"] is None

    # SCRIPT_NAME + PATH_INFO rebuild the path whenever it lies under root_path.
    assert environ["SCRIPT_NAME"] == root_path
    if path.startswith(root_path):
        assert root_path + environ["PATH_INFO"] == path
    else:
        assert environ["PATH_INFO"] == path
    for key in ("SCRIPT_NAME", "PATH_INFO"):
        environ[key].encode("latin1")  # native strings: bytes as code points

    server = scope.get("server")
    if server is None:
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("localhost", "80")
    else:
        assert environ["SERVER_NAME"] == server[0]
        assert environ["SERVER_PORT"] == str(server[1] or 0)
    client = scope.get("client")
    assert environ.get("REMOTE_ADDR") == (client[0] if client else None)

    expected: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        expected.setdefault(environ_key(name), []).append(value.decode("latin1"))
    from_headers = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_") or key in ("CONTENT_LENGTH", "CONTENT_TYPE")
    }
    assert from_headers == {key: ",".join(values) for key, values in expected.items()}


@property_settings
@given(headers, st.integers(1, 4))
def test_duplicate_limit_property(
    header_list: list[tuple[bytes, bytes]], limit: int
) -> None:
    counts: dict[str, int] = {}
    for name, _ in header_list:
        counts[environ_key(name)] = counts.get(environ_key(name), 0) + 1
    scope = http_scope(headers=header_list)
    if max(counts.values(), default=0) > limit:
        with pytest.raises(ValueError, match="Too many duplicate headers"):
            build_environ(scope, limit=limit)
    else:
        build_environ(scope, limit=limit)


# Properties of whole requests (fewer examples: each one runs a request)


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_chunks=st.lists(st.binary(max_size=64), max_size=5),
    response_chunks=st.lists(st.binary(max_size=16), max_size=6),
    content_length=st.none() | st.integers(0, 80),
)
def test_request_and_response_bodies_survive_the_trip(
    request_chunks: list[bytes],
    response_chunks: list[bytes],
    content_length: int | None,
) -> None:
    headers = (
        [] if content_length is None else [("Content-Length", str(content_length))]
    )
    app = Recorder(headers=headers, body=response_chunks)
    messages = [
        {"type": "http.request", "body": data, "more_body": True}
        for data in request_chunks
    ] + [REQUEST]
    sent = asyncio.run(serve(app, http_scope(), *messages))

    assert app.input == b"".join(request_chunks)
    assert sent[0]["type"] == "http.response.start"
    assert sent[-1] == END
    assert all(message.get("more_body") is True for message in sent[1:-1])
    body = b"".join(message["body"] for message in sent[1:-1])
    full = b"".join(response_chunks)
    assert body == (full if content_length is None else full[:content_length])
