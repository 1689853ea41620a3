"""Serve a WSGI application over ASGI."""

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from tempfile import SpooledTemporaryFile
from types import TracebackType
from typing import Any

from asgiref.sync import AsyncToSync, sync_to_async

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = [
    "AsyncToSync",
    "SpooledTemporaryFile",
    "WsgiToAsgi",
    "WsgiToAsgiInstance",
    "defaultdict",
    "sync_to_async",
    "sys",
]

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
_WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Request bodies up to this size stay in memory; larger ones spill to disk.
_BODY_MEMORY_LIMIT = 65536


class WsgiToAsgi:
    """An ASGI application that serves ``wsgi_application`` (PEP 3333).

    The WSGI application runs in asgiref's thread-sensitive worker thread,
    once the whole request body has arrived. A request repeating one header
    more than ``duplicate_header_limit`` times (a falsy limit means no limit)
    is answered with 400 Bad Request without calling the application.
    """

    def __init__(
        self,
        wsgi_application: _WSGIApplication,
        duplicate_header_limit: int | None = 100,
    ) -> None:
        self.wsgi_application = wsgi_application
        self.duplicate_header_limit = duplicate_header_limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        instance = WsgiToAsgiInstance(
            self.wsgi_application, self.duplicate_header_limit
        )
        await instance(scope, receive, send)


class WsgiToAsgiInstance:
    """The handling of a single request by a `WsgiToAsgi` application."""

    def __init__(
        self,
        wsgi_application: _WSGIApplication,
        duplicate_header_limit: int | None = 100,
    ) -> None:
        self.wsgi_application = wsgi_application
        self.duplicate_header_limit = duplicate_header_limit
        self.response_started = False
        self.response_content_length: int | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("WSGI wrapper received a non-HTTP scope")
        self.scope = scope
        with SpooledTemporaryFile(max_size=_BODY_MEMORY_LIMIT) as body:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    if message["type"] == "http.disconnect":
                        # The client left before sending its whole request:
                        # there is nobody to run the application for.
                        return
                    raise ValueError("WSGI wrapper received a non-HTTP-request message")
                body.write(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body.seek(0)
            self.sync_send = AsyncToSync(send)
            await self.run_wsgi_app(body)

    def build_environ(self, scope: Any, body: Any) -> dict[str, Any]:
        """The PEP 3333 environ for an HTTP ``scope``, with ``body`` as ``wsgi.input``.

        Raises ``ValueError`` when a header is repeated more often than
        ``duplicate_header_limit`` allows.
        """
        # WSGI strings carry bytes as latin-1 code points; ASGI paths are
        # already-decoded UTF-8, so they are turned back into those bytes.
        script_name = scope.get("root_path", "").encode("utf8").decode("latin1")
        path_info = scope["path"].encode("utf8").decode("latin1")
        if path_info.startswith(script_name):
            path_info = path_info[len(script_name) :]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": scope["query_string"].decode("ascii"),
            "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        # Required by WSGI but optional in ASGI. A unix socket server has no
        # port (None), which WSGI spells "0".
        server = scope.get("server")
        if server is None:
            environ["SERVER_NAME"] = "localhost"
            environ["SERVER_PORT"] = "80"
        else:
            environ["SERVER_NAME"] = server[0]
            environ["SERVER_PORT"] = "0" if server[1] is None else str(server[1])
        client = scope.get("client")
        if client is not None:
            environ["REMOTE_ADDR"] = client[0]

        limit = self.duplicate_header_limit
        values_by_key: dict[str, list[str]] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin1")
            if name == "content-length":
                key = "CONTENT_LENGTH"
            elif name == "content-type":
                key = "CONTENT_TYPE"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            values = values_by_key.setdefault(key, [])
            if limit and len(values) >= limit:
                raise ValueError(
                    f"Too many duplicate headers: {key} exceeds limit of {limit}"
                )
            values.append(raw_value.decode("latin1"))
        for key, values in values_by_key.items():
            environ[key] = ",".join(values)
        return environ

    def start_response(
        self,
        status: str,
        response_headers: Iterable[tuple[str, str]],
        exc_info: _ExcInfo | None = None,
    ) -> None:
        """The WSGI ``start_response`` callable.

        It may be called again only with ``exc_info``: before the response has
        started, that replaces the status and headers; after, it re-raises the
        exception. A malformed status line, a header that is not ASCII or a
        Content-Length that is not a non-negative integer raises ``ValueError``
        naming the culprit.
        """
        if exc_info is None:
            if hasattr(self, "response_start"):
                raise ValueError(
                    "You cannot call start_response a second time without exc_info"
                )
        elif self.response_started:
            # Too late to change the response: all we can do is abort it.
            raise exc_info[1].with_traceback(exc_info[2])
        status_code = _parse_status(status)
        headers: list[tuple[bytes, bytes]] = []
        content_length = None
        for name, value in response_headers:
            try:
                header = (name.lower().encode("ascii"), value.encode("ascii"))
            except UnicodeEncodeError as error:
                raise ValueError(
                    f"WSGI response header is not ASCII: {name!r}: {value!r}"
                ) from error
            if header[0] == b"content-length":
                content_length = _parse_content_length(value)
            headers.append(header)
        self.response_content_length = content_length
        self.response_start = {
            "type": "http.response.start",
            "status": status_code,
            "headers": headers,
        }

    @sync_to_async
    def run_wsgi_app(self, body: Any) -> None:
        """Run the WSGI application and send its response, from a worker thread.

        ``start_response`` is thereby called in the thread that runs the
        application, as WSGI applications expect.
        """
        try:
            environ = self.build_environ(self.scope, body)
        except ValueError:
            # Fresh messages each time: servers and middleware may mutate them.
            self.sync_send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            self.sync_send(
                {
                    "type": "http.response.body",
                    "body": b"Bad Request: Too many duplicate headers",
                }
            )
            return
        response = self.wsgi_application(environ, self.start_response)
        try:
            self._send_response(response)
        finally:
            # PEP 3333: whether the response ended, failed or was cut short.
            close = getattr(response, "close", None)
            if close is not None:
                close()

    def _send_response(self, response: Iterable[bytes]) -> None:
        sync_send = self.sync_send
        bytes_sent = 0
        for chunk in response:
            if not self.response_started:
                self._send_start()
            content_length = self.response_content_length
            if content_length is not None and len(chunk) > content_length - bytes_sent:
                # Never send more than the application declared.
                chunk = chunk[: content_length - bytes_sent]
            sync_send({"type": "http.response.body", "body": chunk, "more_body": True})
            bytes_sent += len(chunk)
            if bytes_sent == content_length:
                break  # everything declared is sent: stop asking for more
        if not self.response_started:
            self._send_start()
        sync_send({"type": "http.response.body"})

    def _send_start(self) -> None:
        try:
            start = self.response_start
        except AttributeError:
            raise RuntimeError(
                "The WSGI application did not call start_response before its response"
            ) from None
        self.response_started = True
        self.sync_send(start)


def _parse_status(status: str) -> int:
    # PEP 3333: a three-digit code, a space, then the reason phrase.
    code = status[:3]
    if status[3:4] != " " or not (code.isascii() and code.isdigit()):
        raise ValueError(
            f"WSGI status line is malformed: {status!r}; expected a 3-digit code, "
            "a space and a reason phrase, such as '200 OK'"
        )
    return int(code)


def _parse_content_length(value: str) -> int:
    try:
        length = int(value)
    except ValueError:
        length = -1
    if length < 0:
        raise ValueError(
            f"WSGI response Content-Length is not a non-negative integer: {value!r}"
        )
    return length
