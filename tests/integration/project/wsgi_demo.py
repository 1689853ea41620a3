"""A plain WSGI application, served through ``asgiref.wsgi.WsgiToAsgi``.

Large bodies are produced and consumed in blocks so that any memory growth the
tests see in the server process belongs to the adapter and the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from asgiref.wsgi import WsgiToAsgi

StartResponse = Callable[..., Any]
BLOCK = 64 * 1024


def pattern_block(index: int) -> bytes:
    """Block ``index`` of the deterministic download; tests rebuild it."""
    seed = hashlib.sha256(b"block-%d" % index).digest()
    return seed * (BLOCK // len(seed))


def pattern_bytes(size: int) -> Iterator[bytes]:
    index = 0
    while size > 0:
        block = pattern_block(index)[:size]
        yield block
        size -= len(block)
        index += 1


class FileBody:
    """Iterates over a file in blocks and closes it when the server closes us."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self._file.read(BLOCK), b"")

    def close(self) -> None:
        self._file.close()


_download_file: str | None = None


def _file_of(size: int) -> str:
    global _download_file
    if _download_file is None or os.path.getsize(_download_file) != size:
        handle, path = tempfile.mkstemp(prefix="wsgi-demo-")
        with os.fdopen(handle, "wb") as out:
            for block in pattern_bytes(size):
                out.write(block)
        _download_file = path
    return _download_file


def _upload(environ: dict[str, Any]) -> bytes:
    digest = hashlib.sha256()
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    received = 0
    while remaining > 0:
        block = stream.read(min(BLOCK, remaining))
        if not block:
            break
        digest.update(block)
        received += len(block)
        remaining -= len(block)
    return json.dumps({"size": received, "sha256": digest.hexdigest()}).encode()


_ENVIRON_KEYS = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_X_DEMO",
    "wsgi.url_scheme",
)


def application(
    environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = {
        key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()
    }
    if path == "/generator":
        size = int(query["size"])
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(size)),
            ],
        )
        return pattern_bytes(size)
    if path == "/file":
        size = int(query["size"])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return FileBody(_file_of(size))
    if path == "/upload":
        body = _upload(environ)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/overlong":
        # The declared length wins: the server must not send the excess.
        start_response("200 OK", [("Content-Length", "10")])
        return [b"0123456789", b"excess"]
    if path == "/cookies":
        start_response(
            "200 OK", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Demo", "yes")]
        )
        return [b"two cookies\n"]
    if path.startswith("/environ"):
        seen = {key: environ.get(key) for key in _ENVIRON_KEYS}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(seen, sort_keys=True).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


asgi_application = WsgiToAsgi(application)
