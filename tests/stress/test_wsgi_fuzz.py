"""WsgiToAsgi under arbitrary input: a valid response or a clear error, never a
hang, and bounded memory for floods of headers and huge bodies."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from asgiref.wsgi import WsgiToAsgi

pytestmark = pytest.mark.stress

EXAMPLE_TIMEOUT = 10.0

fuzz_settings = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class AppFailure(Exception):
    """Raised on purpose by the WSGI application under test."""


# --- the WSGI application: echoes the request body, in several styles --------

RESPONSE_STYLES = [
    "list",
    "generator",
    "start inside generator",
    "declared length shorter",
    "empty",
    "raise before start",
    "raise mid body",
]


@dataclass
class EchoApp:
    style: str
    chunk_size: int
    environs: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        self.environs.append(dict(environ))
        body = environ["wsgi.input"].read()
        headers = [("Content-Type", "application/octet-stream")]
        if self.style == "raise before start":
            raise AppFailure("before start")
        if self.style == "declared length shorter":
            start_response(
                "200 OK", [*headers, ("Content-Length", str(len(body) // 2))]
            )
            return [body]
        if self.style == "empty":
            start_response("204 No Content", headers)
            return []
        if self.style == "list":
            start_response("200 OK", headers)
            return list(self.chunks(body))
        return self.stream(body, start_response, headers)

    def chunks(self, body: bytes) -> Iterator[bytes]:
        for start in range(0, len(body), self.chunk_size):
            yield body[start : start + self.chunk_size]

    def stream(
        self,
        body: bytes,
        start_response: Callable[..., Any],
        headers: list[tuple[str, str]],
    ) -> Iterator[bytes]:
        if self.style != "start inside generator":
            start_response("200 OK", headers)
        try:
            if self.style == "raise mid body":
                yield body[: self.chunk_size]
                raise AppFailure("mid body")
            first = True
            for chunk in self.chunks(body):
                if first and self.style == "start inside generator":
                    start_response("200 OK", headers)
                first = False
                yield chunk
            if first and self.style == "start inside generator":
                start_response("200 OK", headers)
        finally:
            self.closed = True

    def expected_body(self, request_body: bytes) -> bytes:
        if self.style == "declared length shorter":
            return request_body[: len(request_body) // 2]
        if self.style == "empty":
            return b""
        return request_body


# --- strategies ---------------------------------------------------------------

token = st.from_regex(rb"[a-z0-9][a-z0-9-]{0,15}", fullmatch=True)
header_value = st.from_regex(rb"[ -~]{0,30}", fullmatch=True)
well_formed_headers = st.lists(
    st.tuples(token, header_value).map(list) | st.tuples(token, header_value),
    max_size=12,
)
well_formed_scope = st.fixed_dictionaries(
    {
        "type": st.just("http"),
        "asgi": st.just({"version": "3.0", "spec_version": "2.3"}),
        "http_version": st.sampled_from(["1.0", "1.1", "2"]),
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        "scheme": st.sampled_from(["http", "https"]),
        "path": st.text(max_size=30).map(lambda text: "/" + text),
        "query_string": st.from_regex(rb"[!-~]{0,30}", fullmatch=True),
        "headers": well_formed_headers,
    },
    optional={
        "root_path": st.sampled_from(["", "/app", "/ünïcode"]),
        "client": st.tuples(st.just("127.0.0.1"), st.integers(1, 65535)),
        "server": st.tuples(st.just("example.test"), st.none() | st.integers(1, 65535)),
        "raw_path": st.binary(max_size=20),
    },
)

junk = st.none() | st.integers() | st.text(max_size=8) | st.binary(max_size=8)
junk_header = st.one_of(
    st.tuples(st.binary(max_size=20), st.binary(max_size=20)),
    st.tuples(st.text(max_size=5), st.text(max_size=5)),
    st.lists(st.binary(max_size=5), max_size=3),
    junk,
)


@st.composite
def malformed_scope(draw: st.DrawFn) -> dict[str, Any]:
    scope = dict(draw(well_formed_scope))
    damage = draw(
        st.lists(
            st.sampled_from(["drop", "junk value", "junk headers", "type", "query"]),
            min_size=1,
            max_size=3,
        )
    )
    for kind in damage:
        key = draw(st.sampled_from(sorted(scope)))
        if kind == "drop":
            scope.pop(key, None)
        elif kind == "junk value":
            scope[key] = draw(junk)
        elif kind == "junk headers":
            scope["headers"] = draw(st.lists(junk_header, max_size=5))
        elif kind == "type":
            scope["type"] = draw(st.sampled_from(["websocket", "lifespan", "HTTP", ""]))
        else:
            scope["query_string"] = draw(st.binary(max_size=20))
    return scope


@dataclass
class Request:
    messages: list[Any]
    #: Whether the messages form one whole, well-formed request.
    well_formed: bool

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages)


@st.composite
def requests(draw: st.DrawFn, damage: bool = True) -> Request:
    bodies = draw(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
    messages: list[Any] = [
        {"type": "http.request", "body": body, "more_body": index < len(bodies) - 1}
        for index, body in enumerate(bodies)
    ]
    if not damage or not draw(st.integers(0, 3)):
        return Request(messages, well_formed=True)
    damaged = list(messages)
    position = draw(st.integers(0, len(damaged) - 1))
    damaged[position] = draw(
        st.one_of(
            st.just({"type": "http.disconnect"}),
            st.fixed_dictionaries({"type": st.text(max_size=12)}),
            st.fixed_dictionaries(
                {"type": st.just("http.request"), "body": junk, "more_body": junk}
            ),
            junk,
        )
    )
    if draw(st.booleans()):
        del damaged[position + 1 :]  # the client stops sending
    return Request(damaged, well_formed=False)


# --- running one exchange -----------------------------------------------------


@dataclass
class Exchange:
    sent: list[Any]
    error: BaseException | None
    disconnect_delivered: bool


def exchange(app: Any, scope: Any, request: Request) -> Exchange:
    """Run one request through ``app``; a hang fails the test."""
    pending = list(request.messages)
    sent: list[Any] = []
    delivered: list[bool] = []

    async def receive() -> Any:
        if pending:
            return pending.pop(0)
        # A real server blocks until the client sends more; it tells the
        # application when the client has gone. So does this one.
        delivered.append(True)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    async def bounded() -> None:
        await asyncio.wait_for(app(scope, receive, send), EXAMPLE_TIMEOUT)

    error: BaseException | None = None
    try:
        asyncio.run(bounded())
    except (TimeoutError, asyncio.TimeoutError):  # one class only from 3.11
        pytest.fail(f"WsgiToAsgi hung for {EXAMPLE_TIMEOUT}s on {scope!r}")
    except Exception as raised:
        error = raised
    return Exchange(sent, error, bool(delivered) or has_disconnect(request))


def has_disconnect(request: Request) -> bool:
    return any(
        isinstance(m, dict) and m.get("type") == "http.disconnect"
        for m in request.messages
    )


def response_of(sent: list[Any], complete: bool = True) -> tuple[int, bytes]:
    """Check ``sent`` is a valid ASGI HTTP response (or, if not ``complete``,
    a valid beginning of one); return its status and body."""
    assert sent, "nothing was sent"
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert isinstance(start["status"], int)
    assert 100 <= start["status"] <= 599
    for name, value in start.get("headers", []):
        assert isinstance(name, bytes)
        assert isinstance(value, bytes)
        assert name == name.lower()
    body = b""
    for index, message in enumerate(bodies):
        assert message["type"] == "http.response.body"
        assert isinstance(message.get("body", b""), bytes)
        body += message.get("body", b"")
        last = not message.get("more_body", False)
        assert not last or index == len(bodies) - 1, "messages after the last body"
    if complete:
        assert bodies, "no response body message"
        assert not bodies[-1].get("more_body", False), "response unfinished"
    return start["status"], body


def expected_environ_headers(scope: dict[str, Any]) -> dict[str, str]:
    grouped: dict[str, list[str]] = {}
    special = {"content-length": "CONTENT_LENGTH", "content-type": "CONTENT_TYPE"}
    for name, value in scope["headers"]:
        text = name.decode("latin1")
        key = special.get(text) or "HTTP_" + text.upper().replace("-", "_")
        grouped.setdefault(key, []).append(value.decode("latin1"))
    return {key: ",".join(values) for key, values in grouped.items()}


# --- the properties -----------------------------------------------------------


@pytest.mark.timeout(120)
@fuzz_settings
@given(
    scope=well_formed_scope,
    request=requests(damage=False),
    style=st.sampled_from(RESPONSE_STYLES),
    chunk_size=st.integers(1, 512),
)
def test_well_formed_request_gets_its_response(
    scope: dict[str, Any], request: Request, style: str, chunk_size: int
) -> None:
    app = EchoApp(style, chunk_size)
    result = exchange(WsgiToAsgi(app), scope, request)

    if style.startswith("raise"):
        assert isinstance(result.error, AppFailure)
        if result.sent:
            response_of(result.sent, complete=False)
        return
    assert result.error is None, repr(result.error)
    status, body = response_of(result.sent)
    assert status == (204 if style == "empty" else 200)
    assert body == app.expected_body(request.body)
    (environ,) = app.environs
    assert environ["REQUEST_METHOD"] == scope["method"]
    assert environ["QUERY_STRING"] == scope["query_string"].decode("ascii")
    for key, value in expected_environ_headers(scope).items():
        assert environ[key] == value
    if style in ("generator", "start inside generator"):
        assert app.closed


@pytest.mark.timeout(120)
@fuzz_settings
@given(
    # Mostly damaged scopes; some intact ones meeting damaged messages.
    scope=st.one_of(malformed_scope(), malformed_scope(), well_formed_scope, junk),
    request=requests(),
    style=st.sampled_from(RESPONSE_STYLES),
)
def test_arbitrary_input_gets_a_response_or_a_clear_error(
    scope: Any, request: Request, style: str
) -> None:
    result = exchange(WsgiToAsgi(EchoApp(style, 64)), scope, request)
    event(
        f"error: {type(result.error).__name__}"
        if result.error
        else f"sent {len(result.sent)}"
    )
    if result.error is not None:
        # A clear error: an ordinary exception that says something.
        assert str(result.error) or isinstance(result.error, AppFailure)
        if result.sent:
            response_of(result.sent, complete=False)
        return
    if not result.sent:
        # Only acceptable when the client went away before the request ended.
        assert result.disconnect_delivered, "no response and no error"
        return
    response_of(result.sent)


# --- floods and huge bodies ---------------------------------------------------

HUGE_CHUNK = 256 * 1024
HUGE_CHUNKS = 256  # 64 MiB in all
MEMORY_LIMIT = 16 * HUGE_CHUNK


def traced_peak(run: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def plain_scope(headers: list[Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": headers,
    }


async def discard(message: Any) -> None:
    pass


@pytest.mark.timeout(60)
def test_huge_request_body_stays_out_of_memory(figures: Any) -> None:
    chunk = b"x" * HUGE_CHUNK
    received: list[int] = []

    def count_input(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        total = 0
        while piece := environ["wsgi.input"].read(65536):
            total += len(piece)
        received.append(total)
        start_response("200 OK", [])
        return [b"done"]

    async def main() -> None:
        remaining = HUGE_CHUNKS

        async def receive() -> dict[str, Any]:
            nonlocal remaining
            remaining -= 1
            return {"type": "http.request", "body": chunk, "more_body": remaining > 0}

        await asyncio.wait_for(
            WsgiToAsgi(count_input)(plain_scope([]), receive, discard), 60
        )

    peak = traced_peak(lambda: asyncio.run(main()))
    assert received == [HUGE_CHUNK * HUGE_CHUNKS]
    figures.record(
        "wsgi: huge request body", body_bytes=received[0], traced_peak_bytes=peak
    )
    assert peak < MEMORY_LIMIT


@pytest.mark.timeout(60)
def test_huge_response_body_is_streamed(figures: Any) -> None:
    chunk = b"y" * HUGE_CHUNK
    sent_bytes: list[int] = []

    def big_response(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Any:
        start_response("200 OK", [])
        return (chunk for _ in range(HUGE_CHUNKS))

    async def count(message: Any) -> None:
        sent_bytes.append(len(message.get("body", b"")))

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        await asyncio.wait_for(
            WsgiToAsgi(big_response)(plain_scope([]), receive, count), 60
        )

    peak = traced_peak(lambda: asyncio.run(main()))
    assert sum(sent_bytes) == HUGE_CHUNK * HUGE_CHUNKS
    figures.record(
        "wsgi: huge response body", body_bytes=sum(sent_bytes), traced_peak_bytes=peak
    )
    assert peak < MEMORY_LIMIT


def traced_exchange(app: Any, headers: list[Any]) -> tuple[Exchange, int]:
    """One bodiless request with ``headers`` through ``WsgiToAsgi(app)``, and
    the traced memory peak while it ran."""
    request = Request([{"type": "http.request"}], well_formed=True)
    results: list[Exchange] = []
    peak = traced_peak(
        lambda: results.append(exchange(WsgiToAsgi(app), plain_scope(headers), request))
    )
    return results[0], peak


FLOOD_HEADERS = 20_000
# Linear, with room: the environ itself needs about 270 bytes a header.
FLOOD_BYTES_PER_HEADER = 512


@pytest.mark.timeout(60)
def test_flood_of_distinct_headers_uses_memory_in_proportion(figures: Any) -> None:
    headers = [(b"x-flood-%d" % i, b"value-%d" % i) for i in range(FLOOD_HEADERS)]
    seen: list[int] = []

    def count_headers(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Any:
        seen.append(sum(1 for key in environ if key.startswith("HTTP_X_FLOOD_")))
        start_response("200 OK", [])
        return [b""]

    result, peak = traced_exchange(count_headers, headers)
    assert result.error is None
    assert seen == [FLOOD_HEADERS]
    figures.record(
        "wsgi: distinct header flood", headers=FLOOD_HEADERS, traced_peak_bytes=peak
    )
    assert peak < FLOOD_HEADERS * FLOOD_BYTES_PER_HEADER


@pytest.mark.timeout(60)
def test_flood_of_one_repeated_header_is_refused_cheaply(figures: Any) -> None:
    headers = [(b"x-repeated", b"again")] * 200_000
    called: list[bool] = []

    def never(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        called.append(True)
        start_response("200 OK", [])
        return [b""]

    result, peak = traced_exchange(never, headers)
    status, _ = response_of(result.sent)
    assert status == 400
    assert called == []
    figures.record(
        "wsgi: repeated header flood", headers=len(headers), traced_peak_bytes=peak
    )
    assert peak < 1024 * 1024
