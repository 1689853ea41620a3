"""A real Redis behind Channels' Redis layer and a plain ``redis.asyncio``
client, driven from sync code through ``async_to_sync``: the README's
``notify_all`` job, with and without ``AsyncSingleThreadContext``, on asgire
and on upstream asgiref 3.13.0.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from harness import (
    PROJECT,
    RedisServer,
    assert_clean_shutdown,
    unpack_upstream_asgiref,
)
from redis_jobs import notify_all
from websockets.asyncio.client import connect

from asgiref.sync import AsyncSingleThreadContext, async_to_sync

pytestmark = pytest.mark.integration

CALLS = 12


def _open_loops() -> list[asyncio.AbstractEventLoop]:
    gc.collect()
    # By type: isinstance() would make lazy objects (Django's settings) load.
    return [
        obj
        for obj in gc.get_objects()
        if issubclass(type(obj), asyncio.AbstractEventLoop) and not obj.is_closed()
    ]


async def test_notify_all_reaches_the_consumers_of_a_server(
    redis_server: RedisServer, start: Any
) -> None:
    """The job runs in a worker thread with no loop (as a Celery task does);
    the consumers run in a Uvicorn server; Redis is between them."""
    server = start(
        "uvicorn", "demo_site.asgi:application", env={"DEMO_REDIS": redis_server.url}
    )
    users = [1, 2, 3, 4, 5]
    rounds = 4
    sockets = [
        await connect(f"{server.ws_url}/ws/notify/{user}/", open_timeout=15)
        for user in users
    ]
    try:
        layer = RedisChannelLayer(hosts=[redis_server.url])
        await asyncio.to_thread(notify_all, layer, users * rounds)
        for user, ws in zip(users, sockets, strict=True):
            received = [await asyncio.wait_for(ws.recv(), 15) for _ in range(rounds)]
            assert received == [f"hello {user}"] * rounds
            with pytest.raises(TimeoutError):  # and nothing more
                await asyncio.wait_for(ws.recv(), 0.2)
    finally:
        for ws in sockets:
            await ws.close()
    assert_clean_shutdown(server)


def _run_jobs(redis_server: RedisServer, pythonpath: list[Path]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "redis_jobs.py"),
            str(redis_server.port),
            str(CALLS),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("provider", ["asgire", "upstream"])
def test_the_job_with_and_without_one_loop(
    redis_server: RedisServer, provider: str, tmp_path: Path
) -> None:
    """What a user gets from each, told by Redis itself."""
    path = [PROJECT]
    if provider == "upstream":
        path.insert(0, unpack_upstream_asgiref(tmp_path / "upstream"))
    results = _run_jobs(redis_server, path)
    assert (provider == "upstream") == results.pop("asgiref").startswith(str(tmp_path))
    delivered = [f"hello {n}" for n in range(CALLS)]

    # Channels' Redis layer keeps a connection pool per event loop and closes
    # it when that loop closes: every call works, but each one connects anew.
    assert results["layer"] == {
        "errors": [None] * CALLS,
        "delivered": delivered,
        "connections_opened": CALLS,
        "connections_left_open": 0,
    }
    # A client made once and used from a fresh loop per call: the second call
    # reuses a connection bound to the first call's closed loop and fails,
    # after its command has reached Redis; the failure drops the connection,
    # so the next call connects again and works. And so on, alternating.
    failure = "RuntimeError: Event loop is closed"
    alternating = [None, failure] * (CALLS // 2)
    plain_client = results["client"]
    assert plain_client["errors"] == alternating
    assert plain_client["increments_done"] == CALLS  # failed calls ran too
    assert plain_client["connections_opened"] == CALLS // 2

    one_loop_layer, one_loop_client = (
        results["layer-one-loop"],
        results["client-one-loop"],
    )
    if provider == "asgire":
        # One loop for the block: one connection for the whole job, closed
        # when the block exits.
        assert one_loop_layer == {
            "errors": [None] * CALLS,
            "delivered": delivered,
            "connections_opened": 1,
            "connections_left_open": 0,
        }
        assert one_loop_client == {
            "errors": [None] * CALLS,
            "close": None,
            "increments_done": CALLS,
            "connections_opened": 1,
            "connections_left_open": 0,
        }
    else:
        # Upstream's context keeps one thread, but still a fresh loop per call.
        assert one_loop_layer == results["layer"]
        assert one_loop_client["errors"] == alternating
        assert one_loop_client["connections_opened"] == CALLS // 2


def _client_ids(watch: redis.Redis) -> set[str]:
    return {client["id"] for client in watch.client_list()}


def test_one_loop_reuses_the_layers_pool_and_closes_it(
    redis_server: RedisServer,
) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url])
    watch = redis.Redis(host="127.0.0.1", port=redis_server.port)

    async def send_and_identify() -> tuple[int, int]:
        await layer.group_send("user-1", {"type": "notify", "text": "hello"})
        connection = layer.connection(0)
        return id(connection.connection_pool), await connection.client_id()

    with AsyncSingleThreadContext():
        seen = {async_to_sync(send_and_identify)() for _ in range(CALLS)}
        assert len(seen) == 1, seen  # one pool, one server-side connection
        ((_, client_id),) = seen
        assert str(client_id) in _client_ids(watch)
    # The block's loop closed, and Channels' pool for that loop with it.
    assert layer._layers == {}
    assert str(client_id) not in _client_ids(watch)

    # Without the block: a fresh pool and connection each time.
    fresh = {async_to_sync(send_and_identify)() for _ in range(3)}
    assert len({client for _, client in fresh}) == 3
    watch.close()


def test_redis_going_away_mid_job_raises_and_leaves_nothing_behind(
    redis_server: RedisServer,
) -> None:
    threads_before = set(threading.enumerate())
    assert _open_loops() == []
    layer = RedisChannelLayer(hosts=[redis_server.url])
    sent = 0

    def job() -> None:
        nonlocal sent
        with AsyncSingleThreadContext():
            for user in range(CALLS):
                if user == CALLS // 2:
                    redis_server.kill()
                async_to_sync(layer.group_send)(
                    f"user-{user}", {"type": "notify", "text": "hello"}
                )
                sent += 1

    # redis-py's own error, raised from the call that met the dead server.
    with pytest.raises(redis.ConnectionError, match="Connection closed by server"):
        job()
    assert sent == CALLS // 2
    assert set(threading.enumerate()) == threads_before
    assert _open_loops() == []
    assert layer._layers == {}

    # The next job finds nobody listening, and is told where it looked.
    def next_job() -> None:
        with AsyncSingleThreadContext():
            async_to_sync(layer.group_send)("user-0", {"type": "notify", "text": "hi"})

    with pytest.raises(redis.ConnectionError, match=f"127.0.0.1:{redis_server.port}"):
        next_job()
    assert set(threading.enumerate()) == threads_before
    assert _open_loops() == []
    assert layer._layers == {}
