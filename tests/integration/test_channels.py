"""Channels consumers over real websockets and through WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import httpx
import pytest
from harness import Server
from websockets.asyncio.client import ClientConnection, connect

pytestmark = pytest.mark.integration

_tokens = itertools.count()


async def _receive(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout=15)


async def _login(server: Server) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await client.post(
            "/auth/login/", data={"username": "alice", "password": "wonderland"}
        )
        assert response.content == b"logged in as alice\n"
        return client.cookies["sessionid"]


async def test_json_consumer_echo_and_write(django_server: Server) -> None:
    note = f"{django_server.kind}-ws-json-{next(_tokens)}"
    async with connect(f"{django_server.ws_url}/ws/json/", open_timeout=15) as ws:
        await ws.send(json.dumps({"hello": ["world", 1]}))
        assert await _receive(ws) == (
            '{"echo": {"hello": ["world", 1]}, "user": "anonymous", "where": "thread"}'
        )
        await ws.send(json.dumps({"save": note}))
        assert await _receive(ws) == f'{{"saved": "{note}", "where": "thread"}}'
    assert django_server.rows(
        "SELECT via FROM demo_app_note WHERE token = ?", note
    ) == [("ws-json",)]


async def test_async_consumer_echo_bytes_and_write(django_server: Server) -> None:
    note = f"{django_server.kind}-ws-async-{next(_tokens)}"
    async with connect(f"{django_server.ws_url}/ws/async/", open_timeout=15) as ws:
        await ws.send("ping")
        assert await _receive(ws) == "echo:ping:anonymous:loop"
        await ws.send(b"\x00\x01\x02binary")
        assert await _receive(ws) == b"yranib\x02\x01\x00"
        await ws.send(f"save:{note}")
        assert await _receive(ws) == f"saved:{note}"
    assert django_server.rows(
        "SELECT via FROM demo_app_note WHERE token = ?", note
    ) == [("ws-async",)]


async def test_consumers_see_the_logged_in_user(django_server: Server) -> None:
    cookie = {"Cookie": f"sessionid={await _login(django_server)}"}
    url = django_server.ws_url
    async with (
        connect(
            f"{url}/ws/json/", additional_headers=cookie, open_timeout=15
        ) as sync_ws,
        connect(
            f"{url}/ws/async/", additional_headers=cookie, open_timeout=15
        ) as async_ws,
    ):
        await sync_ws.send('"who"')
        assert (
            await _receive(sync_ws)
            == '{"echo": "who", "user": "alice", "where": "thread"}'
        )
        await async_ws.send("who")
        assert await _receive(async_ws) == "echo:who:alice:loop"


async def test_group_send_from_a_sync_view_reaches_both_consumers(
    django_server: Server,
) -> None:
    text = f"news-{next(_tokens)}"
    url = django_server.ws_url
    async with (
        connect(f"{url}/ws/json/", open_timeout=15) as sync_ws,
        connect(f"{url}/ws/async/", open_timeout=15) as async_ws,
        httpx.AsyncClient(base_url=django_server.url, timeout=30) as client,
    ):
        response = await client.post("/broadcast/", data={"text": text})
        assert response.content == b"sent\n"
        assert await _receive(sync_ws) == f'{{"broadcast": "{text}"}}'
        assert await _receive(async_ws) == f"broadcast:{text}"


async def test_communicator_drives_both_consumers(django_in_process: Path) -> None:
    import sqlite3

    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator
    from demo_site.asgi import application

    note = f"communicator-{next(_tokens)}"
    json_side = WebsocketCommunicator(application, "/ws/json/")
    async_side = WebsocketCommunicator(application, "/ws/async/")
    try:
        assert (await json_side.connect(timeout=15))[0]
        assert (await async_side.connect(timeout=15))[0]

        await json_side.send_json_to({"n": 1})
        assert await json_side.receive_json_from(timeout=15) == {
            "echo": {"n": 1},
            "user": "anonymous",
            "where": "thread",
        }
        await async_side.send_to(text_data="hi")
        assert await async_side.receive_from(timeout=15) == "echo:hi:anonymous:loop"

        await json_side.send_json_to({"save": f"{note}-json"})
        assert await json_side.receive_json_from(timeout=15) == {
            "saved": f"{note}-json",
            "where": "thread",
        }
        await async_side.send_to(text_data=f"save:{note}-async")
        assert await async_side.receive_from(timeout=15) == f"saved:{note}-async"

        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send("broadcast", {"type": "broadcast.message", "text": note})
        assert await json_side.receive_json_from(timeout=15) == {"broadcast": note}
        assert await async_side.receive_from(timeout=15) == f"broadcast:{note}"
        assert await json_side.receive_nothing(timeout=0.2)
    finally:
        await json_side.disconnect(timeout=15)
        await async_side.disconnect(timeout=15)

    with sqlite3.connect(django_in_process) as db:
        rows = db.execute(
            "SELECT token, via FROM demo_app_note WHERE token LIKE ? ORDER BY token",
            (f"{note}-%",),
        ).fetchall()
    assert rows == [(f"{note}-async", "ws-async"), (f"{note}-json", "ws-json")]
