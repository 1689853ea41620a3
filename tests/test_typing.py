"""Shape of ``asgiref.typing``: the ASGI TypedDicts, unions and callables.

The functions under "Typed usage" are never called for their result: ty
checks this file, so they pin down that realistic code type-checks against
these definitions.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, Union, get_args, get_origin

import pytest

if sys.version_info >= (3, 11):
    from typing import get_type_hints, is_typeddict
else:  # 3.10's own do not understand typing_extensions' TypedDict
    from typing_extensions import get_type_hints, is_typeddict

import asgiref.typing as asgi_typing
from asgiref.typing import (
    ASGI2Application,
    ASGI2Protocol,
    ASGI3Application,
    ASGIApplication,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPDisconnectEvent,
    HTTPRequestEvent,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    LifespanScope,
    Scope,
    WebSocketScope,
    WWWScope,
)

# name: (value of the "type" key, required keys besides "type", optional keys)
EVENTS: dict[str, tuple[str, set[str], set[str]]] = {
    "HTTPRequestEvent": ("http.request", {"body", "more_body"}, set()),
    "HTTPResponseDebugEvent": ("http.response.debug", {"info"}, set()),
    "HTTPResponseStartEvent": (
        "http.response.start",
        {"status", "headers", "trailers"},
        set(),
    ),
    "HTTPResponseBodyEvent": ("http.response.body", {"body", "more_body"}, set()),
    "HTTPResponseTrailersEvent": (
        "http.response.trailers",
        {"headers", "more_trailers"},
        set(),
    ),
    "HTTPResponsePathsendEvent": ("http.response.pathsend", {"path"}, set()),
    "HTTPServerPushEvent": ("http.response.push", {"path", "headers"}, set()),
    "HTTPDisconnectEvent": ("http.disconnect", set(), set()),
    "WebSocketConnectEvent": ("websocket.connect", set(), set()),
    "WebSocketAcceptEvent": ("websocket.accept", {"subprotocol", "headers"}, set()),
    "WebSocketReceiveEvent": ("websocket.receive", {"bytes", "text"}, set()),
    "WebSocketSendEvent": ("websocket.send", {"bytes", "text"}, set()),
    "WebSocketResponseStartEvent": (
        "websocket.http.response.start",
        {"status", "headers"},
        set(),
    ),
    "WebSocketResponseBodyEvent": (
        "websocket.http.response.body",
        {"body", "more_body"},
        set(),
    ),
    "WebSocketDisconnectEvent": ("websocket.disconnect", {"code", "reason"}, set()),
    "WebSocketCloseEvent": ("websocket.close", {"code", "reason"}, set()),
    "LifespanStartupEvent": ("lifespan.startup", set(), set()),
    "LifespanShutdownEvent": ("lifespan.shutdown", set(), set()),
    "LifespanStartupCompleteEvent": ("lifespan.startup.complete", set(), set()),
    "LifespanStartupFailedEvent": ("lifespan.startup.failed", {"message"}, set()),
    "LifespanShutdownCompleteEvent": ("lifespan.shutdown.complete", set(), set()),
    "LifespanShutdownFailedEvent": ("lifespan.shutdown.failed", {"message"}, set()),
}

CONNECTION_KEYS = {
    "asgi",
    "http_version",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
    "extensions",
}
SCOPES: dict[str, tuple[str, set[str], set[str]]] = {
    "HTTPScope": ("http", CONNECTION_KEYS | {"method"}, {"state"}),
    "WebSocketScope": ("websocket", CONNECTION_KEYS | {"subprotocols"}, {"state"}),
    "LifespanScope": ("lifespan", {"asgi"}, {"state"}),
}

EXPORTED = {
    *(name for name in EVENTS if name != "HTTPResponseDebugEvent"),
    *SCOPES,
    "ASGIVersions",
    "WWWScope",
    "Scope",
    "ASGIReceiveEvent",
    "ASGISendEvent",
    "ASGIReceiveCallable",
    "ASGISendCallable",
    "ASGI2Protocol",
    "ASGI2Application",
    "ASGI3Application",
    "ASGIApplication",
}


def test_all_lists_the_public_names() -> None:
    assert set(asgi_typing.__all__) == EXPORTED
    assert len(asgi_typing.__all__) == len(EXPORTED)
    for name in EXPORTED:
        assert getattr(asgi_typing, name) is not None


@pytest.mark.parametrize("name", sorted(EVENTS.keys() | SCOPES.keys()))
def test_typed_dict_keys(name: str) -> None:
    type_value, required, optional = {**EVENTS, **SCOPES}[name]
    typed_dict = getattr(asgi_typing, name)
    assert is_typeddict(typed_dict)
    assert typed_dict.__required_keys__ == frozenset(required | {"type"})
    assert typed_dict.__optional_keys__ == frozenset(optional)
    type_hint = get_type_hints(typed_dict)["type"]
    assert get_origin(type_hint) is Literal
    assert get_args(type_hint) == (type_value,)


def test_versions() -> None:
    hints = get_type_hints(asgi_typing.ASGIVersions)
    assert hints == {
        "spec_version": str,
        "version": Literal["2.0"] | Literal["3.0"],
    }


def test_http_scope_field_types() -> None:
    hints = get_type_hints(HTTPScope)
    assert hints["asgi"] is asgi_typing.ASGIVersions
    assert hints["method"] is str
    assert hints["raw_path"] is bytes
    assert hints["query_string"] is bytes
    assert hints["headers"] == Iterable[tuple[bytes, bytes]]
    assert hints["client"] == tuple[str, int] | None
    # A unix socket server has no port.
    assert hints["server"] == tuple[str, int | None] | None
    assert hints["state"] == dict[str, Any]
    assert hints["extensions"] == dict[str, dict[object, object]] | None


def test_event_field_types() -> None:
    assert get_type_hints(HTTPResponseStartEvent)["status"] is int
    assert get_type_hints(HTTPResponseBodyEvent)["body"] is bytes
    receive = get_type_hints(asgi_typing.WebSocketReceiveEvent)
    assert receive["bytes"] == bytes | None
    assert receive["text"] == str | None
    assert get_type_hints(asgi_typing.WebSocketCloseEvent)["code"] is int


def test_scope_unions() -> None:
    assert get_origin(WWWScope) is Union
    assert get_args(WWWScope) == (HTTPScope, WebSocketScope)
    assert get_args(Scope) == (HTTPScope, WebSocketScope, LifespanScope)


def test_event_unions() -> None:
    assert get_args(ASGIReceiveEvent) == tuple(
        getattr(asgi_typing, name)
        for name in (
            "HTTPRequestEvent",
            "HTTPDisconnectEvent",
            "WebSocketConnectEvent",
            "WebSocketReceiveEvent",
            "WebSocketDisconnectEvent",
            "LifespanStartupEvent",
            "LifespanShutdownEvent",
        )
    )
    assert get_args(ASGISendEvent) == tuple(
        getattr(asgi_typing, name)
        for name in (
            "HTTPResponseStartEvent",
            "HTTPResponseBodyEvent",
            "HTTPResponseTrailersEvent",
            "HTTPServerPushEvent",
            "HTTPDisconnectEvent",
            "WebSocketAcceptEvent",
            "WebSocketSendEvent",
            "WebSocketResponseStartEvent",
            "WebSocketResponseBodyEvent",
            "WebSocketCloseEvent",
            "LifespanStartupCompleteEvent",
            "LifespanStartupFailedEvent",
            "LifespanShutdownCompleteEvent",
            "LifespanShutdownFailedEvent",
        )
    )


def test_callable_aliases() -> None:
    assert ASGIReceiveCallable == Callable[[], Awaitable[ASGIReceiveEvent]]
    assert ASGISendCallable == Callable[[ASGISendEvent], Awaitable[None]]
    assert (
        ASGI3Application
        == Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
    )
    assert ASGI2Application == type[ASGI2Protocol]
    assert get_args(ASGIApplication) == (ASGI2Application, ASGI3Application)


def test_asgi2_protocol_is_a_protocol() -> None:
    assert getattr(ASGI2Protocol, "_is_protocol", False) is True
    assert inspect.iscoroutinefunction(ASGI2Protocol.__call__)
    assert list(inspect.signature(ASGI2Protocol.__call__).parameters) == [
        "self",
        "receive",
        "send",
    ]


# Typed usage


async def typed_http_application(
    scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    message = await receive()
    if message["type"] == "http.request":
        body: bytes = message["body"]
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
            "trailers": False,
        }
        await send(start)
        reply: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": body,
            "more_body": False,
        }
        await send(reply)


class TypedLegacyApplication:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        disconnect: HTTPDisconnectEvent = {"type": "http.disconnect"}
        await send(disconnect)


async def typed_any_application(
    scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    if scope["type"] == "http":
        http_scope: HTTPScope = scope
        await typed_http_application(http_scope, receive, send)


ASGI3_EXAMPLE: ASGI3Application = typed_any_application
ASGI2_EXAMPLE: ASGI2Application = TypedLegacyApplication
APPLICATIONS: list[ASGIApplication] = [ASGI3_EXAMPLE, ASGI2_EXAMPLE]
HTTP_SCOPE_EXAMPLE: HTTPScope = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "https",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [],
    "client": ("127.0.0.1", 5000),
    "server": ("/run/app.sock", None),
    "extensions": None,
}
REQUEST_EXAMPLE: HTTPRequestEvent = {
    "type": "http.request",
    "body": b"",
    "more_body": False,
}


async def test_typed_usage_runs() -> None:
    received: list[ASGIReceiveEvent] = [REQUEST_EXAMPLE]
    sent: list[ASGISendEvent] = []

    async def receive() -> ASGIReceiveEvent:
        return received.pop()

    async def send(message: ASGISendEvent) -> None:
        sent.append(message)

    await ASGI3_EXAMPLE(HTTP_SCOPE_EXAMPLE, receive, send)
    assert [message["type"] for message in sent] == [
        "http.response.start",
        "http.response.body",
    ]
    await ASGI2_EXAMPLE(HTTP_SCOPE_EXAMPLE)(receive, send)
    assert sent[-1] == {"type": "http.disconnect"}
    assert len(APPLICATIONS) == 2
